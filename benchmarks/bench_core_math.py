"""The mathematical core: the ILS-MI estimator's calibration, op throughput, and a picture.

    .venv/bin/python benchmarks/bench_core_math.py [--quick]

1. ILS-MI (ILSGAN eqs. 7-12) on synthetic layer pairs whose dependence is known: the
   background is ``b = (1 - rho) u + rho f`` with u independent uniform noise, rho from 0
   (independent) to 1 (b = f). For every rho: the estimate (mean and spread over seeds) for
   ``separate=False`` (I(b; f) of whole layers) and ``separate=True`` (eq. 12, with one mask
   for the batch and with random per-example masks), Laplace and Gaussian q.
2. Throughput of composite_layers (Dai eq. 5), spatial_transformer (eq. 4), pad_and_random_crop
   and ils_mi_loss at the papers' sizes (DSF-HOC: 32 x 12 layers of 64 x 64 RGBA; ILSGAN: 32
   pairs at 64 x 64), compiled with tf.function, forward + backward.
3. core_math.png: rows = 4 generated-looking RGBA layers (discs), after pad + random crop,
   after an ST warp (rotation + scale), the partial composites x_1..x_4 of eq. (5), and
   ILSGAN's T perturbation (fg | mask | T(f) | T(m) | composite with b untouched).

Writes core_math.json (with a "table") and core_math.png into the results folder.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import results_dir, write_json_atomic  # noqa: E402


def mi_calibration(quick):
    import tensorflow as tf  # noqa: F401

    from indep_seg.losses import ils_mi_loss

    rng = np.random.default_rng(0)
    n, size = (64, 8) if quick else (256, 16)
    seeds = 3 if quick else 10
    rhos = [0.0, 0.5, 1.0] if quick else [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    common = np.zeros([1, size, size, 1], np.float32)
    common[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    common = np.repeat(common, n, 0)
    rows = []
    for dist in ("laplace", "gaussian"):
        for rho in rhos:
            vals = {"whole": [], "sep_common_mask": [], "sep_random_masks": []}
            for s in range(seeds):
                f = rng.uniform(size=[n, size, size, 3]).astype(np.float32)
                u = rng.uniform(size=[n, size, size, 3]).astype(np.float32)
                b = ((1 - rho) * u + rho * f).astype(np.float32)
                rm = (rng.uniform(size=[n, size, size, 1]) > 0.5).astype(np.float32)
                vals["whole"].append(
                    float(ils_mi_loss(f, b, common, separate=False, distribution=dist, seed=s))
                )
                vals["sep_common_mask"].append(
                    float(ils_mi_loss(f, b, common, distribution=dist, seed=s))
                )
                vals["sep_random_masks"].append(
                    float(ils_mi_loss(f, b, rm, distribution=dist, seed=s))
                )
            row = {"what": "ils_mi", "distribution": dist, "rho": rho, "batch": n, "size": size}
            for k, v in vals.items():
                row[f"{k}_mean"] = round(float(np.mean(v)), 5)
                row[f"{k}_std"] = round(float(np.std(v)), 5)
            rows.append(row)
    return rows


def throughput(quick):
    import tensorflow as tf

    from indep_seg.composition import composite_layers
    from indep_seg.layout import pad_and_random_crop, spatial_transformer
    from indep_seg.losses import ils_mi_loss

    b, n_layers, r = (4, 3, 32) if quick else (32, 12, 64)
    layers = tf.random.uniform([b, n_layers, r, r, 4], seed=1)
    theta = tf.random.uniform([b, n_layers, 6], -0.1, 0.1, seed=2) * tf.constant(
        [1, 1, 10, 1, 1, 10.0]
    )
    fg = tf.random.uniform([b, r, r, 3], seed=3)
    bg = tf.random.uniform([b, r, r, 3], seed=4)
    m = tf.random.uniform([b, r, r, 1], seed=5)

    def grad_of(fn, *xs):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y = tf.reduce_sum(fn(*xs))
            return tape.gradient(y, xs)

        return step

    cases = {
        "composite_layers (eq. 5)": (grad_of(composite_layers, layers), b),
        "spatial_transformer (eq. 4)": (
            grad_of(lambda t: spatial_transformer(t, theta), layers),
            b,
        ),
        "pad_and_random_crop": (grad_of(lambda t: pad_and_random_crop(t, r // 2), layers), b),
        "ils_mi_loss (eq. 12)": (grad_of(lambda f, g, k: ils_mi_loss(f, g, k), fg, bg, m), b),
    }
    rows = []
    repeats = 3 if quick else 20
    for name, (fn, batch) in cases.items():
        fn()  # trace
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(repeats):
                out = fn()
            _ = [o.numpy() for o in out]
            best = min(best, (time.perf_counter() - t) / repeats)
        rows.append(
            {
                "what": "throughput",
                "op": name,
                "batch": batch,
                "layers": n_layers if "ils" not in name else 2,
                "resolution": r,
                "ms_per_fwd_bwd": round(best * 1e3, 3),
                "examples_per_s": round(batch / best, 1),
            }
        )
    return rows


def picture(path: Path):
    import tensorflow as tf
    from PIL import Image

    from indep_seg.composition import composite_layers
    from indep_seg.layout import pad_and_random_crop, perturbed_composite, spatial_transformer

    r, n = 48, 4
    yy, xx = np.mgrid[0:r, 0:r]
    colors = [(0.9, 0.2, 0.2), (0.2, 0.8, 0.3), (0.2, 0.4, 0.95), (0.95, 0.85, 0.2)]
    layers = np.zeros([1, n, r, r, 4], np.float32)
    for i, c in enumerate(colors):
        disc = ((yy - r / 2) ** 2 + (xx - r / 2) ** 2 < (r / 5 + 2 * i) ** 2).astype(np.float32)
        shade = 0.6 + 0.4 * (xx / r)
        layers[0, i, ..., :3] = np.array(c) * shade[..., None]
        layers[0, i, ..., 3] = disc
    cropped = pad_and_random_crop(layers, 16, seed=3).numpy()
    theta = np.array(
        [
            [
                [np.cos(a) * s - 1, -np.sin(a) * s, 0, np.sin(a) * s, np.cos(a) * s - 1, 0]
                for a, s in [(0.3, 1.2), (-0.5, 0.7), (0.8, 1.0), (0.0, 0.5)]
            ]
        ],
        np.float32,
    )
    warped = spatial_transformer(np.stack([cropped[0, i] for i in range(n)])[None], theta).numpy()
    x, ex = composite_layers(warped, return_layers=True)
    partial = ex["partial"].numpy()

    def rgba_tile(t):  # RGBA -> RGB on a checkerboard
        checker = (((yy // 6) + (xx // 6)) % 2 * 0.25 + 0.5)[..., None]
        return t[..., :3] * t[..., 3:] + checker * (1 - t[..., 3:])

    rows = [
        [rgba_tile(layers[0, i]) for i in range(n)],
        [rgba_tile(cropped[0, i]) for i in range(n)],
        [rgba_tile(warped[0, i]) for i in range(n)],
        [partial[0, i] for i in range(n)],
    ]
    fg = layers[:, 1, ..., :3]
    mask = layers[:, 1, ..., 3:]
    bg = np.broadcast_to(
        np.linspace(0, 1, r, dtype=np.float32)[None, :, None, None]
        * np.array([0.3, 0.3, 0.6], np.float32),
        [1, r, r, 3],
    ).copy()
    xp, ft, mt = perturbed_composite(fg, mask, bg, max_fraction=0.25, seed=4, return_layers=True)
    rows.append([fg[0], np.repeat(mask[0], 3, -1), ft.numpy()[0], np.repeat(mt.numpy()[0], 3, -1)])
    rows.append(
        [bg[0], xp.numpy()[0], np.repeat(mask[0], 3, -1) * 0 + 1, np.repeat(mask[0], 3, -1) * 0 + 1]
    )
    pad = 2
    h = len(rows) * (r + pad) + pad
    w = n * (r + pad) + pad
    canvas = np.ones([h, w, 3], np.float32)
    for ri, row in enumerate(rows):
        for ci, tile in enumerate(row):
            y0, x0 = pad + ri * (r + pad), pad + ci * (r + pad)
            canvas[y0 : y0 + r, x0 : x0 + r] = np.clip(tile, 0, 1)
    img = Image.fromarray(np.uint8(canvas * 255)).resize((w * 3, h * 3), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    del tf


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    args = ap.parse_args(argv)
    out_dir = results_dir()
    t0 = time.time()
    table = mi_calibration(args.quick) + throughput(args.quick)
    picture(out_dir / "core_math.png")
    result = {
        "quick": args.quick,
        "seconds": round(time.time() - t0, 1),
        "png": "core_math.png (rows: layers | pad+crop | ST warp | partial composites x_1..x_4 | "
        "T: f, m, T(f), T(m) | b, T-composite)",
        "table": table,
    }
    path = write_json_atomic(out_dir / "core_math.json", result)
    print(f"wrote {path}")
    for row in table:
        print(row)


if __name__ == "__main__":
    main()
