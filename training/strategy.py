"""`tf.distribute` strategies by name: `default`, `mirrored`, `multi_worker` (nothing home-made).

- `default`: TF's default strategy (one device; the first GPU if there is one).
- `mirrored`: `tf.distribute.MirroredStrategy` over all local GPUs (or the given devices; on a
  machine without GPUs, the CPU).
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy` configured by the `TF_CONFIG`
  environment variable (cluster spec + this process's task), as in TensorFlow's docs:

      TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                  "task": {"type": "worker", "index": 0}}'

  Create it first thing in the process (before other TF work), as TensorFlow requires.

Under every strategy the batch size a user sets is the *global* batch: Keras splits each batch
across the replicas, and (multi-worker) shards the input pipeline per worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf

from indep_seg.distribute import global_batch_draw, replica_position  # noqa: F401  (re-exported)

__all__ = [
    "STRATEGIES",
    "make_strategy",
    "parse_tf_config",
    "is_chief",
    "task_info",
    "worker_dir",
    "is_multi_worker",
    "global_batch_draw",
    "replica_position",
]

STRATEGIES = ("default", "mirrored", "multi_worker")


def parse_tf_config(text: str | None = None) -> dict:
    """The parsed `TF_CONFIG` (env var when `text` is None), validated; ValueError naming the
    problem."""
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "TF_CONFIG: --strategy multi_worker needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG: expected JSON, got {text[:80]!r} ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict) or not cfg["cluster"]:
        raise ValueError(
            "TF_CONFIG: expected a 'cluster' mapping of job name -> list of host:port, got "
            f"{text[:120]!r}"
        )
    for job, hosts in cfg["cluster"].items():
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(h, str) and ":" in h for h in hosts)
        ):
            raise ValueError(
                f"TF_CONFIG: cluster.{job}: expected a non-empty list of 'host:port', got {hosts!r}"
            )
    task = cfg.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG: expected 'task': {{'type': ..., 'index': ...}}, got {task!r}")
    if task["type"] not in cfg["cluster"]:
        raise ValueError(
            f"TF_CONFIG: task.type {task['type']!r} is not a job of the cluster "
            f"({', '.join(cfg['cluster'])})"
        )
    if not isinstance(task["index"], int) or not 0 <= task["index"] < len(
        cfg["cluster"][task["type"]]
    ):
        raise ValueError(
            f"TF_CONFIG: task.index: expected 0..{len(cfg['cluster'][task['type']]) - 1}, "
            f"got {task['index']!r}"
        )
    return cfg


def make_strategy(name: str = "default", devices=None) -> tf.distribute.Strategy:
    """The strategy called `name` (one of STRATEGIES). `devices` only for `mirrored`."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None:
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in gpus] or None
        return tf.distribute.MirroredStrategy(devices=devices)
    parse_tf_config()
    communication = tf.distribute.experimental.CommunicationImplementation.AUTO
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=communication
        )
    )


def is_multi_worker(strategy) -> bool:
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )  # noqa: SLF001 (public API has no equivalent)


def task_info(strategy) -> tuple[str | None, int | None]:
    """(task_type, task_id) of this process; (None, None) outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker(strategy):
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy) -> bool:
    """True on the process that writes logs, PNGs and the kept checkpoints: the only process
    outside multi-worker training; else the `chief` task, or worker 0 when the cluster has no
    chief."""
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in spec


def worker_dir(model_dir, strategy) -> Path:
    """Where this process writes its checkpoints: `model_dir` on the chief; a private scratch folder
    `model_dir/.workers/<type>-<id>` on the other workers (TensorFlow's multi-worker pattern: every
    worker takes part in saving, only the chief's copy is kept)."""
    model_dir = Path(model_dir)
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task_info(strategy)
    return model_dir / ".workers" / f"{task_type}-{task_id}"
