"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (TF_CONFIG) train the toy
preset through `indep-seg train`, write one checkpoint, and end with the weights one device
computes for the same global batch. Processes are bounded in time and always cleaned up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest
import yaml
from _checkpoints import assert_same_checkpoints

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def _start_workers(tmp_path, run, args, experiment="toy"):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
        )
        log = open(tmp_path / f"worker{index}.log", "w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "indep_seg",
                    "train",
                    "--experiment",
                    experiment,
                    "--model-dir",
                    str(run),
                    "--strategy",
                    "multi_worker",
                    *args,
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs, logs


def _wait_workers(tmp_path, procs, logs, timeout_s=TIMEOUT_S):
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.5)
        codes = [p.poll() for p in procs]
    finally:
        _kill(procs)
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], (
        f"worker exit codes {codes} (None = still running after {timeout_s} s):\n"
        + "\n-----\n".join(o[-4000:] for o in outputs)
    )
    return [json.loads([ln for ln in o.splitlines() if ln.startswith("{")][-1]) for o in outputs]


@pytest.mark.slow
def test_two_workers_train_and_checkpoint(tmp_path):
    steps = 4
    run = tmp_path / "run"
    procs, logs = _start_workers(
        tmp_path,
        run,
        [
            "--steps",
            str(steps),
            "--seed",
            "5",
            "--override",
            f"checkpoint_every={steps}",
            "log_every=2",
            "image_every=0",
        ],
    )
    try:
        # meanwhile, the single-device reference with the same seed and global batch, in process
        from indep_seg.training.context import TrainContext
        from indep_seg.training.experiments.toy import ToyConfig, train_toy

        keras.utils.set_random_seed(5)
        ref = train_toy(
            ToyConfig(checkpoint_every=steps, log_every=2, image_every=0),
            TrainContext(model_dir=tmp_path / "ref", steps=steps, seed=5, extra={"verbose": False}),
        )
        assert ref["step"] == steps
    except BaseException:
        _kill(procs)
        raise
    results = _wait_workers(tmp_path, procs, logs)

    # one checkpoint, by the chief (worker 0); the other worker's scratch copy is gone
    state = yaml.safe_load((run / "config.yaml").read_text())
    assert state["run"]["strategy"] == "multi_worker" and state["run"]["replicas"] == 2
    import tensorflow as tf

    ckpts = tf.train.get_checkpoint_state(str(run / "checkpoints")).all_model_checkpoint_paths
    assert [Path(p).name for p in ckpts] == [f"ckpt-{steps}"]
    assert not (run / ".workers").exists()
    assert all(r["step"] == steps for r in results)
    assert results[0]["d_loss"] == pytest.approx(
        results[1]["d_loss"]
    )  # losses are reduced over workers
    assert "2 replica(s)" in (run / "log.txt").read_text()
    # data sharded per worker + global-batch random draws: the same training as one device
    assert_same_checkpoints(tmp_path / "ref", run, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_workers_agree_on_the_time_budget(tmp_path):
    """Each worker's clock differs; the stop step is agreed on (an all-reduce every log_every
    steps), so both stop at the same step and take part in the same final save (no hang)."""
    run = tmp_path / "run"
    procs, logs = _start_workers(
        tmp_path,
        run,
        [
            "--steps",
            "1000000",
            "--budget-minutes",
            "0.05",
            "--override",
            "checkpoint_every=100000",
            "log_every=5",
            "image_every=0",
        ],
    )
    results = _wait_workers(tmp_path, procs, logs)
    assert all(r["stopped_by_budget"] for r in results)
    assert results[0]["step"] == results[1]["step"] and results[0]["step"] % 5 == 0
    import tensorflow as tf

    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith(
        f"ckpt-{results[0]['step']}"
    )
