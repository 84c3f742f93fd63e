"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (TF_CONFIG) train the toy
preset through `indep-seg train`, write one checkpoint, and end with the weights one device
computes for the same global batch. Processes are bounded in time and always cleaned up."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
import yaml
from _checkpoints import assert_same_checkpoints
from _workers import kill_workers as _kill
from _workers import start_workers
from _workers import wait_workers as _wait_workers


def _start_workers(tmp_path, run, args, experiment="toy"):
    """`indep-seg train --experiment EXPERIMENT --model-dir RUN --strategy multi_worker ARGS` on
    two loopback workers (`_workers.start_workers`)."""
    argv = ["-m", "indep_seg", "train", "--experiment", experiment, "--model-dir", run]
    return start_workers(tmp_path, [*argv, "--strategy", "multi_worker", *args])


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
