"""Cost of the shared training loop (training/loop.py): callbacks, checkpoints, resume.

    .venv/bin/python benchmarks/bench_training_loop.py            # toy GAN, a few hundred steps
    .venv/bin/python benchmarks/bench_training_loop.py --quick    # seconds, for the runner's test

Measures on the `toy` experiment (so it isolates the loop from any application's network):
- steps/s of a bare `model.fit` (no callbacks) and of `run_fit` with logging every 10 steps and a
  checkpoint every `--checkpoint-every` steps: the loop's overhead;
- the time of one checkpoint save and one restore (median of `--repeats`);
- steps/s with MirroredStrategy over 2 logical CPUs vs one device, same global batch (in a
  subprocess, as logical devices must be set before TensorFlow starts; not in --quick). On a
  2-core CPU this shows the cost of the replica machinery, not a speed-up.
Writes `training_loop.json` (a `table` of the figures) into the results folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import REPO, results_dir, write_json_atomic  # noqa: E402


def _toy(ctx, batch_size):
    from indep_seg.training.experiments.toy import ToyConfig, build_toy

    return build_toy(ToyConfig(batch_size=batch_size), ctx)


def _steps_per_s(fn, steps):
    t = time.perf_counter()
    fn()
    return steps / (time.perf_counter() - t)


def measure_local(steps, checkpoint_every, repeats, batch_size):
    import keras

    from indep_seg.training.context import TrainContext
    from indep_seg.training.experiments.toy import toy_dataset
    from indep_seg.training.loop import Checkpointer, run_fit

    rows = []
    with tempfile.TemporaryDirectory() as d:
        keras.utils.set_random_seed(0)
        ctx = TrainContext(model_dir=Path(d) / "bare", extra={"verbose": False})
        model = _toy(ctx, batch_size)
        ds = toy_dataset(batch_size, 8, 0)
        model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0, shuffle=False)  # trace
        bare = max(
            _steps_per_s(
                lambda: model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False),
                steps,
            )
            for _ in range(repeats)
        )
        rows.append({"what": "bare model.fit (no callbacks)", "steps_per_s": round(bare, 1)})

        best = 0.0
        for r in range(repeats):
            keras.utils.set_random_seed(0)
            ctx = TrainContext(model_dir=Path(d) / f"loop{r}", extra={"verbose": False})
            model = _toy(ctx, batch_size)
            run_fit(
                model,
                lambda s: toy_dataset(batch_size, 8, 0, s),
                ctx,
                total_steps=5,
                checkpoint_every=5,
                image_every=0,
                verbose=False,
            )  # trace + first checkpoint
            result = run_fit(
                model,
                lambda s: toy_dataset(batch_size, 8, 0, s),
                ctx,
                total_steps=5 + steps,
                checkpoint_every=checkpoint_every,
                log_every=10,
                image_every=0,
                verbose=False,
            )
            best = max(best, steps / result["seconds"])
        rows.append(
            {
                "what": f"run_fit (log every 10, checkpoint every {checkpoint_every})",
                "steps_per_s": round(best, 1),
                "overhead_pct": round(100 * (bare / best - 1), 1),
            }
        )

        ckpt = Checkpointer(model, Path(d) / "ck", keep_checkpoints=2)
        saves, restores = [], []
        for i in range(repeats * 3):
            t = time.perf_counter()
            ckpt.save(i + 1)
            saves.append(time.perf_counter() - t)
            t = time.perf_counter()
            ckpt.restore(log=lambda m: None)
            restores.append(time.perf_counter() - t)
        n_params = sum(
            int(v.numpy().size) for v in model.generator.weights + model.discriminator.weights
        )
        rows.append(
            {
                "what": f"checkpoint save ({n_params} parameters + 2 Adam states)",
                "ms_median": round(1000 * statistics.median(saves), 2),
            }
        )
        rows.append(
            {
                "what": "checkpoint restore",
                "ms_median": round(1000 * statistics.median(restores), 2),
            }
        )
    return rows


_MIRRORED_CHILD = r"""
import json, sys, time, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import keras
from indep_seg.training.experiments.toy import ToyConfig, build_toy, toy_dataset
from indep_seg.training.context import TrainContext
steps, repeats, batch = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {}
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for name, strategy in [("one device", tf.distribute.get_strategy()),
                       ("MirroredStrategy, 2 logical CPUs", mirrored)]:
    keras.utils.set_random_seed(0)
    ctx = TrainContext(model_dir="/tmp/unused", strategy=strategy)
    model = build_toy(ToyConfig(batch_size=batch), ctx)
    ds = toy_dataset(batch, 8, 0)
    model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0, shuffle=False)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        best = max(best, steps / (time.perf_counter() - t))
    out[name] = best
print("RESULT " + json.dumps(out))
"""


def measure_mirrored(steps, repeats, batch_size):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MIRRORED_CHILD,
            str(REPO),
            str(steps),
            str(repeats),
            str(batch_size),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    return [
        {"what": f"toy fit, {k}, global batch {batch_size}", "steps_per_s": round(v, 1)}
        for k, v in out.items()
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.checkpoint_every = 20, 1, 10
    t = time.time()
    rows = measure_local(args.steps, args.checkpoint_every, args.repeats, args.batch_size)
    if not args.quick:  # a second TensorFlow process: too slow for the runner's quick test
        rows += measure_mirrored(args.steps, args.repeats, args.batch_size)
    result = {
        "table": rows,
        "steps": args.steps,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "seconds": round(time.time() - t, 1),
        "note": "best of repeats on a shared CPU; the toy step is tiny, so overheads are upper "
        "bounds",
    }
    path = write_json_atomic(results_dir() / "training_loop.json", result)
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
