"""The library's fast layers against the Keras layers they replace, one layer at a time.

    .venv/bin/python benchmarks/bench_layers.py            # the paper / small presets' shapes
    .venv/bin/python benchmarks/bench_layers.py --quick    # tiny shapes, seconds (tested)

Each case builds the Keras layer and the library's layer with the same weights, checks that
their outputs agree, and times one training pass (forward, then the gradients a train step takes:
weights always, the input where a step needs it) in interleaved bursts (A B A B ...), best of
`--repeats`. The shapes are those of the presets' layers where the library's layer differs from
Keras' kernel: the first convolutions (3 input channels, whose fused bias + filter gradient is
slow in oneDNN), the Table-1 UNet's innermost and mask transposed convolutions, the small UNet's
1-channel mask convolution, BatchNorm in training. Writes `layers.json` (a `table` with
milliseconds and speed-ups) into the results folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import results_dir, write_json_atomic  # noqa: E402

# (name, Keras class, library class (module, name), constructor kwargs, input shape, input gradient)
CASES = [
    (
        "SN discriminator conv0: 3x3/2, 3 -> 64, 128 px, batch 32 (Table 1)",
        "Conv2D",
        ("unfused_bias_conv", "UnfusedBiasConv2D"),
        dict(filters=64, kernel_size=3, strides=2, padding="same"),
        (32, 128, 128, 3),
        False,
    ),
    (
        "UNet enc0: 4x4/2, 3 -> 64, 128 px, batch 16 (Table 1)",
        "Conv2D",
        ("unfused_bias_conv", "UnfusedBiasConv2D"),
        dict(filters=64, kernel_size=4, strides=2, padding="same"),
        (16, 128, 128, 3),
        False,
    ),
    (
        "SN discriminator conv1: 3x3/2, 64 -> 128, 64 px, batch 32",
        "Conv2D",
        ("unfused_bias_conv", "UnfusedBiasConv2D"),
        dict(filters=128, kernel_size=3, strides=2, padding="same"),
        (32, 64, 64, 64),
        True,
    ),
    (
        "UNet dec3: transposed 4x4/2, 1024 -> 512, 4x4 -> 8x8, batch 16 (Table 1)",
        "Conv2DTranspose",
        ("gemm_conv_transpose", "GemmConv2DTranspose"),
        dict(filters=512, kernel_size=4, strides=2, padding="same", use_bias=False),
        (16, 4, 4, 1024),
        True,
    ),
    (
        "UNet mask: transposed 4x4/2, 128 -> 1, 64 -> 128 px, batch 16 (Table 1)",
        "Conv2DTranspose",
        ("gemm_conv_transpose", "GemmConv2DTranspose"),
        dict(filters=1, kernel_size=4, strides=2, padding="same"),
        (16, 64, 64, 128),
        True,
    ),
    (
        "small UNet mask: 3x3, 64 -> 1, 64 px, batch 32",
        "Conv2D",
        ("gemm_conv", "GemmConv2D"),
        dict(filters=1, kernel_size=3, padding="same"),
        (32, 64, 64, 64),
        True,
    ),
    (
        "BatchNorm in training, 64x64x64, batch 16",
        "BatchNormalization",
        ("fused_batch_norm", "FusedBatchNormalization"),
        dict(momentum=0.9),
        (16, 64, 64, 64),
        True,
    ),
]


def _quick(shape):
    b, h, w, c = shape
    return (2, max(2, h // 8), max(2, w // 8), c if c <= 4 else max(4, c // 16))


def _layer_pair(keras_name, lib, kwargs, shape):
    import importlib

    import keras
    import numpy as np

    ref = getattr(keras.layers, keras_name)(**kwargs)
    got = getattr(importlib.import_module(f"indep_seg.networks.{lib[0]}"), lib[1])(**kwargs)
    ref.build(shape)
    got.build(shape)
    rng = np.random.default_rng(0)
    weights = [(w + rng.normal(0, 0.05, w.shape)).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    got.set_weights(weights)
    return ref, got


def _train_pass(layer, x, input_grad):
    import tensorflow as tf

    def step(x):
        with tf.GradientTape() as tape:
            if input_grad:
                tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, ([x] if input_grad else []) + layer.trainable_variables)

    return tf.function(step, autograph=False)


def run_case(case, quick, repeats, burst):
    import numpy as np
    import tensorflow as tf

    name, keras_name, lib, kwargs, shape, input_grad = case
    shape = _quick(shape) if quick else shape
    ref, got = _layer_pair(keras_name, lib, kwargs, shape)
    x = tf.random.stateless_normal(shape, seed=(1, 2))
    diff = float(np.max(np.abs(got(x, training=True).numpy() - ref(x, training=True).numpy())))
    fns = {"keras": _train_pass(ref, x, input_grad), "library": _train_pass(got, x, input_grad)}
    times = {k: [] for k in fns}
    for fn in fns.values():
        [g.numpy() for g in fn(x)]
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(burst):
                out = fn(x)
            [g.numpy() for g in out]
            times[k].append((time.perf_counter() - t) / burst)
    best = {k: min(v) for k, v in times.items()}
    return {
        "layer": name,
        "keras_layer": keras_name,
        "library_layer": lib[1],
        "input_shape": list(shape),
        "input_gradient": input_grad,
        "keras_ms": round(1e3 * best["keras"], 3),
        "library_ms": round(1e3 * best["library"], 3),
        "speedup": round(best["keras"] / best["library"], 2),
        "max_abs_output_difference": diff,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, one short burst")
    ap.add_argument("--repeats", type=int, default=7, help="timed bursts per layer")
    ap.add_argument("--burst", type=int, default=5, help="training passes per burst")
    ap.add_argument("--out", default=None, help="JSON path (default RESULTS/layers.json)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.burst < 1:
        ap.error(f"--repeats / --burst: expected positive ints, got {args.repeats} / {args.burst}")
    repeats, burst = (1, 1) if args.quick else (args.repeats, args.burst)
    table = []
    for case in CASES:
        row = run_case(case, args.quick, repeats, burst)
        print(
            f"{row['layer']}: Keras {row['keras_ms']} ms, library {row['library_ms']} ms "
            f"({row['speedup']}x)",
            flush=True,
        )
        table.append(row)
    result = {
        "benchmark": "layers",
        "quick": args.quick,
        "repeats": repeats,
        "burst": burst,
        "what": "one training pass (forward + the gradients a train step takes), best burst mean",
        "table": table,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg": os.getloadavg(),
    }
    out = Path(args.out) if args.out else results_dir() / "layers.json"
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
