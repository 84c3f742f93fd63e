"""Study (session 11): clean the prior's candidate masks, and keep small ones that meet their box.

    .venv/bin/python benchmarks/study_prior_select.py --data horse --half tune   # fills the cache
    .venv/bin/python benchmarks/study_prior_clean.py --data horse --half tune --study clean
    .venv/bin/python benchmarks/study_prior_clean.py --data horse --half tune --study small

Session 10's gallery showed GrabCut candidates with thin specks on the box's edges (ECSSD 0994):
`box_tightness` counts a row or column as met by any pixel, so a speck is rewarded as if the
object reached that edge, and the chosen mask carries it. Here each candidate of the cache of
`study_prior_select.py` (the same GrabCut masks as `box_prior`) is cleaned in a label-free way
before `prior_score` ranks the candidates:
- `keep=f`: keep the connected components whose area is at least f x the largest one's (f = 1:
  the largest alone);
- `holes=h`: fill holes smaller than h x the mask's area (h = 1: every hole);
- `open=r`: a binary opening with a disc of r pixels of the 128-px window.
Not adopted: the best variant gained 0.0018 on horse001-164, within GrabCut's seed spread.

`--study small`: `is_degenerate` dropped every candidate under 0.1 of its box, a statistic of
these data sets (no tuning-half horse is under 0.25; 13 ECSSD objects are), while issue #17's
held-out frames hold objects filling down to 0.06 of their box. A small candidate is now kept
when it meets its box (`box_tightness` >= `SMALL_MASK_MEET`); rows: `min_meet` 1.01 (the old
rule) and 0.7-0.95, the mean IoU and that of the objects under 0.25 of their box.
Variants are chosen on the tuning halves only (horse001-164, ECSSD 0001-0500); the test halves are
scored once, after the choice, with `--half test --variants NAME`.
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

GC6 = ["rect_lab", "rect_rgb", "core_lab", "core_rgb", "rect_lab_s1", "rect_rgb_s1"]


def clean(mask, keep=0.0, holes=0.0, open_r=0):
    """One candidate cleaned (see the module docstring); boolean like `mask`."""
    from scipy import ndimage

    m = np.asarray(mask, bool)
    if open_r > 0 and m.any():
        yy, xx = np.mgrid[-open_r : open_r + 1, -open_r : open_r + 1]
        opened = ndimage.binary_opening(m, structure=xx**2 + yy**2 <= open_r**2)
        m = opened if opened.any() else m
    if keep > 0 and m.any():
        lab, n = ndimage.label(m)
        if n > 1:
            areas = np.bincount(lab.ravel())[1:]
            m = np.isin(lab, 1 + np.flatnonzero(areas >= keep * areas.max()))
    if holes > 0 and m.any():
        filled = ndimage.binary_fill_holes(m)
        hole = filled & ~m
        if hole.any():
            lab, n = ndimage.label(hole)
            areas = np.bincount(lab.ravel())[1:]
            small = np.arange(1, n + 1)
            if holes < 1:
                small = 1 + np.flatnonzero(areas < holes * m.sum())
            m = m | np.isin(lab, small)
    return m


def variants():
    v = {"none": {}}
    for f in (0.05, 0.1, 0.2, 0.5, 1.0):
        v[f"keep{f}"] = {"keep": f}
    for h in (0.02, 0.1, 1.0):
        v[f"holes{h}"] = {"holes": h}
    for r in (1, 2):
        v[f"open{r}"] = {"open_r": r}
    for f in (0.1, 0.2, 1.0):
        v[f"keep{f}_holes0.1"] = {"keep": f, "holes": 0.1}
        v[f"open1_keep{f}"] = {"open_r": 1, "keep": f}
    return v


def choose(imgs, boxes, masks, opts, score_clean=True, output_clean=True, min_meet=None):
    """Per photo: every GC6 candidate cleaned with `opts`; degenerate ones dropped
    (`is_degenerate`, with `min_meet` if given); the highest `prior_score` (on the cleaned or the
    raw mask) wins; its cleaned or raw mask is the answer; the ellipse where none is kept."""
    from indep_seg.box_prior import SMALL_MASK_MEET, ellipse_mask, is_degenerate, prior_score

    meet = SMALL_MASK_MEET if min_meet is None else min_meet

    out = []
    for i in range(len(imgs)):
        best, best_s = None, -np.inf
        for k in GC6:
            raw = masks[k][i]
            if not raw.any() or is_degenerate(raw, boxes[i], min_meet=meet):
                continue
            c = clean(raw, **opts)
            if is_degenerate(c, boxes[i], min_meet=meet):
                continue
            s = prior_score(imgs[i], c if score_clean else raw, boxes[i])
            if s > best_s:
                best, best_s = (c if output_clean else raw), s
        out.append(best if best is not None else ellipse_mask(imgs[i].shape, boxes[i]))
    return np.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="horse")
    p.add_argument("--half", default="tune")
    p.add_argument("--cache", default="/tmp/study_prior_select")
    p.add_argument("--study", choices=["clean", "small"], default="clean")
    p.add_argument("--variants", default="", help="comma-separated (default all)")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    from benchmarks.box_seg_eval import Evaluator, eval_crops, load_dataset
    from indep_seg.box_prior import fill_outside_photo

    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)
    imgs = np.stack([fill_outside_photo(im, b) for im, b in zip(imgs, boxes)])
    z = np.load(Path(args.cache) / f"{args.data}_{args.half}.npz", allow_pickle=True)
    masks = {k: z[f"m_{k}"] for k in GC6}
    out = {"data": args.data, "half": args.half, "n": len(items), "iou": {}}
    if args.study == "small":
        from indep_seg.box_prior import box_mask

        r = imgs.shape[1]
        fill = np.array([g[box_mask((r, r), b)].mean() for g, b in zip(ev.gt_crops, boxes)])
        low = fill < 0.25
        out["objects_under_0.25_of_box"] = int(low.sum())
        for t in (1.01, 0.95, 0.9, 0.8, 0.7):
            pick = choose(imgs, boxes, masks, {}, min_meet=t)
            iou = ev.scores(pick.astype(np.float32))["per_image_iou"]
            out["iou"][f"min_meet={t}"] = float(iou.mean())
            out["iou"][f"min_meet={t}, under 0.25"] = float(iou[low].mean()) if low.any() else None
            print(f"min_meet {t}: {iou.mean():.4f}, under 0.25 (n={low.sum()}): "
                  f"{iou[low].mean() if low.any() else float('nan'):.3f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        return
    allv = variants()
    names = args.variants.split(",") if args.variants else list(allv)
    for name in names:
        t = time.time()
        for mode, sc, oc in (("", True, True), ("/score_only", True, False)):
            if name == "none" and mode:
                continue
            m = choose(imgs, boxes, masks, allv[name], sc, oc)
            iou = ev.scores(m.astype(np.float32))["iou"]
            out["iou"][name + mode] = iou
            print(f"{name + mode:28s} {iou:.4f}  ({time.time() - t:.0f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
