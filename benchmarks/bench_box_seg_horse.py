"""Box-level segmentation on the Weizmann horses: `box_seg` vs classical baselines (all 328 photos).

Superseded for reported figures by `bench_box_seg.py`, which scores the tuning and test halves
separately (settings are chosen on the tuning half); kept for its `--study` log.

Trains the `box_seg` experiment on the 328 horse photos with boxes taken from the masks (pixel
labels are never used for training), within a wall-clock budget (default 30 minutes), then
evaluates the raw adversarial segmenter and the distilled one with the protocol of
../shared/datasets/README.md applied to the pasted-back, full-size masks (square of half-side
0.75 x max(w, h) around the ground-truth box, 128 x 128, threshold 0.5, per-image IoU / DICE
averaged), beside the filled box, the inscribed ellipse and OpenCV GrabCut (5 iterations,
initialised with the box, run on the 128 x 128 evaluation crop).

    .venv/bin/python benchmarks/bench_box_seg_horse.py [--budget-minutes 30] [--override k=v ...]

Writes benchmarks/results/box_seg_horse.json and benchmarks/results/box_seg_horse.png (rows:
image | distilled mask | ground truth, on evaluation crops). With `--study` the ground-truth IoU
of every snapshot is also logged (for the notes only: the run never uses it to choose anything).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.box_seg_eval import Evaluator as ProtocolEvaluator  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "weizmann_horse"
EVAL_RES = 128


def _atomic_write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_horses(data=DATA, max_images=0):
    """(items [(name, uint8 image, box)], gt masks [full size bool]) with boxes from the masks."""
    from PIL import Image

    from indep_seg.training.experiments.box_seg import load_box_data

    items = load_box_data(data / "rgb", masks=data / "figure_ground", max_images=max_images)
    gts = []
    for name, image, _ in items:
        stem = Path(name).stem
        m = np.asarray(Image.open(data / "figure_ground" / f"{stem}.jpg").convert("L")) > 127
        assert m.shape == image.shape[:2], name
        gts.append(m)
    return items, gts


class Evaluator(ProtocolEvaluator):
    """The README protocol on full-size masks, with a fast path for the study log."""

    # -- fast approximate path for the study log: sample the model-resolution crops directly
    def study_crops(self, crop_masks, crop_windows):
        import tensorflow as tf

        from indep_seg.box_crop import _sample_windows

        r = crop_masks.shape[1]
        cw = crop_windows
        sx = r / (cw[:, 2] - cw[:, 0])
        sy = r / (cw[:, 3] - cw[:, 1])
        w = self.windows
        inner = np.stack(
            [
                (w[:, 0] - cw[:, 0]) * sx,
                (w[:, 1] - cw[:, 1]) * sy,
                (w[:, 2] - cw[:, 0]) * sx,
                (w[:, 3] - cw[:, 1]) * sy,
            ],
            -1,
        ).astype(np.float32)
        out = _sample_windows(
            tf.convert_to_tensor(crop_masks, tf.float32),
            tf.convert_to_tensor(inner),
            EVAL_RES,
            EVAL_RES,
        )
        return out.numpy()[..., 0]


def baselines(ev: Evaluator):
    res = {}
    fulls_box, fulls_ell = [], []
    for (_, image, box), g in zip(ev.items, ev.gts):
        h, w = g.shape
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        x0, y0, x1, y1 = box
        fulls_box.append(((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.float32))
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        fulls_ell.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.float32))
    res["box"] = ev.evaluate_full(fulls_box)
    res["ellipse"] = ev.evaluate_full(fulls_ell)
    try:
        import cv2
    except ImportError:
        return res
    import tensorflow as tf

    from indep_seg.box_crop import crop_to_window

    crops = []
    for i, ((_, image, box), g) in enumerate(zip(ev.items, ev.gts)):
        img = crop_to_window(
            tf.convert_to_tensor(image[None].astype(np.float32) / 255.0),
            ev.windows[i : i + 1],
            EVAL_RES,
        ).numpy()[0]
        img8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        win = ev.windows[i]
        s = EVAL_RES / (win[2] - win[0])
        x0, y0 = int(round((box[0] - win[0]) * s)), int(round((box[1] - win[1]) * s))
        x1, y1 = int(round((box[2] - win[0]) * s)), int(round((box[3] - win[1]) * s))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, EVAL_RES), min(y1, EVAL_RES)
        mask = np.zeros((EVAL_RES, EVAL_RES), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(
                img8[..., ::-1].copy(),
                mask,
                (x0, y0, x1 - x0, y1 - y0),
                bgd,
                fgd,
                5,
                cv2.GC_INIT_WITH_RECT,
            )
            crops.append(((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32))
        except cv2.error:
            crops.append(np.zeros((EVAL_RES, EVAL_RES), np.float32))
    res["grabcut"] = ev.scores(np.stack(crops))
    return res


def evaluate_segmenter(path, ev: Evaluator):
    from indep_seg.segmenter import Segmenter

    seg = Segmenter.load(path)
    fulls = [
        np.asarray(m).reshape(g.shape)
        for m, g in zip(
            seg.predict([im for _, im, _ in ev.items], [b for _, _, b in ev.items]), ev.gts
        )
    ]
    out = ev.evaluate_full(fulls)
    out["crops"] = np.stack([ev.crop_full(i, m) for i, m in enumerate(fulls)])
    return out


def figure(ev: Evaluator, pred_crops, raw_crops, path: Path, n=10):
    """Rows: image | raw mask | distilled mask | ground truth, evaluation crops of n photos."""
    import tensorflow as tf
    from PIL import Image

    from indep_seg.box_crop import crop_to_window
    from indep_seg.models.foreground_seg_gan import to_grid

    idx = np.linspace(0, len(ev.items) - 1, n).astype(int)
    imgs = np.stack(
        [
            crop_to_window(
                tf.convert_to_tensor(ev.items[i][1][None].astype(np.float32) / 255.0),
                ev.windows[i : i + 1],
                EVAL_RES,
            ).numpy()[0]
            for i in idx
        ]
    )
    rows = [imgs]
    if raw_crops is not None:
        rows.append(imgs * (raw_crops[idx, :, :, None] > 0.5))
    rows.append(imgs * (pred_crops[idx, :, :, None] > 0.5))
    rows.append(ev.gt_crops[idx, :, :, None].astype(np.float32))
    grid = to_grid(rows)
    import io

    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    _atomic_write(path, buf.getvalue())


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--budget-minutes", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--override", nargs="*", default=[], help="BoxSegConfig fields, key=value")
    p.add_argument("--model-dir", default=None, help="run directory (default: a temporary one)")
    p.add_argument("--study", action="store_true", help="log ground-truth IoU of each snapshot")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "box_seg_horse"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0

    import keras

    from indep_seg.training.config import apply_overrides
    from indep_seg.training.context import TrainContext
    from indep_seg.training.experiments.box_seg import BoxSegConfig, train_box_seg

    keras.utils.set_random_seed(args.seed)
    cfg = apply_overrides(BoxSegConfig(), args.override) if args.override else BoxSegConfig()
    items, gts = load_horses(max_images=args.max_images)
    ev = Evaluator(items, gts)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "images": len(items),
        "budget_minutes": args.budget_minutes,
        "steps": args.steps,
        "config": dataclasses.asdict(cfg),
        "cpu_count": os.cpu_count(),
    }
    if not args.skip_baselines:
        base = baselines(ev)
        results["baselines"] = {k: {"iou": v["iou"], "dice": v["dice"]} for k, v in base.items()}
        print("baselines:", json.dumps(results["baselines"]))

    from indep_seg.box_crop import box_window

    crop_windows = box_window(ev.boxes, cfg.margin, False).numpy()
    from indep_seg.training.experiments.box_seg import make_crops

    crops = make_crops(items, cfg.resolution, cfg.margin) if args.study else None

    def study(net, phase, step):
        m = net.predict(crops, batch_size=64, verbose=0)
        return {"gt_iou_study": round(ev.scores(ev.study_crops(m, crop_windows))["iou"], 4)}

    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix="box_seg_horse_"))
    ctx = TrainContext(
        model_dir=model_dir,
        data=str(DATA / "rgb"),
        steps=args.steps,
        budget_minutes=args.budget_minutes,
        seed=args.seed,
        extra={
            "masks": str(DATA / "figure_ground"),
            "verbose": False,
            **({"study_fn": study} if args.study else {}),
        },
    )
    t0 = time.time()
    train = train_box_seg(cfg, ctx)
    results["train"] = {k: v for k, v in train.items()}
    results["train_wall_seconds"] = round(time.time() - t0, 1)
    raw = evaluate_segmenter(model_dir / "segmenter_adversarial", ev)
    results["raw"] = {"iou": raw["iou"], "dice": raw["dice"]}
    dist = None
    if train.get("phase") == "distill":
        dist = evaluate_segmenter(model_dir / "segmenter", ev)
        results["distilled"] = {"iou": dist["iou"], "dice": dist["dice"]}
    results["study_log"] = ctx.extra.get("study_log", [])
    results["model_dir"] = str(model_dir)
    out = Path(args.out)
    _atomic_write(out.with_suffix(".json"), json.dumps(results, indent=2).encode())
    figure(ev, (dist or raw)["crops"], raw["crops"] if dist else None, out.with_suffix(".png"))
    summary = {k: results[k] for k in ("raw", "distilled") if k in results}
    print("result:", json.dumps(summary), "train", results["train_wall_seconds"], "s; ->", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
