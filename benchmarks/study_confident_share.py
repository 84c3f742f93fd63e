"""Study (issue #17, session 16): does a network anchored only to the confident priors do better
where the prior is unsure? TUNING halves only (horse001-164, ECSSD 0001-0500).

`box_seg --override prior_confident_share=0.5` trains with the prior-consistency term on the half
of the collection whose priors score highest (`prior_score`, the collection's own median:
ILSGAN's top-k filtering, "Simple Does It"'s trusted labels); the other half is left to the
adversarial, area and box terms. This splits the tuning half's photos by that threshold (read
from the run's shard manifest, `--threshold-run`) and scores, on each part, the network alone,
GrabCut from the network (`prior_blend=0`, no select), the `segment` default and the prior, and
the rule "the default where the prior is confident, GrabCut from the network where it is not":

    taskset -c 0 .venv/bin/python benchmarks/study_confident_share.py --data horse \
        --model-dir RUN --tag _cs05

Writes benchmarks/results/study_confident_share_<data>_tune<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.box_seg_eval import Evaluator, eval_crops, load_dataset  # noqa: E402
from benchmarks.study_refine import _memoised_prior  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["horse", "ecssd"], required=True)
    p.add_argument("--model-dir", required=True, help="the run whose network is scored")
    p.add_argument(
        "--threshold-run",
        default=None,
        help="the run whose shard manifest gives the median prior score (default: --model-dir)",
    )
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)

    _memoised_prior()
    from indep_seg.box_prior import box_prior, refine_full_mask
    from indep_seg.segmenter import Segmenter

    manifest = json.loads(
        (Path(args.threshold_run or args.model_dir) / "box_shards" / "shards.json").read_text()
    )
    threshold = float(manifest["prior_score_percentiles"][50])
    items, gts = load_dataset(args.data, "tune")
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": args.data,
        "half": "tune",
        "model_dir": args.model_dir,
        "threshold": threshold,
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg(),
    }
    seg = Segmenter.load(Path(args.model_dir) / "segmenter")
    fulls = seg.predict([im for _, im, _ in ev.items], [b for _, _, b in ev.items])
    pairs = list(zip(ev.items, fulls))
    masks = {
        "network": [ev.crop_full(i, m) for i, m in enumerate(fulls)],
        "grabcut_from_network": [
            ev.crop_full(i, refine_full_mask(im, m, b, prior_blend=0.0, select=False))
            for i, ((_, im, b), m) in enumerate(pairs)
        ],
        "segment_default": [
            ev.crop_full(i, refine_full_mask(im, m, b)) for i, ((_, im, b), m) in enumerate(pairs)
        ],
    }
    scores = []
    prior = []
    for i in range(len(imgs)):
        mask, score = box_prior(imgs[i], boxes[i], return_score=True)
        prior.append(mask.astype(np.float32))
        scores.append(score)
    masks["prior"] = prior
    iou = {k: ev.scores(np.stack(v).astype(np.float32))["per_image_iou"] for k, v in masks.items()}
    unsure = np.asarray(scores) < threshold
    res["photos"] = {"confident": int((~unsure).sum()), "unconfident": int(unsure.sum())}
    res["iou"] = {
        k: {
            "all": round(float(v.mean()), 4),
            "confident": round(float(v[~unsure].mean()), 4),
            "unconfident": round(float(v[unsure].mean()), 4),
        }
        for k, v in iou.items()
    }
    rule = np.where(unsure, iou["grabcut_from_network"], iou["segment_default"])
    res["iou"]["default_where_confident_else_grabcut_from_network"] = round(float(rule.mean()), 4)
    res["load_avg_end"] = os.getloadavg()
    from benchmarks.common import write_json_atomic

    out = ROOT / "benchmarks" / "results" / f"study_confident_share_{args.data}_tune{args.tag}.json"
    write_json_atomic(out, res)
    print("->", out, json.dumps(res["iou"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
