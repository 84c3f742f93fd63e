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

import numpy as np
import pytest
from _checkpoints import assert_same_checkpoints, latest_checkpoint_values

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "_train_driver.py"


def _drive(tmp_path, experiment, steps, overrides=(), timeout=240, modes="one,mirrored"):
    cmd = [
        sys.executable,
        str(DRIVER),
        "--experiment",
        experiment,
        "--out",
        str(tmp_path),
        "--steps",
        str(steps),
        "--modes",
        modes,
    ]
    if overrides:
        cmd += ["--override", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode != 77, (
        f"experiment {experiment!r} is not registered "
        f"({proc.stdout.strip().splitlines()[-1][:300]})"
    )
    assert proc.returncode == 0, f"driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS ") :])


def test_toy_two_devices_match_one_device(tmp_path):
    results = _drive(tmp_path, "toy", steps=5, overrides=["checkpoint_every=5", "image_every=0"])
    assert results["one"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    assert results["one"]["step"] == results["mirrored"]["step"] == 5
    n = assert_same_checkpoints(tmp_path / "one", tmp_path / "mirrored", rtol=1e-5, atol=1e-6)
    assert n >= 20  # 2 networks, 2 optimizers with slots, SN vector, RNG state, step


@pytest.fixture(scope="module")
def registered():
    from indep_seg.training.registry import list_experiments

    return {e.name for e in list_experiments()}


@pytest.mark.slow
@pytest.mark.parametrize("app", ["box_seg", "ilsgan", "hoc"])
def test_application_trainers_two_devices_match_one_device(tmp_path, app, registered):
    """Each application's `<app>_tiny` preset (see docs/ARCHITECTURE.md, Experiments)."""
    assert f"{app}_tiny" in registered, (
        f"experiment '{app}_tiny' is not registered (training/experiments/tiny.py); "
        f"known: {', '.join(sorted(registered))}"
    )
    results = _drive(tmp_path, f"{app}_tiny", steps=3, timeout=420)
    assert results["mirrored"]["replicas"] == 2
    # Weights, BN statistics, SN vectors, RNG states, counters: rtol 1e-4, atol 1e-5 (as
    # documented).
    n = assert_same_checkpoints(
        tmp_path / "one",
        tmp_path / "mirrored",
        rtol=1e-4,
        atol=1e-5,
        skip=("save_counter", _ADAM_SLOTS),
        adam_sign_noise=ADAM_SIGN_NOISE,
    )
    assert n >= 50
    _assert_optimizer_slots_close(tmp_path / "one", tmp_path / "mirrored", scale_tol=5e-3)


# box_seg_tiny (3 steps, lr <= 6e-4): one 3x3x8x8 UNet kernel element stepped the other way on
# 2 replicas (4e-4 = 2 x lr) while Adam's m, v of that element agreed to 0.5 %: see
# `assert_same_checkpoints(adam_sign_noise=...)`.
ADAM_SIGN_NOISE = 2 * 6e-4 * 3
_ADAM_SLOTS = "optimizer/_variables/"  # Adam's m and v (and its iteration / lr variables)


def _assert_optimizer_slots_close(dir_a, dir_b, scale_tol):
    """Adam's moment estimates m, v within `scale_tol` x the largest |value| of each tensor.

    Why looser than the weights: synchronized BatchNorm computes var = E[x^2] - E[x]^2 from sums
    that
    2 replicas add in another order than 1 device; for low-variance channels that cancellation turns
    float32 rounding (1e-7) into ~1e-3 relative differences of the gradients (box_seg_tiny: m, v of
    the
    UNet differ by at most 1.3e-3 x max|v|, measured). Adam is scale-invariant, so the weights still
    agree to 1e-5, but m and v carry the raw gradients; this check still catches any wrong loss
    scaling
    or per-replica draw (differences of order 1, not 1e-3). Integer slots (iterations) must be
    equal.
    """
    a, b = latest_checkpoint_values(dir_a), latest_checkpoint_values(dir_b)
    worst = []
    for key in sorted(k for k in a if _ADAM_SLOTS in k):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if not np.issubdtype(x.dtype, np.floating):
            assert np.array_equal(x, y), f"{key}: {x.ravel()[:4]} vs {y.ravel()[:4]}"
            continue
        err = float(np.max(np.abs(x - y), initial=0.0))
        if err > scale_tol * float(np.max(np.abs(y), initial=0.0)) + 1e-6:
            worst.append((err, key))
    assert not worst, (
        f"{len(worst)} optimizer slots differ, largest: {sorted(worst, reverse=True)[:5]}"
    )


# The features the tiny presets leave off for the exact two-equals-one comparison (tiny.py): ADA and
# ILS-MI draw per replica / estimate per local batch, so 2 replicas cannot equal 1 device there;
# they
# must still train under MirroredStrategy, with the post-hoc UNet, the counter and distillation.
FEATURES_ON = {
    "box_seg": ["prior=grabcut", "area_from_prior=true"],  # + distillation (both phases run)
    "ilsgan": ["ada=true", "ils=mi", "use_noise=true", "mbstd_group_size=2"],  # + the post-hoc UNet
    "hoc": [],  # its counter is on in the tiny preset
}


@pytest.mark.slow
@pytest.mark.parametrize("app", ["box_seg", "ilsgan", "hoc"])
def test_application_trainers_train_under_mirrored_with_their_features_on(tmp_path, app):
    # ILSGAN under MirroredStrategy with ADA traces large graphs: over 7 minutes on a loaded 2-core
    # machine
    results = _drive(
        tmp_path, f"{app}_tiny", steps=3, overrides=FEATURES_ON[app], timeout=900, modes="mirrored"
    )
    r = results["mirrored"]
    assert r["replicas"] == 2
    values = [v for v in r.values() if isinstance(v, float)]
    assert values and all(np.isfinite(v) for v in values if v == v), r
    run = tmp_path / "mirrored"
    if app == "box_seg":
        assert r["adversarial_steps"] == 2 and r["distill_steps"] == 1 and r["phase"] == "distill"
        assert (run / "segmenter" / "segmenter.json").is_file()
    elif app == "ilsgan":
        assert r["steps"] == 3 and np.isfinite(r["posthoc_val_iou"])
        assert json.loads((run / "ilsgan_summary.json").read_text())["posthoc"]
    else:
        assert np.isfinite(r["counter_loss"])
