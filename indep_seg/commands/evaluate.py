"""`indep-seg evaluate --model PATH --images DIR --masks DIR [--resolution 128]`.

IoU and DICE with the protocol of ../shared/datasets/README.md (as in DRC and ILSGAN):
for every image / mask pair (matched by file stem; a photo is resized to its mask's size
when they differ, aspect ratios must agree within 0.02), take the ground-truth box of
the mask, give it to the model (box-level models segment inside a box) and paste the
prediction back at full size; then cut the square of half-side 0.75 x max(w, h) around
the box (`box_window(margin=0.25, square=True)`, black outside the image) from image,
prediction and ground truth, resize to `--resolution`, binarise at 0.5 and compute IoU
and DICE per image; report their means. Prints JSON; writes a PNG grid with titled columns
(photo | prediction > 0.5 | ground truth) to `--grid`, else into `--out DIR` (with
`evaluation.json`), else into the `--model` folder; never into the current folder unasked.
A progress line per tenth of the images goes to standard error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from indep_seg.commands import CommandError
from indep_seg.commands.segment import predictor_for
from indep_seg.gallery import titled_grid
from indep_seg.imageio import IMAGE_SUFFIXES, read_image, read_mask, write_png

ASPECT_TOLERANCE = 0.02


def add_arguments(parser):
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="exported SavedModel, version base dir, or training model dir")
    src.add_argument(
        "--server", help="HOST:PORT (gRPC) or http://HOST:PORT (REST) of a model server"
    )
    parser.add_argument("--model-name", default="default", help="served model name (with --server)")
    parser.add_argument("--images", required=True, help="folder of images")
    parser.add_argument(
        "--masks", required=True, help="folder of ground-truth masks (same file stems)"
    )
    parser.add_argument(
        "--resolution", type=int, default=128, help="evaluation resolution (default 128)"
    )
    parser.add_argument(
        "--mask-threshold",
        type=int,
        default=127,
        help="ground-truth masks: foreground where grey > this (default 127)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write evaluate_grid.png and evaluation.json here (default: the --model folder)",
    )
    parser.add_argument(
        "--grid",
        default=None,
        help="PNG grid photo | prediction | ground truth, titled columns "
        "(default: OUT/evaluate_grid.png, else MODEL/evaluate_grid.png)",
    )
    parser.add_argument("--grid-rows", type=int, default=8, help="rows in the grid (default 8)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N pairs")
    parser.add_argument(
        "--per-image", action="store_true", help="include per-image scores in the JSON"
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="warn about and skip unreadable / mismatched pairs instead of failing",
    )


def pair_files(images_dir, masks_dir):
    """[(image path or None, mask path)] matched by stem, in mask-name order."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = {}
    for p in sorted(images_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault(p.stem, p)
    masks = sorted(
        p for p in masks_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    return [(images.get(m.stem), m) for m in masks]


def protocol_crops(image, pred, gt, box, resolution):
    """The protocol's square crops of image, prediction and ground truth at `resolution`."""
    import tensorflow as tf

    from indep_seg.box_crop import EVAL_MARGIN, EVAL_SQUARE, box_window, crop_to_window

    window = box_window([box], EVAL_MARGIN, EVAL_SQUARE)
    stack = np.concatenate(
        [
            image.astype(np.float32),
            pred[..., None].astype(np.float32),
            gt[..., None].astype(np.float32),
        ],
        axis=-1,
    )[None]
    crop = crop_to_window(tf.constant(stack), window, resolution).numpy()[0]
    return crop[..., :3], crop[..., 3], crop[..., 4]


GRID_HEADERS = ("photo (eval crop)", "prediction > 0.5", "ground truth")


def evaluate_predictor(
    predictor,
    pairs,
    resolution=128,
    mask_threshold=127,
    skip_bad=False,
    grid_rows=8,
    warn=None,
    progress=None,
):
    """Runs the protocol over `(image path, mask path)` pairs; returns (summary, grid rows)."""
    from indep_seg import metrics
    from indep_seg.box_crop import mask_box

    preds, gts, names, tiles, skipped = [], [], [], [], []

    def bad(msg):
        if not skip_bad:
            raise CommandError(msg)
        (warn or (lambda m: None))(msg)
        skipped.append(msg)

    t0, every = time.time(), max(1, len(pairs) // 10)
    for index, (image_path, mask_path) in enumerate(pairs, start=1):
        if progress is not None and (index % every == 0 or index == len(pairs)):
            progress(f"{index}/{len(pairs)} images ({time.time() - t0:.1f} s)")
        if image_path is None:
            bad(f"{mask_path}: no image with the stem {mask_path.stem!r} in --images")
            continue
        try:
            image = read_image(image_path)
            gt = read_mask(mask_path, mask_threshold)
        except ValueError as e:
            bad(str(e))
            continue
        (ih, iw), (mh, mw) = image.shape[:2], gt.shape
        if (ih, iw) != (mh, mw):
            if abs(iw / ih - mw / mh) > ASPECT_TOLERANCE:
                bad(
                    f"{mask_path}: mask is {mw}x{mh} but {image_path.name} is {iw}x{ih} "
                    f"(aspect ratios differ by more than {ASPECT_TOLERANCE})"
                )
                continue
            image = np.asarray(Image.fromarray(image).resize((mw, mh), Image.BILINEAR))
        box = mask_box(gt)
        if box is None:
            bad(f"{mask_path}: empty mask (no pixel > {mask_threshold}), no box to evaluate in")
            continue
        (pred,) = predictor.predict([image], [box])
        img_c, pred_c, gt_c = protocol_crops(
            image.astype(np.float32) / 255.0, pred, gt, box, resolution
        )
        preds.append(pred_c)
        gts.append(gt_c)
        names.append(mask_path.stem)
        if len(tiles) < grid_rows:
            tiles.append(
                [
                    np.uint8(np.clip(img_c, 0, 1) * 255),
                    np.uint8((pred_c >= 0.5) * 255),
                    np.uint8((gt_c >= 0.5) * 255),
                ]
            )
    if not preds:
        raise CommandError(
            "no image / mask pair could be evaluated"
            + (f" ({len(skipped)} skipped)" if skipped else "")
        )
    p = np.stack(preds)[..., None]
    t = np.stack(gts)[..., None]
    ious = np.asarray(metrics.iou(p, t, threshold=0.5, per_image=True))
    dices = np.asarray(metrics.dice(p, t, threshold=0.5, per_image=True))
    summary = {
        "images": len(preds),
        "skipped": len(skipped),
        "iou": float(ious.mean()),
        "dice": float(dices.mean()),
        "resolution": resolution,
        "protocol": "GT box, square half-side 0.75*max(w,h), black outside, threshold 0.5, "
        "per-image mean",
        "per_image": [
            {"name": n, "iou": float(i), "dice": float(d)} for n, i, d in zip(names, ious, dices)
        ],
    }
    return summary, tiles


def run(args) -> int:
    if args.resolution < 8:
        raise CommandError(f"--resolution: expected an integer >= 8, got {args.resolution}")
    for flag, d in (("--images", args.images), ("--masks", args.masks)):
        if not Path(d).is_dir():
            raise CommandError(f"{flag} {d}: not a folder")
    pairs = pair_files(args.images, args.masks)
    if not pairs:
        raise CommandError(f"--masks {args.masks}: folder holds no mask image")
    if args.limit is not None:
        pairs = pairs[: max(args.limit, 0)]

    def say(msg):
        print(f"indep-seg evaluate: {msg}", file=sys.stderr, flush=True)

    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CommandError(f"--out {args.out}: exists and is not a folder")
    if args.grid:
        grid_path = Path(args.grid)
    elif args.out:
        grid_path = Path(args.out) / "evaluate_grid.png"
    elif args.model and Path(args.model).is_dir():
        grid_path = Path(args.model) / "evaluate_grid.png"
    else:
        grid_path = None  # --server without --out / --grid: no picture rather than one in the cwd
    say(f"loading {args.model or args.server}")
    predictor = predictor_for(args)
    say(f"evaluating {len(pairs)} image / mask pairs at {args.resolution} px")
    summary, tiles = evaluate_predictor(
        predictor,
        pairs,
        args.resolution,
        args.mask_threshold,
        args.skip_bad,
        args.grid_rows,
        warn=lambda m: print(f"indep-seg evaluate: warning: {m} (skipped)", file=sys.stderr),
        progress=say,
    )
    summary["model"] = getattr(predictor, "description", "")
    if tiles and grid_path is not None:
        write_png(grid_path, titled_grid(tiles, GRID_HEADERS))
        summary["grid"] = str(grid_path)
    elif tiles:
        say("no grid written (give --out DIR or --grid FILE.png)")
    if not args.per_image:
        summary.pop("per_image")
    if args.out:
        out_json = Path(args.out) / "evaluation.json"
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(summary, indent=2))
        summary["json"] = str(out_json)
    print(json.dumps(summary, indent=2))
    return 0
