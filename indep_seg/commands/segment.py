"""`indep-seg segment --model PATH IMAGES_OR_DIRS... --out DIR [--box x0,y0,x1,y1 | --boxes
boxes.csv]`.

Writes one 8-bit mask PNG per input at the input's own size, named after it
(`OUT/<stem>.png`; the crop's mask pasted back, 0 outside the box's crop window), and
with `--cutout` an RGBA cut-out `OUT/<stem>_cutout.png` (alpha = mask). Without a box
the whole image is the box; for a box-free model (ILSGAN's post-hoc UNet, `"box_free": true` in
its segmenter.json) the whole image is the crop the network sees, not the image grown by the crop
margin (`indep_seg.segmenter.image_box`). `--boxes` is a CSV `filename,x0,y0,x1,y1` (pixels of the
original image; several rows per file give the union of their masks). `--model` takes an
exported SavedModel, a version base dir or a training model dir; `--server HOST:PORT`
(or `http://HOST:PORT`) asks a running `indep-seg serve` instead. Masks are refined on the
photo by default (`--refine grabcut`: binary masks that follow the photo's edges): boxed ones in
their box (`indep_seg.box_prior.refine_full_mask`, 0 outside the object), the others from the
network's confidence (`indep_seg.refine.refine_unboxed`); `--refine none` writes the model's own.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from indep_seg.commands import CommandError
from indep_seg.imageio import list_images, read_image, write_png


def add_arguments(parser):
    parser.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="exported SavedModel, version base dir, or training model dir")
    src.add_argument(
        "--server", help="HOST:PORT (gRPC) or http://HOST:PORT (REST) of a model server"
    )
    parser.add_argument("--model-name", default="default", help="served model name (with --server)")
    parser.add_argument("--out", required=True, help="output folder")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--box", default=None, help="x0,y0,x1,y1 in pixels, for every input")
    boxes.add_argument("--boxes", default=None, help="CSV filename,x0,y0,x1,y1 (header optional)")
    parser.add_argument(
        "--refine",
        choices=("grabcut", "none"),
        default="grabcut",
        help="move each mask's outline to the photo's colour edges (default grabcut): boxed "
        "inputs by GrabCut started from the mask blended with the box's own prior (a "
        "degenerate or inverted mask gives way to that prior), inputs without a box by "
        "GrabCut that keeps the pixels the network is sure of",
    )
    parser.add_argument("--cutout", action="store_true", help="also write RGBA cut-outs")
    parser.add_argument("--binary", action="store_true", help="write 0/255 masks (threshold 0.5)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="warn about and skip unreadable images / bad boxes instead of failing",
    )


def parse_box(text: str, what: str = "--box"):
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise CommandError(f"{what}: expected x0,y0,x1,y1 (4 numbers), got {text!r}")
    try:
        box = [float(p) for p in parts]
    except ValueError:
        raise CommandError(f"{what}: expected x0,y0,x1,y1 (4 numbers), got {text!r}") from None
    if not all(np.isfinite(box)):
        raise CommandError(f"{what}: expected finite numbers, got {text!r}")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise CommandError(f"{what}: empty box {text!r} (expected x1 > x0 and y1 > y0)")
    return box


def predictor_for(args):
    """The predictor behind `--model PATH` or `--server HOST:PORT` (segment and evaluate)."""
    from indep_seg.commands.predictor import RemotePredictor, load_predictor

    if args.server:
        return RemotePredictor(args.server, model_name=args.model_name)
    try:
        return load_predictor(args.model)
    except ValueError as e:
        raise CommandError(str(e)) from None


def read_boxes_csv(path) -> dict[str, list[tuple[int, list[float]]]]:
    """`{filename: [(row number, box), ...]}` from a `filename,x0,y0,x1,y1` CSV."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CommandError(f"--boxes {path}: cannot read it ({e.strerror})") from None
    out: dict[str, list] = {}
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if n == 1 and row[0].strip().lower() in ("filename", "file", "image", "name"):
            continue
        if len(row) != 5:
            raise CommandError(f"--boxes {path} row {n}: expected filename,x0,y0,x1,y1, got {row}")
        box = parse_box(",".join(row[1:]), f"--boxes {path} row {n}")
        out.setdefault(row[0].strip(), []).append((n, box))
    if not out:
        raise CommandError(f"--boxes {path}: no boxes in the file")
    return out


def _clip_box(box, w, h, where):
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    if cx1 <= cx0 or cy1 <= cy0:
        raise CommandError(f"{where}: box {box} lies outside the {w}x{h} image")
    return [cx0, cy0, cx1, cy1]


def _unique_stems(files) -> None:
    """Refuse inputs whose masks would overwrite each other (`a/x.jpg` and `b/x.png`)."""
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems and stems[f.stem] != f:
            raise CommandError(
                f"{f} and {stems[f.stem]} would both write {f.stem}.png; "
                "segment them into different --out folders"
            )
        stems[f.stem] = f


def _boxes_for(f: Path, w: int, h: int, args, csv_boxes, fixed_box) -> list:
    """The boxes of image `f` (`w` x `h`): its `--boxes` rows, the `--box`, or `[None]` (no box)."""
    if csv_boxes is not None:
        rows = csv_boxes.get(f.name) or csv_boxes.get(str(f)) or csv_boxes.get(f.stem)
        if not rows:
            raise CommandError(f"--boxes {args.boxes}: no row for {f.name}")
        return [_clip_box(b, w, h, f"--boxes {args.boxes} row {n} ({f.name})") for n, b in rows]
    if fixed_box is not None:
        return [_clip_box(fixed_box, w, h, f"--box for {f}")]
    return [None]


def _write_outputs(out: Path, f: Path, image, mask, args) -> dict:
    """Write `f`'s mask (binary or soft, 8-bit) and, with `--cutout`, its RGBA cut-out."""
    h, w = image.shape[:2]
    if args.binary:
        mask8 = np.where(mask >= 0.5, 255, 0).astype(np.uint8)
    else:
        mask8 = np.clip(np.round(mask * 255.0), 0, 255).astype(np.uint8)
    target = write_png(out / f"{f.stem}.png", mask8)
    item = {"input": str(f), "mask": str(target), "size": [w, h]}
    if args.cutout:
        rgba = np.concatenate([image, mask8[..., None]], axis=-1)
        item["cutout"] = str(write_png(out / f"{f.stem}_cutout.png", rgba))
    return item


def run(args) -> int:
    from indep_seg.refine import refine_mask
    from indep_seg.serving.client import ClientError

    try:
        files = list_images(args.inputs)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    _unique_stems(files)
    fixed_box = parse_box(args.box) if args.box else None
    csv_boxes = read_boxes_csv(args.boxes) if args.boxes else None
    predictor = predictor_for(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []

    def bad(msg):
        if not args.skip_bad:
            raise CommandError(msg)
        print(f"indep-seg segment: warning: {msg} (skipped)", file=sys.stderr)
        skipped.append(msg)

    t0 = time.time()
    for index, f in enumerate(files, start=1):
        if len(files) > 1:  # a folder or several images: one progress line per image
            print(
                f"indep-seg segment: [{index}/{len(files)}] {f.name} ({time.time() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        try:
            image = read_image(f)
            boxes = _boxes_for(f, image.shape[1], image.shape[0], args, csv_boxes, fixed_box)
        except (ValueError, CommandError) as e:
            bad(str(e))
            continue
        try:
            masks = predictor.predict([image] * len(boxes), boxes)
        except ClientError as e:
            raise CommandError(f"{f}: the server answered {e}") from None
        if args.refine == "grabcut":
            masks = [refine_mask(image, m, b) for m, b in zip(masks, boxes)]
        written.append(_write_outputs(out, f, image, np.max(np.stack(masks), axis=0), args))
    print(
        json.dumps(
            {
                "written": len(written),
                "skipped": len(skipped),
                "out": str(out),
                "model": getattr(predictor, "description", ""),
                "files": written,
            },
            indent=2,
        )
    )
    return 0 if written or not files else 1
