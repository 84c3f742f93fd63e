"""Study: per-image box priors (GrabCut variants, fallbacks) on a TUNING half only.

    .venv/bin/python benchmarks/study_box_prior.py --data horse --half tune
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


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="horse")
    p.add_argument("--half", default="tune")
    p.add_argument("--methods", default="")
    p.add_argument("--res", type=int, default=128)
    args = p.parse_args(argv)
    from benchmarks.box_seg_eval import load_dataset, Evaluator, eval_crops, baseline_masks
    from indep_seg import box_prior as bp

    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev, args.res)
    out = {}
    for k, v in baseline_masks(ev).items():
        out[k] = ev.scores(v)["iou"]
        print(k, round(out[k], 4), flush=True)
    methods = args.methods.split(",") if args.methods else list(bp.STUDY_METHODS)
    for m in methods:
        t = time.time()
        masks = np.stack([bp.STUDY_METHODS[m](imgs[i], boxes[i]) for i in range(len(imgs))])
        if masks.shape[1] != 128:
            import cv2
            masks = np.stack([cv2.resize(x.astype(np.float32), (128, 128), interpolation=cv2.INTER_LINEAR)
                              for x in masks])
        s = ev.scores(masks)
        out[m] = s["iou"]
        print(m, round(s["iou"], 4), f"{time.time() - t:.1f}s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
