"""ILSGAN and HoC under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 (TF_CONFIG)
run `indep-seg train --strategy multi_worker` on the tiny presets with their features on (ILSGAN:
ADA,
ILS-MI, per-pixel noise, minibatch-std groups, then the post-hoc UNet; HoC: the counter). ADA and
ILS-MI draw / estimate per replica, so the runs are not compared with one device (box_seg is:
tests/test_distributed_box_seg.py); both workers must finish every stage and agree on the reduced
training scalars, and only the chief keeps checkpoints and trains ILSGAN's post-hoc UNet."""

from __future__ import annotations

import json

import pytest
from test_distributed_multi_worker import _start_workers, _wait_workers


def _last_stats(run):
    return json.loads((run / "stats.jsonl").read_text().splitlines()[-1])


@pytest.mark.slow
def test_ilsgan_two_workers_with_ada_ils_mi_and_posthoc_unet(tmp_path):
    run = tmp_path / "run"
    procs, logs = _start_workers(
        tmp_path,
        run,
        [
            "--steps",
            "3",
            "--override",
            "ada=true",
            "ils=mi",
            "use_noise=true",
            "mbstd_group_size=2",
        ],
        experiment="ilsgan_tiny",
    )
    results = _wait_workers(tmp_path, procs, logs, timeout_s=600)
    assert [r["steps"] for r in results] == [3.0, 3.0]
    chief, other = results
    assert chief["posthoc_val_iou"] == chief["posthoc_val_iou"]  # the chief's post-hoc UNet trained
    assert other["posthoc_val_iou"] != other["posthoc_val_iou"]  # the other worker trains none
    log = (run / "log.txt").read_text()
    assert (
        "2 replica(s) (CollectiveAllReduceStrategy)" in log and "ada_p=" in log and " ils=" in log
    )
    assert _last_stats(run)["step"] == 3
    assert (run / "segmenter").is_dir()
    assert not (run / ".workers" / "worker-1" / "checkpoints").exists()


@pytest.mark.slow
def test_hoc_two_workers_with_the_counter(tmp_path):
    run = tmp_path / "run"
    procs, logs = _start_workers(tmp_path, run, ["--steps", "3"], experiment="hoc_tiny")
    results = _wait_workers(tmp_path, procs, logs, timeout_s=600)
    assert all(
        r["counter_loss"] == r["counter_loss"] for r in results
    )  # the counter trained on both
    assert "2 replica(s) (CollectiveAllReduceStrategy)" in (run / "log.txt").read_text()
    assert not (run / ".workers" / "worker-1" / "checkpoints").exists()
