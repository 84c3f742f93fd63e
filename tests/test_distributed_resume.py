"""Crash safety: a training subprocess killed with SIGKILL resumes from its last checkpoint.

- killed mid-run, restarted on the same directory: it continues at the last checkpoint's step (at
  most one checkpoint interval lost) and its next steps match an uninterrupted run;
- killed twice at random moments while it writes a checkpoint every step: the latest checkpoint
listed is
  always complete and readable, and each restart resumes from exactly that one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from _checkpoints import assert_same_checkpoints

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _start(run, *args):
    cmd = [
        sys.executable,
        "-m",
        "indep_seg",
        "train",
        "--experiment",
        "toy",
        "--model-dir",
        str(run),
        *args,
    ]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _latest_step(run) -> int:
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    return int(state.model_checkpoint_path.rsplit("-", 1)[1]) if state else -1


def _kill_when(proc, condition, timeout=150):
    """SIGKILL `proc` once `condition()` holds (fail if it ends or times out first)."""
    deadline = time.time() + timeout
    try:
        while not condition():
            assert proc.poll() is None, (
                f"the run ended before it was killed:\n{proc.stdout.read()[-3000:]}"
            )
            assert time.time() < deadline, "timed out waiting for a checkpoint"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def _finish(proc, timeout=150) -> dict:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def _read_fully(prefix):
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
        if "OBJECT_GRAPH" not in key:
            assert np.all(np.isfinite(np.asarray(reader.get_tensor(key), dtype=np.float64))), key


@pytest.mark.slow
def test_sigkill_mid_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    run = tmp_path / "run"
    every = 25
    proc = _start(
        run,
        "--steps",
        "1000000",
        "--seed",
        "2",
        "--override",
        f"checkpoint_every={every}",
        "log_every=5",
        "image_every=0",
    )
    _kill_when(proc, lambda: _latest_step(run) >= 2 * every)
    saved = _latest_step(run)
    logged = max(
        json.loads(ln)["step"]
        for ln in (run / "stats.jsonl").read_text().splitlines()
        if ln.strip().endswith("}")
    )
    assert (
        saved % every == 0 and logged - saved < every + 5
    )  # at most one interval (+ one log) lost
    _read_fully(tf.train.latest_checkpoint(str(run / "checkpoints")))

    total = saved + 15
    result = _finish(_start(run, "--steps", str(total)))  # same dir, stored options
    assert result["resumed_from"] == saved and result["step"] == total
    assert f"resuming from step {saved}" in (run / "log.txt").read_text()
    steps = [json.loads(ln)["step"] for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(5, total + 1, 5)) + ([total] if total % 5 else [])

    # the uninterrupted run, in process, from the same seed
    from indep_seg.training.context import TrainContext
    from indep_seg.training.experiments.toy import ToyConfig, train_toy

    keras.utils.set_random_seed(2)
    train_toy(
        ToyConfig(checkpoint_every=every, log_every=5, image_every=0),
        TrainContext(model_dir=tmp_path / "ref", steps=total, seed=2, extra={"verbose": False}),
    )
    assert_same_checkpoints(tmp_path / "ref", run, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_corrupt_latest(tmp_path):
    run = tmp_path / "run"
    rng = random.Random(0)
    args = [
        "--steps",
        "1000000",
        "--override",
        "checkpoint_every=1",
        "keep_checkpoints=2",
        "log_every=1000",
        "image_every=0",
    ]
    previous = 0
    for kill in range(2):
        proc = _start(run, *args)
        first = previous
        delay = rng.uniform(0.0, 0.4)
        started = {}

        def ready():
            # a few checkpoints written by this process, then a random moment (mostly inside a save)
            if _latest_step(run) < first + 3:
                return False
            started.setdefault("t", time.time())
            return time.time() - started["t"] >= delay

        _kill_when(proc, ready)
        latest = _latest_step(run)
        assert latest >= first + 3
        state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
        _read_fully(state.model_checkpoint_path)  # the latest listed checkpoint is complete
        for prefix in state.all_model_checkpoint_paths:
            # An older entry is complete, or entirely gone: tf.train.CheckpointManager deletes the
            # oldest checkpoint's files before it rewrites the index, so a kill in between leaves
            # the index naming a deleted checkpoint (never a half-written one); restore skips it.
            if os.path.exists(prefix + ".index"):
                _read_fully(prefix)
        previous = latest
    result = _finish(_start(run, "--steps", str(previous + 2)))
    assert result["resumed_from"] == previous and result["step"] == previous + 2
    assert "cannot be read" not in (run / "log.txt").read_text()
