"""`indep-seg count --model PATH IMAGE...`: instance count, centres and instance label map of
images.

Uses the centre counter a `hoc` / `hoc_paper` training run writes to ``MODEL_DIR/counter/``
(learned from the generator's own composites, never from labels: docs/counting.md), trained once on
one or several images of a kind and applied to any number of images of that kind.

One image: prints ``{"count": n, "centres": [[x, y], ...], ...}`` as one JSON object (as before,
with ``labels``, ``count_learned``, ``count_log``, ``kind`` ... added), writes the overlay PNG
(default ``./<image stem>_count.png`` or ``--overlay PATH``) and the instance label map as a 16-bit
PNG (default ``<stem>_labels.png`` beside the overlay, or ``--labels PATH``; 0 = background, one id
per instance).
Several images: one JSON line per image with ``"image"`` and ``"count"`` (and the same fields
without the centres), the overlays and label maps written to ``--out-dir`` (default: the current
directory) as ``<stem>_count.png`` / ``<stem>_labels.png``. An image that cannot be read or counted
gives a line with ``"image"`` and ``"error"``; the exit status is then 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from indep_seg.commands import CommandError
from indep_seg.imageio import load_image

__all__ = ["add_arguments", "run"]


def add_arguments(parser):
    parser.add_argument(
        "--model", required=True, help="training --model-dir of a hoc run (or its counter/ folder)"
    )
    parser.add_argument(
        "image", nargs="+", help="image(s) to count (PNG/JPEG/TIFF; gray, RGB, RGBA, 8 or 16 bit)"
    )
    parser.add_argument(
        "--overlay",
        default=None,
        help="overlay PNG to write, one image only (default: ./<image stem>_count.png)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="instance label map (16-bit PNG) to write, one image only "
        "(default: ./<image stem>_labels.png)",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="folder for the overlays and label maps (default: the current directory)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="window in pixels of IMAGE that matches one training patch "
        "(default: from the image's own LoG scale, or the training run's window)",
    )
    parser.add_argument(
        "--centres",
        choices=("learned", "log"),
        default=None,
        help="which centres are the answer: the learned counter's (default, unless it "
        "trained fewer than 500 steps) or the scale-normalised LoG detector's; both "
        "counts are printed",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.3,
        help="minimum heatmap peak value of a centre (default 0.3)",
    )
    parser.add_argument(
        "--no-calibrate",
        action="store_true",
        help="report the raw heatmap mass, without dividing it by the mass the counter gives "
        "one clear single instance of this image (counting.single_instance_mass)",
    )
    parser.add_argument("--json-out", default=None, help="also write the JSON (lines) to this file")


def _write_png(path: Path, array, what: str):
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as e:
        raise CommandError(f"{what}: cannot write {path} ({e})") from None


def _count_one(args, counter, meta, path: str, overlay: Path, labels_path: Path) -> dict:
    """Count one image; raises CommandError with a clear message on bad input."""
    from indep_seg.hoc import counting
    from indep_seg.hoc.instances import save_label_png

    try:
        image = load_image(path)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CommandError(str(e)) from None
    h, w = image.shape[:2]
    window = args.window
    if window is not None:
        if window < 2:
            raise CommandError(f"--window: expected at least 2 px, got {window}")
        if window > min(h, w):
            raise CommandError(
                f"image: {path} is {w}x{h} pixels, smaller than the counting window "
                f"({window} px); give a larger image or a smaller --window"
            )
    elif not meta.get("normalise") and int(meta["window"]) > min(h, w):
        raise CommandError(
            f"image: {path} is {w}x{h} pixels, smaller than the counting window "
            f"({int(meta['window'])} px); give a larger image or a smaller --window"
        )
    try:
        res = counting.count_instances(
            counter,
            meta,
            image,
            threshold=args.threshold,
            calibrate=not args.no_calibrate,
            window=window,
            centres_from=args.centres,
        )
    except ValueError as e:
        raise CommandError(f"{e} ({path})") from None
    win = res["window"] or 10
    _write_png(
        overlay,
        counting.draw_overlay(image, res["centres"], radius=max(3.0, win / 5.0)),
        "--overlay",
    )
    try:
        save_label_png(labels_path, res["labels"])
    except (OSError, ValueError) as e:
        raise CommandError(f"--labels: cannot write {labels_path} ({e})") from None
    if res["kind_mismatch"]:
        sys.stderr.write(
            f"warning: {path} looks like a {res['kind']} image ({res['polarity']} nuclei), not "
            "like the "
            f"images the model was trained on; the count may be wrong\n"
        )
    out = {
        "count": res["count"],
        "centres": res["centres"],
        "mass": res["mass"] if "mass" in res else None,
        "count_raw": res["count_raw"],
        "calibration": res["calibration"],
        "calibration_instances": res.get("calibration_instances", 0),
        "num_peaks": res.get("num_peaks", 0),
        "window": res["window"],
        "overlay": str(overlay),
        "labels": str(labels_path),
        "instances": int(len(np.unique(res["labels"])) - (1 if (res["labels"] == 0).any() else 0)),
        "count_learned": res["count_learned"],
        "count_log": res["count_log"],
        "centres_from": res.get("centres_from"),
        "count_from": res.get("count_from"),
        "fallback": res.get("fallback"),
        "sigma": res["sigma"],
        "polarity": res["polarity"],
        "kind": res["kind"],
        "illumination_min": res.get("illumination_min"),
        "kind_mismatch": res["kind_mismatch"],
    }
    if "note" in res:
        out["note"] = res["note"]
    return out


def run(args) -> int:
    from indep_seg.hoc import counting

    many = len(args.image) > 1
    if many and (args.overlay or args.labels):
        raise CommandError("--overlay / --labels name one file: with several images use --out-dir")
    if not 0 <= args.threshold <= 1:
        raise CommandError(f"--threshold: expected a number in [0, 1], got {args.threshold}")
    out_dir = Path(args.out_dir) if args.out_dir else Path(".")
    if args.out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CommandError(f"--out-dir: cannot create {out_dir} ({e})") from None
    if not many:  # a bad single image is named before the model loads (as before)
        try:
            load_image(args.image[0])
        except (FileNotFoundError, ValueError, TypeError) as e:
            raise CommandError(str(e)) from None
    try:
        counter, meta = counting.load_counter(args.model)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    except Exception as e:  # a damaged file
        raise CommandError(
            f"model: cannot load the counter from {args.model} ({type(e).__name__}: {e})"
        ) from None

    lines, status = [], 0
    for index, path in enumerate(args.image, start=1):
        stem = Path(path).stem
        started = time.time()
        # a line per image on standard error (a 1024-px image takes about a minute on 2 cores)
        sys.stderr.write(f"counting {path} ({index}/{len(args.image)})\n")
        sys.stderr.flush()
        overlay = Path(args.overlay) if args.overlay else out_dir / f"{stem}_count.png"
        labels = (
            Path(args.labels)
            if args.labels
            else (
                (overlay.parent if args.overlay and not args.out_dir else out_dir)
                / f"{stem}_labels.png"
            )
        )
        try:
            out = _count_one(args, counter, meta, path, overlay, labels)
        except CommandError as e:
            if not many:
                raise
            out, status = {"image": str(path), "error": str(e)}, 2
            sys.stderr.write(f"error: {e}\n")
        else:
            sys.stderr.write(
                f"{path}: {out['count']} counted, {out['instances']} instances in the label map "
                f"({time.time() - started:.1f} s)\n"
            )
            if many:
                out = {"image": str(path), **{k: v for k, v in out.items() if k != "centres"}}
        text = json.dumps(out)
        lines.append(text)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    if args.json_out:
        tmpj = f"{args.json_out}.tmp-{os.getpid()}"
        with open(tmpj, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmpj, args.json_out)
    return status
