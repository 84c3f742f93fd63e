"""Study: per-image box priors (GrabCut variants, fallbacks) on a TUNING half only.

    .venv/bin/python benchmarks/study_box_prior.py --data horse --half tune

Chose `indep_seg.box_prior.box_prior` (GrabCut from the box, 5 iterations, the ellipse where the
mask is degenerate; session 8: a second GrabCut with the box's core held as foreground before the
ellipse); figures in docs/box_seg_notes.md, sessions 7 and 8.
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


def _fallback(mask, box, min_fill=0.1):
    from indep_seg.box_prior import ellipse_mask, is_degenerate

    return ellipse_mask(mask.shape, box) if is_degenerate(mask, box, min_fill=min_fill) else mask


def _retry(image, box, **grabcut_kw):
    """Rect GrabCut; where degenerate, GrabCut with `grabcut_kw`; where that is too, the ellipse."""
    from indep_seg.box_prior import grabcut, is_degenerate

    mask = grabcut(image, box)
    return _fallback(grabcut(image, box, **grabcut_kw), box) if is_degenerate(mask, box) else mask


def _methods():
    from indep_seg.box_prior import box_prior, grabcut

    return {
        "gc_rect5": lambda im, b: grabcut(im, b),
        "gc_rect5_fb": lambda im, b: _fallback(grabcut(im, b), b),  # session 7's box_prior
        "gc_rect5_fb_min0.05": lambda im, b: _fallback(grabcut(im, b), b, 0.05),
        "gc_rect5_fb_min0.02": lambda im, b: _fallback(grabcut(im, b), b, 0.02),
        "gc_ell5": lambda im, b: grabcut(im, b, init="ellipse"),
        "gc_ell5_fb": lambda im, b: _fallback(grabcut(im, b, init="ellipse"), b),
        "gc_rect10_fb": lambda im, b: _fallback(grabcut(im, b, 10), b),
        # session 8: a second GrabCut where the first is degenerate
        "gc_rect5_retry_ellipse": lambda im, b: _retry(im, b, init="ellipse"),
        "gc_rect5_retry_core0.25": lambda im, b: _retry(im, b, init="core", core=0.25),
        "gc_rect5_retry_core0.5": lambda im, b: _retry(im, b, init="core", core=0.5),
        "box_prior": box_prior,  # the library's default
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="horse")
    p.add_argument("--half", default="tune")
    p.add_argument("--methods", default="")
    p.add_argument("--res", type=int, default=128)
    args = p.parse_args(argv)
    from benchmarks.box_seg_eval import Evaluator, baseline_masks, eval_crops, load_dataset

    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev, args.res)
    out = {}
    for k, v in baseline_masks(ev).items():
        out[k] = ev.scores(v)["iou"]
        print(k, round(out[k], 4), flush=True)
    study = _methods()
    methods = args.methods.split(",") if args.methods else list(study)
    for m in methods:
        t = time.time()
        masks = np.stack([study[m](imgs[i], boxes[i]) for i in range(len(imgs))])
        if masks.shape[1] != 128:
            import cv2

            masks = np.stack(
                [
                    cv2.resize(x.astype(np.float32), (128, 128), interpolation=cv2.INTER_LINEAR)
                    for x in masks
                ]
            )
        s = ev.scores(masks)
        out[m] = s["iou"]
        print(m, round(s["iou"], 4), f"{time.time() - t:.1f}s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
