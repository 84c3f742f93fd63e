"""`indep-seg count --model PATH IMAGE`: instance count and centres of one dense image, plus an overlay.

Uses the centre counter a `hoc` / `hoc_paper` training run writes to ``MODEL_DIR/counter/``
(learned from the generator's own composites, never from labels: docs/counting.md). Prints
``{"count": n, "centres": [[x, y], ...], ...}`` as JSON and writes the overlay PNG (default:
``<image stem>_count.png`` beside the current directory, or ``--overlay PATH``).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="training --model-dir of a hoc run (or its counter/ folder)")
    parser.add_argument("image", help="the image to count (PNG/JPEG/TIFF; gray, RGB, RGBA, 8 or 16 bit)")
    parser.add_argument("--overlay", default=None,
                        help="overlay PNG to write (default: ./<image stem>_count.png)")
    parser.add_argument("--window", type=int, default=None,
                        help="window in pixels of IMAGE that matches one training patch "
                             "(default: the training run's window)")
    parser.add_argument("--threshold", type=float, default=0.3,
                        help="minimum heatmap peak value of a centre (default 0.3)")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="report the raw heatmap mass, without dividing it by the mass the counter gives "
                             "one clear single instance of this image (counting.single_instance_mass)")
    parser.add_argument("--json-out", default=None, help="also write the JSON to this file")


def run(args) -> int:
    from indep_seg.cli import CommandError
    from indep_seg.hoc import counting
    from indep_seg.hoc.image_io import load_image

    try:
        image = load_image(args.image)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CommandError(str(e)) from None
    try:
        counter, meta = counting.load_counter(args.model)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    except Exception as e:  # a damaged file
        raise CommandError(f"model: cannot load the counter from {args.model} ({type(e).__name__}: {e})") from None
    window = int(args.window or meta["window"])
    h, w = image.shape[:2]
    if window < 2:
        raise CommandError(f"--window: expected at least 2 px, got {window}")
    if window > min(h, w):
        raise CommandError(f"image: {args.image} is {w}x{h} pixels, smaller than the counting window "
                           f"({window} px); give a larger image or a smaller --window")
    if not 0 <= args.threshold <= 1:
        raise CommandError(f"--threshold: expected a number in [0, 1], got {args.threshold}")
    result = counting.count_image(counter, image, window, int(meta["resolution"]), float(meta["sigma"]),
                                  threshold=args.threshold, grayscale=bool(meta.get("grayscale", False)),
                                  calibrate=not args.no_calibrate)
    overlay = Path(args.overlay) if args.overlay else Path(Path(args.image).stem + "_count.png")
    from PIL import Image

    ov = counting.draw_overlay(image, result["centres"], radius=max(3.0, window / 5.0))
    tmp = overlay.with_name(f"{overlay.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(ov).save(tmp, format="PNG")
        os.replace(tmp, overlay)
    except OSError as e:
        raise CommandError(f"--overlay: cannot write {overlay} ({e})") from None
    out = {"count": result["count"], "centres": result["centres"], "mass": result["mass"],
           "count_raw": result["count_raw"], "calibration": result["calibration"],
           "calibration_instances": result["calibration_instances"],
           "num_peaks": result["num_peaks"], "window": window, "overlay": str(overlay)}
    text = json.dumps(out)
    if args.json_out:
        tmpj = f"{args.json_out}.tmp-{os.getpid()}"
        with open(tmpj, "w") as f:
            f.write(text + "\n")
        os.replace(tmpj, args.json_out)
    sys.stdout.write(text + "\n")
    return 0
