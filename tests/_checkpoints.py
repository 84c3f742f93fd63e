"""Helpers of the distribution tests: read and compare the final checkpoints of two run dirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf


def latest_checkpoint_values(run_dir) -> dict:
    """{"<checkpoints folder relative to run_dir>:<variable key>": array} for the latest checkpoint
    of
    every `checkpoints/` folder under `run_dir` (phases of an experiment included)."""
    run_dir = Path(run_dir)
    values = {}
    for folder in sorted(run_dir.rglob("checkpoints")):
        if ".workers" in folder.parts or not (folder / "checkpoint").is_file():
            continue
        latest = tf.train.latest_checkpoint(str(folder))
        if latest is None:
            continue
        reader = tf.train.load_checkpoint(latest)
        rel = folder.relative_to(run_dir).as_posix()
        for key in reader.get_variable_to_shape_map():
            if key.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
                continue
            values[f"{rel}:{key}"] = reader.get_tensor(key)
    return values


def assert_same_checkpoints(
    dir_a,
    dir_b,
    rtol=1e-4,
    atol=1e-5,
    skip=("save_counter",),
    adam_sign_noise: float = 0.0,
    max_noisy_fraction: float = 1e-3,
) -> int:
    """Every variable of the latest checkpoints under `dir_a` equals its counterpart under `dir_b`
    (floats within tolerance, integers exactly). Returns the number of variables compared.

    `adam_sign_noise` (e.g. 2 x learning rate x steps): Adam moves a weight by about +-lr whatever
    the size of its gradient, so an element whose gradient is at the float32 rounding noise of
    2 replicas' summation order (synchronized BN, tiny.py) can step the other way on one device.
    Up to `max_noisy_fraction` of a variable's elements (at least one) may then differ by up to
    `adam_sign_noise`; a wrong loss scaling or a per-replica draw moves many elements (and the
    optimizer slots, checked separately) and still fails."""
    a = latest_checkpoint_values(dir_a)
    b = latest_checkpoint_values(dir_b)
    assert a, f"no checkpoint under {dir_a}"
    assert sorted(a) == sorted(b), f"different checkpoint keys: {sorted(set(a) ^ set(b))[:10]}"
    worst = []
    for key in sorted(a):
        if any(s in key for s in skip):
            continue
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, f"{key}: shapes {x.shape} vs {y.shape}"
        if np.issubdtype(x.dtype, np.floating):
            off = ~np.isclose(x, y, rtol=rtol, atol=atol)
            noisy = (
                adam_sign_noise > 0
                and off.sum() <= max(1, int(max_noisy_fraction * x.size))
                and float(np.max(np.abs(x - y))) <= adam_sign_noise
            )
            if off.any() and not noisy:
                worst.append((float(np.max(np.abs(x - y))), key))
        elif x.dtype.kind in "iub":
            if not np.array_equal(x, y):
                worst.append((float("inf"), f"{key}: {x.ravel()[:4]} vs {y.ravel()[:4]}"))
    assert not worst, (
        f"{len(worst)} of {len(a)} variables differ, largest: {sorted(worst, reverse=True)[:5]}"
    )
    return len(a)
