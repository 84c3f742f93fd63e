"""Study (issue #21, session 13): how `indep-seg segment` refines a box-free mask, on the TUNING
half only (horse001-164).

`indep_seg.refine.refine_unboxed` runs GrabCut from the network's own confidence: certain where
the soft mask is within `confident` of 0 or 1, probable (split at 0.5) elsewhere. This scores the
masks of an ILSGAN run's post-hoc UNet (`indep-seg segment --refine none`, as
`bench_ilsgan_horse.py --cli --refine none` writes them to RUN/cli_eval_tune_none/masks) unrefined
and refined with each `confident` and colour space:

    taskset -c 0 .venv/bin/python benchmarks/study_ilsgan_refine.py --run-dir RUN

Writes benchmarks/results/study_ilsgan_refine_tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_ilsgan_horse import load_eval_set  # noqa: E402
from indep_seg.metrics import iou  # noqa: E402
from indep_seg.refine import refine_unboxed  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", required=True, help="an ilsgan run scored with --refine none")
    ap.add_argument("--confident", default="0.02,0.05,0.1,0.2")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/study_ilsgan_refine_tune.json"))
    args = ap.parse_args(argv)
    from PIL import Image

    crops, gt, names = load_eval_set(half="tune")
    masks_dir = Path(args.run_dir) / "cli_eval_tune_none" / "masks"
    pred = np.stack(
        [
            np.asarray(Image.open(masks_dir / (Path(n).stem + ".png")).convert("L"), np.float32)
            / 255.0
            for n in names
        ]
    )
    t0 = time.time()
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "half": "tune: horse001-horse164 (settings are chosen here)",
        "run_dir": str(args.run_dir),
        "masks": str(masks_dir),
        "share_certain_foreground": float((pred > 0.95).mean()),
        "share_certain_background": float((pred < 0.05).mean()),
        "iou": {"unrefined": iou(pred[..., None], gt)},
    }
    print("unrefined", round(out["iou"]["unrefined"], 4), flush=True)
    for colour in ("rgb", "lab"):
        for c in (float(v) for v in args.confident.split(",")):
            ref = np.stack(
                [refine_unboxed(x, m, confident=c, colour=colour) for x, m in zip(crops, pred)]
            )
            key = f"{colour}_confident_{c:g}"
            out["iou"][key] = iou(ref[..., None], gt)
            print(key, round(out["iou"][key], 4), flush=True)
    out["seconds"] = time.time() - t0
    tmp = Path(args.out).with_suffix(f".json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
