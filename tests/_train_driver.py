"""Subprocess driver of the distribution tests (not collected by pytest).

    python tests/_train_driver.py --experiment NAME --out DIR --steps N [--devices 2]
        [--modes one,mirrored] [--seed S] [--override key=value ...]

Splits the CPU into `--devices` logical devices (only possible before TensorFlow starts, hence a
subprocess), then runs the experiment's `train_fn` once per mode into `DIR/<mode>`:
`one` = the default strategy (one device, what `indep-seg train` uses), `mirrored` =
MirroredStrategy over all the logical CPUs. Both start from the same seed, so they must end with the
same variables. Exit code 77 (+ a message) when the experiment is not registered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOT_REGISTERED = 77


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--experiment", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--modes", default="one,mirrored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="extend", nargs="+", default=[])
    args = p.parse_args()

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices
    )

    import keras

    from indep_seg.training.config import apply_overrides
    from indep_seg.training.context import TrainContext
    from indep_seg.training.registry import UnknownExperimentError, get_experiment

    try:
        exp = get_experiment(args.experiment)
    except UnknownExperimentError as e:
        print(f"NOT REGISTERED: {e}", flush=True)
        return NOT_REGISTERED
    config = apply_overrides(exp.default_config, args.override)
    results = {}
    for mode in args.modes.split(","):
        if mode == "one":
            strategy = tf.distribute.get_strategy()
        elif mode == "mirrored":
            strategy = tf.distribute.MirroredStrategy(
                [d.name for d in tf.config.list_logical_devices("CPU")]
            )
        else:
            raise SystemExit(f"--modes: unknown mode {mode!r}")
        keras.utils.set_random_seed(args.seed)
        ctx = TrainContext(
            model_dir=Path(args.out) / mode,
            steps=args.steps,
            strategy=strategy,
            seed=args.seed,
            extra={"verbose": False},
        )
        result = exp.train_fn(config, ctx) or {}
        results[mode] = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
        results[mode]["replicas"] = int(strategy.num_replicas_in_sync)
    print("RESULTS " + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
