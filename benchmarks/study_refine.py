"""Study (issue #17, session 9): how `indep-seg segment` refines a network's mask, on the TUNING
halves only (horse001-164, ECSSD 0001-0500).

The refinement (`indep_seg.box_prior.refine_full_mask`) runs GrabCut from half the network's mask
and half the box prior. Session 9 changed the prior's GrabCut (the window outside the photo filled
with background, colours in Lab); this compares the refinement's GrabCut prepared the old way
(RGB, black outside the photo) and the prior's way, and the prior alone, on an existing run's
segmenter (trained on every photo's box; masks only score):

    taskset -c 1 .venv/bin/python benchmarks/study_refine.py --data horse --model-dir RUN

Session 10 adds, for every variant without `select`, its refined mask or the prior, whichever has
the higher `prior_score` (`<variant>_or_prior_by_score`, picked on the evaluation crops; adopted
as `REFINE_SELECT`, whose in-window form is the `blend_lab_fill_select` variant):

    .venv/bin/python benchmarks/study_refine.py --data ecssd --model-dir RUN \
        --variants blend_lab_fill --tag _s10

Session 11 adds `net_lab_fill` (GrabCut started from the network's mask alone) for the fresh
30-minute networks trained with the session-10 prior (`--variants
blend_lab_fill_select,net_lab_fill --tag _s11`).

Session 15 asks whether the network gets any say: at `prior_blend` 0.5 the start
`0.5 mask + 0.5 prior > 0.5` is the prior's own mask wherever the soft mask is above 0 (always), so
the default refines the prior whatever the network says. `blend0.25..0.45[_select]` give the
network the larger share, `net_alone` is the network's mask unrefined (`--variants session15`):

    taskset -c 1 .venv/bin/python benchmarks/study_refine.py --data horse --model-dir RUN \
        --variants session15 --tag _s15

Writes benchmarks/results/study_refine_<data>_tune[<tag>].json.
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

VARIANTS = {
    "blend_rgb_nofill": dict(prior_blend=0.5, colour="rgb", fill=False, select=False),
    "blend_lab_fill": dict(prior_blend=0.5, colour="lab", fill=True, select=False),
    "blend_rgb_fill": dict(prior_blend=0.5, colour="rgb", fill=True, select=False),
    # session 10's default: the refined mask or the prior by `prior_score`, in the window
    "blend_lab_fill_select": dict(prior_blend=0.5, colour="lab", fill=True, select=True),
    # session 11: GrabCut from the network's mask alone (no prior in the start), for networks
    # trained with the session-10 prior
    "net_lab_fill": dict(prior_blend=0.0, colour="lab", fill=True, select=False),
    # session 15: the network's share of the start above one half
    **{
        f"blend{w}{'_select' if sel else ''}": dict(
            prior_blend=w, colour="lab", fill=True, select=sel
        )
        for w in (0.25, 0.4, 0.45)
        for sel in (False, True)
    },
}
GROUPS = {
    "session15": ["blend_lab_fill_select", "blend_lab_fill", "net_lab_fill"]
    + [f"blend{w}{s}" for w in (0.25, 0.4, 0.45) for s in ("", "_select")]
}


def _memoised_prior():
    """`indep_seg.box_prior.box_prior`, computed once per window (each variant's refinement asks
    for the prior of the same photos again: six GrabCuts each time)."""
    import hashlib

    import indep_seg.box_prior as bp

    original, memo = bp.box_prior, {}

    def prior(image, box, *args, return_score=False, **kwargs):
        # the mask and its score are kept together: a call with or without `return_score` for
        # the same window and settings costs its six GrabCuts once
        key = hashlib.sha1(
            np.ascontiguousarray(image).tobytes()
            + np.asarray(box, np.float64).tobytes()
            + repr((args, sorted(kwargs.items()))).encode()
        ).hexdigest()
        if key not in memo:
            memo[key] = original(image, box, *args, return_score=True, **kwargs)
        mask, score = memo[key]
        return (mask, score) if return_score else mask

    bp.box_prior = prior


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["horse", "ecssd"], required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--half", default="tune", choices=["tune"], help="tuning half only")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    p.add_argument("--tag", default="", help="suffix of the results file")
    args = p.parse_args(argv)

    _memoised_prior()
    from indep_seg.box_prior import box_prior, refine_full_mask
    from indep_seg.segmenter import Segmenter

    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    seg = Segmenter.load(Path(args.model_dir) / "segmenter")
    fulls = seg.predict([im for _, im, _ in ev.items], [b for _, _, b in ev.items])
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": args.data,
        "half": args.half,
        "model_dir": args.model_dir,
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg(),
        "iou": {},
    }
    imgs, boxes = eval_crops(ev)
    prior = np.stack([box_prior(imgs[i], boxes[i]) for i in range(len(imgs))]).astype(np.float32)
    res["iou"]["prior_alone"] = round(ev.scores(prior)["iou"], 4)
    print("prior_alone", res["iou"]["prior_alone"], flush=True)
    net = np.stack([ev.crop_full(i, m) for i, m in enumerate(fulls)])
    res["iou"]["net_alone"] = round(ev.scores(net)["iou"], 4)
    print("net_alone", res["iou"]["net_alone"], flush=True)
    preds = {}
    names = [n for v in args.variants.split(",") for n in GROUPS.get(v, [v])]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(
            f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}, {sorted(GROUPS)}"
        )
    for name in names:
        kw = VARIANTS[name]
        t0 = time.time()
        refined = [refine_full_mask(im, m, b, **kw) for (_, im, b), m in zip(ev.items, fulls)]
        preds[name] = pred = np.stack([ev.crop_full(i, m) for i, m in enumerate(refined)])
        res["iou"][name] = round(ev.scores(pred)["iou"], 4)
        print(name, res["iou"][name], f"{time.time() - t0:.0f}s", flush=True)
    # session 10: the refined mask or the prior, whichever has the higher label-free
    # `prior_score` (the score that picks the prior among its GrabCut candidates)
    from indep_seg.box_prior import fill_outside_photo, prior_score

    for name, pred in [(k, v) for k, v in preds.items() if not VARIANTS[k]["select"]]:
        pick = []
        for i in range(len(imgs)):
            img = fill_outside_photo(imgs[i], boxes[i])
            r, q = pred[i] > 0.5, prior[i] > 0.5
            pick.append(r if prior_score(img, r, boxes[i]) >= prior_score(img, q, boxes[i]) else q)
        key = f"{name}_or_prior_by_score"
        res["iou"][key] = round(ev.scores(np.stack(pick).astype(np.float32))["iou"], 4)
        print(key, res["iou"][key], flush=True)
    res["load_avg_end"] = os.getloadavg()
    from benchmarks.common import write_json_atomic

    out = ROOT / "benchmarks" / "results" / f"study_refine_{args.data}_{args.half}{args.tag}.json"
    write_json_atomic(out, res)
    print("->", out, json.dumps(res["iou"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
