"""Study: choose each photo's prior among several GrabCut masks by label-free evidence.

    .venv/bin/python benchmarks/study_prior_select.py --data horse --half tune
    .venv/bin/python benchmarks/study_prior_select.py --data ecssd --half tune

One GrabCut setting does not suit every photo (session 9: Lab wins the horses, the union with RGB
wins ECSSD). Here every photo gets several candidate masks (GrabCut in RGB and Lab, from the box
and with the box's core held, the inscribed ellipse), each is scored without ground truth, and a
rule picks one per photo. The scores are what a box says about its object:
- `contrast`: 1 - Bhattacharyya coefficient of the colour histograms of the mask and of the
  background outside the box (`colour_contrast`): the object is unlike the background;
- `tight`: the box is tight, so every row and column of the box meets the object (the projection
  prior of BoxInst, Tian et al. 2021): the mean over the box's rows and columns of "the mask
  reaches this row / column";
- degenerate masks (`is_degenerate`) are never chosen.
The masks are cached (`--cache`), so that rules cost nothing to add; the oracle (the best
candidate by IoU) is printed as an upper bound only. Rules are chosen on the tuning halves;
adopted: `gc6_contrast_x_tight2`, now `indep_seg.box_prior.box_prior` (`PRIOR_CANDIDATES`,
`prior_score`); the test halves are measured once, after the choice, by
`benchmarks/study_box_prior.py --half test --methods final`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _candidates():
    from indep_seg.box_prior import CORE_SEED_SCALE, ellipse_mask, grabcut

    def core(img, box, colour):
        m = grabcut(img, box, init="core", colour=colour)
        seed = ellipse_mask(m.shape, box, CORE_SEED_SCALE)
        # a mask that did not grow past its seed holds no evidence (as `box_prior`)
        return m if (m & ~seed).sum() > 0.05 * seed.sum() else np.zeros_like(m)

    return {
        "rect_lab": lambda im, b: grabcut(im, b, colour="lab"),
        "rect_rgb": lambda im, b: grabcut(im, b, colour="rgb"),
        "rect_lab_s1": lambda im, b: grabcut(im, b, colour="lab", seed=1),
        "rect_rgb_s1": lambda im, b: grabcut(im, b, colour="rgb", seed=1),
        "core_lab": lambda im, b: core(im, b, "lab"),
        "core_rgb": lambda im, b: core(im, b, "rgb"),
        "ellipse": lambda im, b: ellipse_mask(im.shape, b),
    }


def compute(imgs, boxes, names):
    """`{name: [N, r, r] bool}` candidate masks and `{name: {score: [N]}}` their label-free
    scores."""
    from indep_seg.box_prior import (
        box_tightness,
        colour_contrast,
        fill_outside_photo,
        is_degenerate,
    )

    cands = _candidates()
    masks = {k: [] for k in names}
    scores = {k: {"contrast": [], "contrast_lab": [], "tight": [], "degenerate": []} for k in names}
    import cv2

    for i in range(len(imgs)):
        img = fill_outside_photo(imgs[i], boxes[i])
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
        for k in names:
            m = cands[k](img, boxes[i])
            masks[k].append(m)
            s = scores[k]
            s["contrast"].append(colour_contrast(img, m, boxes[i]))
            s["contrast_lab"].append(colour_contrast(lab, m, boxes[i]))
            s["tight"].append(box_tightness(m, boxes[i]))
            s["degenerate"].append(bool(is_degenerate(m, boxes[i])))
        if i % 50 == 0:
            print(f"  {i}/{len(imgs)}", flush=True)
    return (
        {k: np.stack(v) for k, v in masks.items()},
        {k: {n: np.asarray(v) for n, v in s.items()} for k, s in scores.items()},
    )


def select(masks, scores, names, key):
    """Per photo, the candidate among `names` with the highest `key(scores of it)` among the
    non-degenerate ones; the ellipse where all are degenerate."""
    n = len(next(iter(masks.values())))
    out = []
    for i in range(n):
        best, best_v = None, -np.inf
        for k in names:
            s = {m: v[i] for m, v in scores[k].items()}
            if s["degenerate"]:
                continue
            v = key(s)
            if v > best_v:
                best, best_v = k, v
        out.append(masks[best][i] if best is not None else masks["ellipse"][i])
    return np.stack(out)


def session9_prior(masks, scores):
    """Session 9's `box_prior` from the cache: rect Lab; where degenerate, core Lab; then the
    ellipse."""
    out = []
    for i in range(len(masks["rect_lab"])):
        if not scores["rect_lab"]["degenerate"][i]:
            out.append(masks["rect_lab"][i])
        elif not scores["core_lab"]["degenerate"][i]:
            out.append(masks["core_lab"][i])
        else:
            out.append(masks["ellipse"][i])
    return np.stack(out)


def rules():
    c, t = "contrast", "tight"
    gc4 = ["rect_lab", "rect_rgb", "core_lab", "core_rgb"]
    gc6 = gc4 + ["rect_lab_s1", "rect_rgb_s1"]
    lab3 = ["rect_lab", "rect_lab_s1", "core_lab"]
    return {
        "lab_or_rgb_contrast": (["rect_lab", "rect_rgb"], lambda s: s[c]),
        "lab_or_rgb_contrast_x_tight": (["rect_lab", "rect_rgb"], lambda s: s[c] * s[t]),
        "gc4_contrast": (gc4, lambda s: s[c]),
        "gc4_contrast_x_tight": (gc4, lambda s: s[c] * s[t]),
        "gc4_contrastlab_x_tight": (gc4, lambda s: s["contrast_lab"] * s[t]),
        "gc6_contrast_x_tight": (gc6, lambda s: s[c] * s[t]),
        "gc6_contrast_x_tight2": (gc6, lambda s: s[c] * s[t] ** 2),
        "gc6_contrast+tight": (gc6, lambda s: s[c] + s[t]),
        "gc6+ell_contrast_x_tight": (gc6 + ["ellipse"], lambda s: s[c] * s[t]),
        **{f"gc6_contrast_x_tight{k}": (gc6, lambda s, k=k: s[c] * s[t] ** k) for k in (3, 4, 6)},
        **{f"gc4_contrast_x_tight{k}": (gc4, lambda s, k=k: s[c] * s[t] ** k) for k in (2, 3, 4)},
        **{f"lab3_contrast_x_tight{k}": (lab3, lambda s, k=k: s[c] * s[t] ** k) for k in (2, 3)},
        **{
            f"rect2_core2_lab_x_tight{k}": (
                ["rect_lab", "rect_rgb", "core_lab"],
                lambda s, k=k: s[c] * s[t] ** k,
            )
            for k in (2, 3)
        },
        "gc6_tight_only": (gc6, lambda s: s[t] + 1e-3 * s[c]),
        "gc6+ell_contrast_x_tight2": (gc6 + ["ellipse"], lambda s: s[c] * s[t] ** 2),
    }


def worst_figure(ev, imgs, old, new, path, n=8):
    """The `n` photos where `new` scores lowest: window | truth | `old` | `new`, IoUs in the
    row's corner."""
    from PIL import Image, ImageDraw

    iou = ev.scores(new.astype(np.float32))["per_image_iou"]
    iou_old = ev.scores(old.astype(np.float32))["per_image_iou"]
    order = np.argsort(iou)[:n]
    r = imgs.shape[1]

    def rgb(m):
        return np.repeat((np.asarray(m, bool)[..., None] * 255).astype(np.uint8), 3, -1)

    rows = [
        np.concatenate([imgs[i], rgb(ev.gt_crops[i]), rgb(old[i]), rgb(new[i])], 1) for i in order
    ]
    grid = Image.fromarray(np.concatenate([np.zeros((16, 4 * r, 3), np.uint8)] + rows, 0))
    d = ImageDraw.Draw(grid)
    for c, t in enumerate(["photo (window)", "truth", "session-9 prior", "session-10 prior"]):
        d.text((c * r + 4, 2), t, fill=(255, 255, 255))
    for k, i in enumerate(order):
        text = f"{ev.items[i][0]} s9 {iou_old[i]:.2f} s10 {iou[i]:.2f}"
        d.text((2, 16 + k * r + 2), text, fill=(255, 255, 0))
    grid.save(path)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="horse")
    p.add_argument("--half", default="tune")
    p.add_argument("--cache", default="/tmp/study_prior_select")
    p.add_argument("--rules", default="", help="comma-separated rule names (default all)")
    p.add_argument("--json", default="")
    p.add_argument("--figure", default="", help="PNG of the adopted rule's worst photos")
    args = p.parse_args(argv)
    from benchmarks.box_seg_eval import Evaluator, baseline_masks, eval_crops, load_dataset

    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)
    names = list(_candidates())
    cache = Path(args.cache) / f"{args.data}_{args.half}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        masks = {k: z[f"m_{k}"] for k in names}
        scores = {k: z[f"s_{k}"].item() for k in names}
    else:
        t = time.time()
        masks, scores = compute(imgs, boxes, names)
        print(f"candidates: {time.time() - t:.0f} s", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            **{f"m_{k}": v for k, v in masks.items()},
            **{f"s_{k}": np.asarray(scores[k], dtype=object) for k in names},
        )
        tmp.rename(cache)
    out = {"data": args.data, "half": args.half, "n": len(items), "iou": {}}

    def report(name, m):
        out["iou"][name] = ev.scores(m.astype(np.float32))["iou"]
        print(f"{name:32s} {out['iou'][name]:.4f}", flush=True)

    for k, v in baseline_masks(ev).items():
        report(k, v)
    for k in names:
        report(k, masks[k])
    report("session9_prior", session9_prior(masks, scores))
    per = np.stack([ev.scores(masks[k].astype(np.float32))["per_image_iou"] for k in names])
    out["iou"]["oracle (upper bound, not a rule)"] = float(per.max(0).mean())
    print(f"oracle {per.max(0).mean():.4f}")
    chosen = args.rules.split(",") if args.rules else list(rules())
    for r in chosen:
        cand, key = rules()[r]
        report(r, select(masks, scores, cand, key))
    if args.figure:
        cand, key = rules()["gc6_contrast_x_tight2"]
        new = select(masks, scores, cand, key)
        worst_figure(ev, imgs, session9_prior(masks, scores), new, args.figure)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
