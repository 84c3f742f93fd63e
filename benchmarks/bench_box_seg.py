"""Box-level segmentation with the defaults, reported on the TEST half beside box, ellipse, GrabCut.

Trains the `box_seg` experiment (defaults; `--override` for ablations, recorded in the JSON) on
every photo of a data set with its box (boxes from the masks; training never sees a pixel
label), within `--budget-minutes`, as `indep-seg train --experiment box_seg --data IMAGES
--masks MASKS --budget-minutes M` does, then scores the saved segmenter with the protocol of
../shared/datasets/README.md separately on the tuning half (where settings are chosen) and
the test half (reported), beside the filled box, the inscribed ellipse, OpenCV GrabCut from
the box and the library's per-image box prior, on the same halves.

    .venv/bin/python benchmarks/bench_box_seg.py --data horse --budget-minutes 30
    .venv/bin/python benchmarks/bench_box_seg.py --data ecssd --budget-minutes 30

Writes benchmarks/results/box_seg_<data>[_<tag>].json and a gallery PNG of the test half's best,
median and worst masks (columns: photo | mask | ground truth).
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

from benchmarks.box_seg_eval import (  # noqa: E402  (after the sys.path line)
    DATASETS,
    HALVES,
    Evaluator,
    baseline_masks,  # noqa: E402
    eval_crops,
    load_dataset,
    stems,
)

#: : the masks `indep-seg segment` writes by default (chosen on the tuning halves), shown in the
#: gallery
GALLERY_VARIANT = "final_refined_blend"


def classical(ev: Evaluator) -> dict:
    """Box, ellipse, GrabCut from the box and the library's box prior, as evaluation crops."""
    from indep_seg import box_prior as bp
    from indep_seg.box_prior import box_prior, grabcut

    out = baseline_masks(ev)
    imgs, boxes = eval_crops(ev)
    out["grabcut"] = np.stack([grabcut(imgs[i], boxes[i]) for i in range(len(imgs))]).astype(
        np.float32
    )
    # the evaluation window is the prior's context window: `clean_detail` is that window cut at
    # its resolution, as `box_priors` and `refine_full_mask` cut it from the photo
    details = [None] * len(imgs)
    if bp.PRIOR_CLEAN and bp.CLEAN_PHOTO_DETAIL:
        details = eval_crops(ev, int(round(bp.PRIOR_RESOLUTION * bp.CLEAN_SCALE)))[0]
    out["box_prior"] = np.stack(
        [box_prior(imgs[i], boxes[i], detail=details[i]) for i in range(len(imgs))]
    ).astype(np.float32)
    return out


def predict_crops(segmenter_dir, ev: Evaluator, refine=None, prior_blend=0.0):
    """Evaluation crops of a segmenter's full-size masks, refined as `indep-seg segment` does."""
    from indep_seg.box_prior import refine_full_mask
    from indep_seg.segmenter import Segmenter

    seg = Segmenter.load(segmenter_dir)
    fulls = seg.predict([im for _, im, _ in ev.items], [b for _, _, b in ev.items])
    if refine == "grabcut":
        fulls = [
            refine_full_mask(im, m, b, prior_blend=prior_blend)
            for (_, im, b), m in zip(ev.items, fulls)
        ]
    return np.stack([ev.crop_full(i, m) for i, m in enumerate(fulls)])


def gallery(ev: Evaluator, pred, iou, path: Path, title: str):
    """Best 4, median 4, worst 4 (by IoU): photo | mask | ground truth, each titled."""
    from indep_seg.gallery import save_gallery

    imgs, _ = eval_crops(ev)
    order = np.argsort(iou)
    n = len(order)
    pick = list(order[::-1][:4]) + list(order[max(0, n // 2 - 2) : n // 2 + 2]) + list(order[:4])
    labels = ["best"] * 4 + ["median"] * 4 + ["worst"] * 4
    save_gallery(
        path,
        [imgs[i] for i in pick],
        [pred[i] for i in pick],
        [ev.gt_crops[i] for i in pick],
        [f"{lab} {ev.items[i][0]} IoU {iou[i]:.2f}" for lab, i in zip(labels, pick)],
        title,
    )


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", choices=sorted(HALVES), default="horse")
    p.add_argument("--budget-minutes", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--preset",
        choices=["box_seg", "box_seg_paper"],
        default="box_seg",
        help="box_seg (the default of `indep-seg train`) or box_seg_paper (Tables 1 and 3)",
    )
    p.add_argument("--override", nargs="*", default=[], help="BoxSegConfig fields, key=value")
    p.add_argument("--model-dir", default=None, help="run directory (default: a temporary one)")
    p.add_argument("--eval-only", action="store_true", help="score an existing --model-dir")
    p.add_argument("--tag", default="")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    img_dir, mask_dir, _, _ = HALVES[args.data]
    if not (DATASETS / img_dir).is_dir():
        print(f"skipped: {DATASETS / img_dir} not found")
        return 0

    import keras

    from indep_seg.training.config import apply_overrides
    from indep_seg.training.context import TrainContext
    from indep_seg.training.experiments.box_seg import BoxSegConfig, paper_config, train_box_seg

    keras.utils.set_random_seed(args.seed)
    base = paper_config() if args.preset == "box_seg_paper" else BoxSegConfig()
    cfg = apply_overrides(base, args.override) if args.override else base
    name = (
        f"box_seg_{args.data}"
        + ("_paper" if args.preset == "box_seg_paper" else "")
        + (f"_{args.tag}" if args.tag else "")
    )
    out = ROOT / "benchmarks" / "results" / name
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": args.data,
        "preset": args.preset,
        "budget_minutes": args.budget_minutes,
        "steps": args.steps,
        "overrides": args.override,
        "config": dataclasses.asdict(cfg),
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg(),
    }
    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix=f"{name}_"))
    if not args.eval_only:
        ctx = TrainContext(
            model_dir=model_dir,
            data=str(DATASETS / img_dir),
            steps=args.steps,
            budget_minutes=args.budget_minutes,
            seed=args.seed,
            extra={"masks": str(DATASETS / mask_dir), "verbose": False},
        )
        t0 = time.time()
        results["train"] = train_box_seg(cfg, ctx)
        results["train_wall_seconds"] = round(time.time() - t0, 1)
        results["load_avg_end"] = os.getloadavg()
    results["model_dir"] = str(model_dir)
    for half in ("tune", "test"):
        items, gts = load_dataset(args.data, half)
        ev = Evaluator(items, gts)
        res = {
            "images": len(items),
            "first": stems(args.data, half)[0],
            "last": stems(args.data, half)[-1],
        }
        for k, v in classical(ev).items():
            res[k] = round(ev.scores(v)["iou"], 4)
        variants = {
            "raw": (model_dir / "segmenter_adversarial", None, 0.0),
            "final": (model_dir / "segmenter", None, 0.0),
            "final_refined": (model_dir / "segmenter", "grabcut", 0.0),
            "final_refined_blend": (model_dir / "segmenter", "grabcut", 0.5),
        }
        for k, (path, refine, blend) in variants.items():
            if not path.is_dir():
                continue
            pred = predict_crops(path, ev, refine, blend)
            s = ev.scores(pred)
            res[k] = round(s["iou"], 4)
            res[k + "_dice"] = round(s["dice"], 4)
            if k == GALLERY_VARIANT and half == "test":
                gallery(
                    ev,
                    pred,
                    s["per_image_iou"],
                    out.with_name(name + "_gallery.png"),
                    f"{args.data} test half: best, median, worst (IoU)",
                )
        results[half] = res
        print(half, json.dumps(res), flush=True)
    from benchmarks.common import write_json_atomic

    write_json_atomic(out.with_suffix(".json"), results)
    print("->", out.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
