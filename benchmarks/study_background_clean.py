"""Study (issue #17, session 17): the prior cleaned of the background GrabCut's foreground colour
model absorbed (`indep_seg.box_prior.clean_prior`). TUNING halves to choose (horse001-164, ECSSD
0001-0500); a test half is scored once, after the choice, with `--half test --variants default`.

Session 16's median masks on the horses' tuning half showed one failure on nearly every photo: the
ground between the legs and under the belly kept with the horse (73 % of the default output's
wrong pixels there are false positives). GrabCut from a box starts its foreground colour model
from the whole box, which for a horse is half ground; the model keeps the ground's colours and the
smoothness term keeps the ground. `clean_prior` runs GrabCut once more from the chosen candidate,
with the candidate's pixels whose colour the background outside the box explains better
(`outside_likelier`: log p_out - log p_mask > margin, colour histograms) started as probable
background, and keeps the result where it is not degenerate, meets its tight box's rows and
columns at most `slack` less than the candidate, and scores at least its `prior_score`.

Variants are `margin:colour:slack[:scale]` (colour: the space of the histogram and GrabCut, `lab`
or `rgb`; slack `always` = no tightness or score check; scale: the window enlarged for the
cleaning GrabCut, 1 when not given, or `photo`: the window cut from the photo at `CLEAN_SCALE` x
128 pixels, `CLEAN_PHOTO_DETAIL`, session 18) or `default` (the library's constants):

    taskset -c 0 .venv/bin/python benchmarks/study_background_clean.py --data horse \\
        --variants 0:lab:0.02,-1:lab:0.02,0:rgb:0.02,0:lab:always,0:lab:0.02:2

The untagged results of 2026-12-05 20:31-20:41 UTC were measured before `CLEAN_SCALE`
existed: their `default` is scale 1; the `_s17b` results name every scale.

Writes benchmarks/results/study_background_clean_<data>_<half><tag>.json (mean IoU of the
uncleaned prior and of each variant, photos changed, CPU seconds of the cleaning per photo) and,
for the first variant, a gallery of the photos it changes most, gains and losses (`..._gallery.png`:
photo | prior | cleaned | truth).
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


def _variant(name: str) -> dict:
    from indep_seg import box_prior as bp

    if name == "default":
        return dict(
            colour=bp.PRIOR_COLOUR, margin=0.0, slack=None, select=True, photo=bp.CLEAN_PHOTO_DETAIL
        )
    margin, colour, slack, *scale = name.split(":")
    if scale == ["photo"]:
        return dict(colour=colour, margin=float(margin), slack=float(slack), photo=True)
    scale = float(scale[0]) if scale else 1.0
    if slack == "always":
        return dict(colour=colour, margin=float(margin), slack=None, select=False, scale=scale)
    return dict(colour=colour, margin=float(margin), slack=float(slack), select=True, scale=scale)


def main(argv=None):
    from indep_seg import box_prior as bp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["horse", "ecssd"], required=True)
    p.add_argument("--half", choices=["tune", "test"], default="tune")
    p.add_argument(
        "--variants", default="default", help="comma-separated margin:colour:slack[:scale]"
    )
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    opts = {v: _variant(v) for v in variants}

    t0, load0 = time.time(), os.getloadavg()
    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)
    windows = [bp.stretch_low_range(bp.fill_outside_photo(i, b)) for i, b in zip(imgs, boxes)]
    details = [None] * len(windows)
    if any(o.get("photo") for o in opts.values()):
        # the evaluation window is the prior's context window (`EVAL_MARGIN` = `PRIOR_CONTEXT`):
        # cut from the photo at `CLEAN_SCALE` x 128 and prepared as `box_prior` prepares it
        side = int(round(bp.PRIOR_RESOLUTION * bp.CLEAN_SCALE))
        big, big_boxes = eval_crops(ev, side)
        details = [
            bp.stretch_low_range(bp.fill_outside_photo(i, b)) for i, b in zip(big, big_boxes)
        ]
    priors = np.stack([bp.box_prior(i, b, clean=False) for i, b in zip(imgs, boxes)])
    print(f"uncleaned priors: {time.time() - t0:.0f} s", flush=True)
    cleaned, seconds_per_photo = {}, {}
    for v, o in opts.items():
        t = time.process_time()
        kw = {k: x for k, x in o.items() if k != "photo"}
        cleaned[v] = np.stack(
            [
                bp.clean_prior(w, b, m, detail=d if o.get("photo") else None, **kw)
                for w, b, m, d in zip(windows, boxes, priors, details)
            ]
        )
        seconds_per_photo[v] = round((time.process_time() - t) / len(priors), 3)
    per_photo = {"prior": ev.scores(priors.astype(np.float32))["per_image_iou"]}
    per_photo.update(
        {v: ev.scores(m.astype(np.float32))["per_image_iou"] for v, m in cleaned.items()}
    )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        "data": args.data,
        "half": args.half,
        "photos": len(items),
        "load_avg_start": load0,
        "iou": {k: round(float(v.mean()), 4) for k, v in per_photo.items()},
        "changed": {v: int((m != priors).any(axis=(1, 2)).sum()) for v, m in cleaned.items()},
        "clean_cpu_seconds_per_photo": seconds_per_photo,
        "seconds": round(time.time() - t0, 1),
        "load_avg_end": os.getloadavg(),
    }
    print(json.dumps(result["iou"]), result["changed"], flush=True)
    from benchmarks.common import write_json_atomic
    from indep_seg.gallery import titled_grid
    from indep_seg.imageio import write_png

    stem = f"study_background_clean_{args.data}_{args.half}{args.tag}"
    write_json_atomic(ROOT / "benchmarks" / "results" / f"{stem}.json", result)

    first = variants[0]
    gain = per_photo[first] - per_photo["prior"]
    order = np.argsort(gain)
    rows = [int(i) for i in list(order[-4:][::-1]) + list(order[:4]) if gain[i] != 0]
    if rows:
        grid = titled_grid(
            [
                [
                    imgs[i],
                    _overlay(imgs[i], priors[i]),
                    _overlay(imgs[i], cleaned[first][i]),
                    _overlay(imgs[i], ev.gt_crops[i]),
                ]
                for i in rows
            ],
            ["photo", "prior", f"cleaned ({first})", "truth"],
        )
        write_png(ROOT / "benchmarks" / "results" / f"{stem}_gallery.png", grid)
        print(
            "gallery rows:",
            [
                (
                    items[i][0],
                    round(float(per_photo["prior"][i]), 3),
                    round(float(per_photo[first][i]), 3),
                )
                for i in rows
            ],
        )
    return result


def _overlay(image, mask):
    """The photo dimmed where the mask is 0."""
    m = np.asarray(mask, bool)[..., None]
    return np.where(m, image, (np.asarray(image) * 0.3).astype(np.uint8)).astype(np.uint8)


if __name__ == "__main__":
    main()
