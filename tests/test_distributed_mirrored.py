"""MirroredStrategy on two logical CPUs gives the same training as one device (same global batch).

Each case runs `tests/_train_driver.py` in a subprocess (logical devices can only be configured
before TensorFlow starts): the experiment's `train_fn` runs a few steps with the default strategy
and again under MirroredStrategy over 2 CPUs; every variable of the final checkpoints (networks,
optimizer slots, spectral-norm vectors, RNG states, step counters) must match.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _checkpoints import assert_same_checkpoints

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "_train_driver.py"


def _drive(tmp_path, experiment, steps, overrides=(), timeout=240):
    cmd = [sys.executable, str(DRIVER), "--experiment", experiment, "--out", str(tmp_path), "--steps", str(steps)]
    if overrides:
        cmd += ["--override", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 77:
        pytest.skip(f"experiment {experiment!r} is not registered yet "
                    f"({proc.stdout.strip().splitlines()[-1][:300]})")
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


def test_toy_two_devices_match_one_device(tmp_path):
    results = _drive(tmp_path, "toy", steps=5, overrides=["checkpoint_every=5", "image_every=0"])
    assert results["one"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    assert results["one"]["step"] == results["mirrored"]["step"] == 5
    n = assert_same_checkpoints(tmp_path / "one", tmp_path / "mirrored", rtol=1e-5, atol=1e-6)
    assert n >= 20  # 2 networks, 2 optimizers with slots, SN vector, RNG state, step


@pytest.fixture(scope="module")
def registered():
    from training.registry import list_experiments

    return {e.name for e in list_experiments()}


@pytest.mark.slow
@pytest.mark.parametrize("app", ["box_seg", "ilsgan", "hoc"])
def test_application_trainers_two_devices_match_one_device(tmp_path, app, registered):
    """Each application's `<app>_tiny` preset (see docs/ARCHITECTURE.md, Experiments)."""
    if f"{app}_tiny" not in registered:
        pytest.skip(f"experiment '{app}_tiny' is not registered yet (training/experiments/{app}.py); "
                    f"known: {', '.join(sorted(registered))}")
    results = _drive(tmp_path, f"{app}_tiny", steps=3)
    assert results["mirrored"]["replicas"] == 2
    assert_same_checkpoints(tmp_path / "one", tmp_path / "mirrored", rtol=1e-4, atol=1e-5)
