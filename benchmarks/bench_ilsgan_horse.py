"""ILSGAN on the Weizmann horse photos: IoU, DICE, KID and MINE MI per variant, on held-out photos.

    .venv/bin/python benchmarks/bench_ilsgan_horse.py --budget-minutes 60 --variants mi,none
    .venv/bin/python benchmarks/bench_ilsgan_horse.py --budget-minutes 60 --variant
    no_centre:mask_center_prior=0
    .venv/bin/python benchmarks/bench_ilsgan_horse.py --skip-train --cli --variants mi --run-dir
    mi=RUN_DIR

For each variant (`NAME` = a value of the config's `ils`, or `NAME:key=value,...` = overrides of the
small
preset `ILSGANConfig`), the `ilsgan` experiment is trained on the photos only (centre-cropped
squares; masks
are never seen in training) within `--budget-minutes` (GAN + post-hoc UNet), then scored on both
halves of
../shared/datasets/README.md: the tuning half horse001-164 (where settings are chosen) and the test
half
horse165-328 (reported, never tuned on):
- IoU / DICE of its segmenter with the protocol of ../shared/datasets/README.md (square crop of
half-side
  0.75 max(w, h) around the ground-truth box, black outside the photo, 128x128, threshold 0.5, mean
  over images), beside the box-free baseline on the same half (a centred disc of radius 1/3 of the
  crop)
  and, for reference, the ellipse inscribed in the box itself (which uses the box). `--cli` scores
  the
  masks that `indep-seg segment --model RUN` writes for the crops saved as PNGs (the README's
  route);
- KID of generated composites against the training photos (InceptionV3 features when its weights
  are on this machine, otherwise a fixed random conv net, said so in the JSON);
- the paper's "MI": MINE(b_inv; f_vis) + MINE(b_vis; f_inv) on generated layers (regions
average-pooled
  8x8 to 4x4x3, 2000 samples, 3 MINE seeds); per seed the mean of the held-out evaluations of the
  second
  half of MINE's training (not their maximum), reported as the mean over seeds with the spread of
  the
  evaluations.
Results: `--out` (default benchmarks/results/ilsgan_horse.json) and the figure next to it (.png):
per variant
generated layers and test-half crops / ground truth / prediction.
`--skip-train` evaluates existing run directories only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from indep_seg import metrics_gan  # noqa: E402
from indep_seg.box_crop import box_window, crop_to_window  # noqa: E402
from indep_seg.metrics import dice, iou  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "weizmann_horse"
RESULTS = REPO / "benchmarks" / "results"


HALVES = {
    "tune": (1, 164),
    "test": (165, 328),
    "all": (1, 10**6),
}  # datasets/README.md: tune / report


def in_half(name, half):
    """True when photo `horseNNN.jpg` belongs to `half` ("tune": 001-164, "test": 165-328,
    "all")."""
    lo, hi = HALVES[half]
    return lo <= int("".join(c for c in Path(name).stem if c.isdigit())) <= hi


def load_eval_set(data=DATA, resolution=128, half="all"):
    """(crops [N, R, R, 3], gt [N, R, R, 1], names) with the protocol of datasets/README.md, for the
    photos
    of `half`."""
    rgb_dir, mask_dir = Path(data) / "rgb", Path(data) / "figure_ground"
    crops, gts, names = [], [], []
    for p in sorted(rgb_dir.iterdir()):
        if not in_half(p.name, half):
            continue
        mp = mask_dir / p.name
        if not mp.exists():
            continue
        mask = np.asarray(Image.open(mp).convert("L")) > 127
        img = Image.open(p).convert("RGB")
        if img.size != (mask.shape[1], mask.shape[0]):
            img = img.resize((mask.shape[1], mask.shape[0]), Image.BILINEAR)
        img = np.asarray(img, np.float32) / 255.0
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            continue
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        win = box_window([box], margin=0.25, square=True)
        crops.append(crop_to_window(img[None], win, resolution).numpy()[0])
        gts.append(
            crop_to_window(mask[None, ..., None].astype(np.float32), win, resolution).numpy()[0]
        )
        names.append(p.name)
    return np.stack(crops), (np.stack(gts) > 0.5).astype(np.float32), names


def baselines(gt):
    r = gt.shape[1]
    yy, xx = np.mgrid[0:r, 0:r] + 0.5
    c = r / 2
    disc = (((xx - c) ** 2 + (yy - c) ** 2) <= (r / 3) ** 2).astype(np.float32)
    disc = np.broadcast_to(disc[None, ..., None], gt.shape)
    # ellipse inscribed in the ground-truth box (uses the box: reference only)
    ell = np.zeros_like(gt)
    for i in range(gt.shape[0]):
        ys, xs = np.nonzero(gt[i, ..., 0])
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        ell[i, ..., 0] = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
    sweep = {}
    for frac in (0.2, 0.25, 0.3, 1 / 3, 0.35, 0.4, 0.45):
        d = (((xx - c) ** 2 + (yy - c) ** 2) <= (r * frac) ** 2).astype(np.float32)
        sweep[round(frac, 3)] = iou(np.broadcast_to(d[None, ..., None], gt.shape), gt)
    best = max(sweep, key=sweep.get)
    return {
        "centred_disc_r_third": {"iou": iou(disc, gt), "dice": dice(disc, gt), "uses_box": False},
        "centred_disc_best_radius_tuned_on_gt": {
            "radius_fraction": best,
            "iou": sweep[best],
            "sweep": sweep,
            "uses_box": False,
        },
        "ellipse_in_box": {"iou": iou(ell, gt), "dice": dice(ell, gt), "uses_box": True},
    }


def evaluate_segmenter(model_dir, crops, gt):
    import indep_seg.networks.unet  # noqa: F401  (registers UNet for keras.models.load_model)
    from indep_seg.segmenter import Segmenter

    seg = Segmenter.load(model_dir)
    r = crops.shape[1]
    x = tf.image.resize(crops, [seg.resolution, seg.resolution], antialias=True)
    pred = np.concatenate(
        [seg.predict_crops(x[i : i + 64]).numpy() for i in range(0, len(crops), 64)]
    )
    pred = tf.image.resize(pred, [r, r], method="bilinear").numpy().clip(0, 1)
    return pred, {
        "iou": iou(pred, gt),
        "dice": dice(pred, gt),
        "iou_per_image": iou(pred, gt, per_image=True),
    }


def evaluate_with_cli(model_dir, crops, gt, names, work_dir, refine="grabcut"):
    """The README's route: the crops written as 8-bit PNGs, `indep-seg segment --model RUN crops
    --out masks --refine REFINE` (the default "grabcut": `indep_seg.refine.refine_unboxed`), the
    8-bit masks read back and thresholded at 0.5 (IoU / DICE as `evaluate_segmenter`)."""
    import subprocess

    work_dir = Path(work_dir)
    src, out = work_dir / "crops", work_dir / "masks"
    src.mkdir(parents=True, exist_ok=True)
    for c, name in zip(crops, names):
        Image.fromarray((np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
            src / (Path(name).stem + ".png")
        )
    exe = Path(sys.executable).with_name("indep-seg")
    cmd = [str(exe), "segment", "--model", str(model_dir), str(src), "--out", str(out)]
    cmd += ["--refine", refine]
    subprocess.run(cmd, check=True)
    pred = []
    for name in names:
        cand = sorted(out.glob(Path(name).stem + ".*"))
        if not cand:
            raise FileNotFoundError(f"indep-seg segment wrote no mask for {name} in {out}")
        pred.append(np.asarray(Image.open(cand[0]).convert("L"), np.float32)[..., None] / 255.0)
    pred = np.stack(pred)
    if pred.shape[1:3] != gt.shape[1:3]:
        raise ValueError(f"masks of {pred.shape[1:3]} for crops of {gt.shape[1:3]}")
    return pred, {
        "iou": iou(pred, gt),
        "dice": dice(pred, gt),
        "iou_per_image": iou(pred, gt, per_image=True),
    }


def mine_summary(runs):
    """MINE over seeds: per seed the mean of the held-out evaluations of the second half of its
    training
    (`metrics_gan.mine_mutual_information(reduce="mean")`); the figure is the mean over seeds, with
    the
    spread (standard deviation and range) of the per-evaluation sums b_inv;f_vis + b_vis;f_inv."""
    per_seed = [r["mi"] for r in runs]
    late_sums = []
    for r in runs:
        ea, ec = r["evaluations_binv_fvis"], r["evaluations_bvis_finv"]
        steps = ea[-1][0]
        late_sums += [a + c for (s, a), (_, c) in zip(ea, ec) if s > steps / 2]
    return {
        "mi": float(np.mean(per_seed)),
        "mi_per_seed": per_seed,
        "mi_binv_fvis": float(np.mean([r["mi_binv_fvis"] for r in runs])),
        "mi_bvis_finv": float(np.mean([r["mi_bvis_finv"] for r in runs])),
        "mi_eval_std": float(np.std(late_sums)),
        "mi_eval_min": float(np.min(late_sums)),
        "mi_eval_max": float(np.max(late_sums)),
        "mi_evaluations": len(late_sums),
        "mi_reduce": "mean of held-out evaluations, second half of MINE training",
    }


def load_generator(model_dir, cfg):
    from indep_seg.training.experiments.ilsgan import build_model

    model = build_model(cfg)
    best = Path(model_dir) / "best" / "ckpt"
    tf.train.Checkpoint(generator=model.sampling_generator).read(str(best)).expect_partial()
    healthy = Path(model_dir) / "healthy" / "ckpt"  # the last healthy D (scores for posthoc_topk)
    if (Path(model_dir) / "healthy").exists():
        tf.train.Checkpoint(discriminator=model.discriminator).read(str(healthy)).expect_partial()
    return model


def redo_posthoc(model_dir, cfg, budget_minutes):
    """The post-hoc stage of `train_ilsgan` again on a finished run (its selected generator), with
    the post-hoc share of the budget; the run's summary records the new stage."""
    from indep_seg.training.experiments.ilsgan import posthoc_stage

    model_dir = Path(model_dir)
    path = model_dir / "ilsgan_summary.json"
    summary = json.loads(path.read_text())
    model = load_generator(model_dir, cfg)
    budget = budget_minutes * 60.0 * cfg.posthoc_budget_fraction - 20.0
    hist = posthoc_stage(
        model, cfg, model_dir, summary["selected"], summary["selection_metric"], budget
    )
    summary.update(
        posthoc=hist, posthoc_redone=True, total_seconds=summary["gan_seconds"] + hist["seconds"]
    )
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, path)


def generated_layers(model, n, seed=4321, batch=128):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, model.generator.z_dim)).astype(np.float32)
    outs = {"foreground": [], "background": [], "mask": [], "composite": []}
    for i in range(0, n, batch):
        o = model.generate(tf.constant(z[i : i + batch]))
        for k in outs:
            outs[k].append(o[k].numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def tile(rows, scale=2):
    """rows: list of [N, H, W, C] arrays in [0, 1] -> uint8 grid."""
    rows = [np.repeat(r, 3, axis=-1) if r.shape[-1] == 1 else r for r in rows]
    grid = np.concatenate([np.concatenate(list(np.clip(r, 0, 1)), axis=1) for r in rows], axis=0)
    grid = (grid * 255 + 0.5).astype(np.uint8)
    return np.kron(grid, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else grid


def parse_variant(spec):
    """`NAME` (a value of the config's `ils`) or `NAME:key=value,key=value` (overrides of
    ILSGANConfig)."""
    from indep_seg.training.experiments.ilsgan import ILSGANConfig

    name, _, rest = spec.partition(":")
    fields = {f.name: f for f in dataclasses.fields(ILSGANConfig)}
    overrides = {} if rest else {"ils": name}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=", 1)
        if k not in fields:
            raise SystemExit(f"--variant {spec}: ILSGANConfig has no field {k!r}")
        typ = type(getattr(ILSGANConfig(), k))
        overrides[k] = (v.lower() in ("1", "true", "yes")) if typ is bool else typ(v)
    return name, overrides


def _run_budget(run_dir: Path):
    """The `--budget-minutes` the run was trained with (its config.yaml), or None."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()).get("run") or {}).get("budget_minutes")


def _selection_history(run_dir: Path) -> list:
    """Each evaluated checkpoint's step and selection KID (the run's metric-selection.jsonl)."""
    path = run_dir / "metric-selection.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a torn last line
            continue
        out.append({"step": rec["step"], "kid": rec["results"].get("kid")})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--budget-minutes", type=float, default=30.0, help="per variant (GAN + post-hoc UNet)"
    )
    ap.add_argument(
        "--variants", default="mi,none", help="comma-separated values of the config's `ils`"
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:key=value,key=value (ILSGANConfig overrides), e.g. "
        "no_center:mask_center_prior=0",
    )
    ap.add_argument("--runs-dir", default=str(REPO / "runs" / "bench_ilsgan_horse"))
    ap.add_argument(
        "--run-dir",
        action="append",
        default=[],
        help="VARIANT=DIR: use this run directory for a variant",
    )
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument(
        "--redo-posthoc",
        action="store_true",
        help="with --skip-train: run the post-hoc stage again (the preset's current settings, its "
        "share of --budget-minutes) on the selected generator of each run directory",
    )
    ap.add_argument(
        "--cli",
        action="store_true",
        help="score the masks that `indep-seg segment --model RUN` writes for the crops (the "
        "README's "
        "route) instead of calling the segmenter in-process",
    )
    ap.add_argument(
        "--refine",
        choices=("grabcut", "none"),
        default="grabcut",
        help="with --cli: `indep-seg segment --refine` (default grabcut, the CLI's default)",
    )
    ap.add_argument("--mine-samples", type=int, default=2000)
    ap.add_argument("--mine-steps", type=int, default=400)
    ap.add_argument("--kid-samples", type=int, default=1000)
    ap.add_argument(
        "--skip-gan-metrics", action="store_true", help="IoU / DICE only (no KID, no MINE)"
    )
    ap.add_argument("--out", default=str(RESULTS / "ilsgan_horse.json"))
    ap.add_argument(
        "--note", default="", help="free text stored in the JSON (how the runs were made)"
    )
    args = ap.parse_args(argv)

    from indep_seg.training.context import TrainContext
    from indep_seg.training.experiments.ilsgan import (
        ILSGANConfig,
        load_training_images,
        train_ilsgan,
    )

    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return 0
    variants = {}
    for v in (v.strip() for v in args.variants.split(",")):
        if v:
            variants[v] = {"ils": v}
    for spec in args.variant:
        name, ov = parse_variant(spec)
        variants[name] = ov
    dirs = {v: Path(args.runs_dir) / f"ils_{v}" for v in variants}
    for spec in args.run_dir:
        k, d = spec.split("=", 1)
        dirs[k] = Path(d)
    halves = {h: load_eval_set(half=h) for h in ("tune", "test")}
    base = {h: baselines(gt) for h, (_, gt, _) in halves.items()}
    print("baselines: " + json.dumps({h: b["centred_disc_r_third"] for h, b in base.items()}))
    results = {
        "dataset": str(DATA),
        "eval_images": {h: len(c) for h, (c, _, _) in halves.items()},
        "halves": {
            "tune": "horse001-horse164 (settings are chosen here)",
            "test": "horse165-horse328 (reported; never tuned on)",
        },
        "protocol": "datasets/README.md: square crop half-side 0.75 max(w,h) around the GT box, "
        "black "
        "outside, 128x128, threshold 0.5",
        "baselines": base,
        # with --skip-train the runs' own budgets are in each variant's "run_budget_minutes"
        "budget_minutes_per_variant": None if args.skip_train else args.budget_minutes,
        "cpu_cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "route": f"indep-seg segment --refine {args.refine} (CLI)"
        if args.cli
        else "Segmenter.predict_crops (in-process)",
        "note": args.note,
        "variants": {},
    }
    ext, ext_name = None, None
    figure_rows = []
    for v, overrides in variants.items():
        cfg = dataclasses.replace(ILSGANConfig(), **overrides)
        d = dirs[v]
        t0 = time.time()
        train_metrics = None
        if not args.skip_train:
            train_metrics = train_ilsgan(
                cfg, TrainContext(model_dir=d, budget_minutes=args.budget_minutes)
            )
        if args.redo_posthoc:
            redo_posthoc(d, cfg, args.budget_minutes)
        summary = json.loads((d / "ilsgan_summary.json").read_text())
        entry = {"overrides": overrides}
        for h, (crops, gt, names) in halves.items():
            if args.cli:
                pred, sc = evaluate_with_cli(
                    d, crops, gt, names, d / f"cli_eval_{h}_{args.refine}", args.refine
                )
            else:
                pred, sc = evaluate_segmenter(d, crops, gt)
            entry[h] = {"iou": sc["iou"], "dice": sc["dice"]}
            if h == "test":
                pred_test, iou_test = pred, sc["iou_per_image"]
        entry.update(
            {
                "selected_step": summary["selected"]["step"],
                "steps": summary["fit"]["step"],
                "gan_seconds": summary["gan_seconds"],
                "total_seconds": summary["total_seconds"],
                "posthoc_val_iou": summary["posthoc"]["best_val_iou"],
                "restarts": summary["restarts"],
                "collapse_events": len(summary["collapse_events"]),
                "run_dir": str(d),
                "run_budget_minutes": _run_budget(d),
                "selection_history": _selection_history(d),
            }
        )
        model = load_generator(d, cfg)
        layers = generated_layers(model, max(args.mine_samples, args.kid_samples, 8))
        entry["mask_coverage"] = float((layers["mask"] > 0.5).mean())
        if not args.skip_gan_metrics:
            if ext is None:
                from indep_seg.training.experiments.ilsgan import feature_extractor

                ext, ext_name, _ = feature_extractor(cfg)
                reals = load_training_images(str(DATA), cfg.resolution)
                real_feats = metrics_gan.compute_features(reals, ext)
            feats = metrics_gan.compute_features(
                np.clip(layers["composite"][: args.kid_samples], 0, 1), ext
            )
            kid_mean, kid_std = metrics_gan.kid_from_features(
                feats, real_feats, num_subsets=50, subset_size=min(300, len(real_feats))
            )
            n = args.mine_samples
            runs = [
                metrics_gan.layer_mutual_information(
                    layers["foreground"][:n],
                    layers["background"][:n],
                    layers["mask"][:n],
                    downsample=8,
                    hidden=128,
                    steps=args.mine_steps,
                    seed=s,
                    reduce="mean",
                    return_evaluations=True,
                )
                for s in (0, 1, 2)
            ]
            entry.update(
                {
                    "kid": kid_mean,
                    "kid_std": kid_std,
                    "kid_features": ext_name,
                    **mine_summary(runs),
                }
            )
        entry["eval_seconds"] = time.time() - t0 - (train_metrics or {}).get("seconds", 0.0)
        results["variants"][v] = entry
        print(
            f"{v}: " + json.dumps({k: entry.get(k) for k in ("test", "tune", "kid", "mi", "steps")})
        )
        g = layers
        crops, gt, _ = halves["test"]
        order = np.argsort(iou_test)
        pick = order[np.linspace(0, len(order) - 1, 8).astype(int)]
        figure_rows.append(
            (
                v,
                tile(
                    [g["background"][:8], g["foreground"][:8], g["composite"][:8], g["mask"][:8]],
                    scale=4,
                ),
                tile([crops[pick], gt[pick], (pred_test[pick] > 0.5).astype(np.float32)], scale=1),
            )
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(f".json.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(results, indent=2, default=float))
        os.replace(tmp, args.out)
    # figure: per variant, generated layers (rows bg / fg / composite / mask) and test-half crops /
    # GT / prediction
    panels = []
    for v, gen, real in figure_rows:
        w = max(gen.shape[1], real.shape[1])
        pad = lambda a: np.pad(a, ((0, 0), (0, w - a.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
        bar = np.full((6, w, 3), 255, np.uint8)
        panels += [pad(gen), bar, pad(real), np.full((16, w, 3), 255, np.uint8)]
    fig = np.concatenate(panels, axis=0)
    png = Path(args.out).with_suffix(".png")
    tmp = png.with_name(png.name + f".tmp-{os.getpid()}.png")
    Image.fromarray(fig).save(tmp)
    os.replace(tmp, png)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
