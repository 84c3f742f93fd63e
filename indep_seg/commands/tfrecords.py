"""`indep-seg tfrecords folder|masks|patches|inspect ...`: sharded TFRecords from images.

    indep-seg tfrecords folder IMAGES_DIR --out PREFIX [--boxes boxes.csv]
    indep-seg tfrecords masks IMAGES_DIR MASKS_DIR --out PREFIX [--boxes boxes.csv]
    indep-seg tfrecords patches IMAGE --out PREFIX --window 64 --stride 32 [--mask LABELS.png]
    indep-seg tfrecords inspect 'PREFIX-*.tfrecord' [--png preview.png] [--num 8]

Common to the converters: [--num-shards N] [--workers W] [--skip-bad] [--overwrite]
[--no-progress] [--summary-json FILE]. Shards are `PREFIX-00000-of-000NN.tfrecord`, written
under temporary names and renamed when the whole set is complete.
"""

from __future__ import annotations

import json
import os

from indep_seg.commands import CommandError


def _common(p):
    p.add_argument(
        "--out",
        required=True,
        metavar="PREFIX",
        help="output prefix: writes PREFIX-00000-of-000NN.tfrecord",
    )
    p.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="number of shards (default: about 100 MiB each)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="threads building records (default: CPU count)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing shard set with this prefix"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--summary-json", default=None, help="also write the summary as JSON to this file"
    )


def add_arguments(parser):
    sub = parser.add_subparsers(dest="tfrecords_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("folder", help="an image folder with an optional boxes.csv")
    p.add_argument("images_dir")
    p.add_argument(
        "--boxes",
        default=None,
        help="CSV of filename,x0,y0,x1,y1 rows (default: IMAGES_DIR/boxes.csv if present)",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip and count bad files instead of stopping"
    )
    _common(p)
    p = sub.add_parser("masks", help="image + mask folders (matched by file stem)")
    p.add_argument("images_dir")
    p.add_argument("masks_dir")
    p.add_argument(
        "--boxes", default=None, help="CSV of filename,x0,y0,x1,y1 rows (default: boxes from masks)"
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip and count bad files instead of stopping"
    )
    _common(p)
    p = sub.add_parser("patches", help="one large image cut into window x window patches")
    p.add_argument("image")
    p.add_argument("--window", type=int, required=True, help="patch side in pixels")
    p.add_argument("--stride", type=int, required=True, help="step between patches in pixels")
    p.add_argument(
        "--mask", default=None, help="optional mask / 16-bit instance label map of the same size"
    )
    p.add_argument("--skip-empty", action="store_true", help="leave out patches with an empty mask")
    _common(p)
    p = sub.add_parser("inspect", help="count records and write a PNG of a few decoded ones")
    p.add_argument("pattern", help="TFRecord file, glob or folder")
    p.add_argument("--png", default=None, help="preview PNG path (default: none)")
    p.add_argument("--num", type=int, default=8, help="records in the preview")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


def _finish(summary, args):
    print(summary.format())
    if args.summary_json:
        path = args.summary_json
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(summary.to_dict(), f, indent=2)
        os.replace(tmp, path)
    return 0


def run(args) -> int:
    from indep_seg.data.files import DataError

    action = args.tfrecords_command
    try:
        if action == "inspect":
            from indep_seg.tfrecords_tools.inspect import (
                format_report,
                inspect_tfrecords,
            )

            if args.num < 0:
                raise CommandError(f"--num: expected an integer >= 0, got {args.num}")
            report = inspect_tfrecords(args.pattern, png_path=args.png, num_preview=args.num)
            print(json.dumps(report, indent=2) if args.json else format_report(report))
            return 0
        from indep_seg.tfrecords_tools import converters

        if args.num_shards is not None and args.num_shards < 1:
            raise CommandError(f"--num-shards: expected an integer >= 1, got {args.num_shards}")
        kwargs = dict(
            num_shards=args.num_shards,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        if action == "folder":
            boxes = args.boxes
            if boxes is None and os.path.isfile(os.path.join(args.images_dir, "boxes.csv")):
                boxes = os.path.join(args.images_dir, "boxes.csv")
            summary = converters.convert_folder(
                args.images_dir, args.out, boxes, skip_bad=args.skip_bad, **kwargs
            )
        elif action == "masks":
            summary = converters.convert_masks(
                args.images_dir,
                args.masks_dir,
                args.out,
                args.boxes,
                skip_bad=args.skip_bad,
                **kwargs,
            )
        elif action == "patches":
            summary = converters.convert_patches(
                args.image,
                args.out,
                args.window,
                args.stride,
                args.mask,
                skip_empty=args.skip_empty,
                **kwargs,
            )
        else:  # pragma: no cover (argparse restricts the choices)
            raise CommandError(f"unknown action {action!r}")
    except (DataError, ValueError) as e:
        raise CommandError(str(e)) from None
    return _finish(summary, args)
