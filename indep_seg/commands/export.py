"""`indep-seg export --model-dir DIR --export-base BASE [--version N] [--onnx FILE]`.

Writes `BASE/<version>/` (a SavedModel with the `serving_default`, `segment_in_box` and
`segment_bytes` signatures of DESIGN.md §3) atomically, the version defaulting to one
more than the largest existing one, and optionally converts it to ONNX. Prints a JSON
summary; a line per stage (load, SavedModel, ONNX) with its time goes to standard error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from indep_seg.commands import CommandError


def add_arguments(parser):
    parser.add_argument(
        "--model-dir", required=True, help="training model dir (or its segmenter/ artifact folder)"
    )
    parser.add_argument(
        "--export-base", required=True, help="model base path: versions go in BASE/<N>/"
    )
    parser.add_argument(
        "--version", type=int, default=None, help="version number (default: largest existing + 1)"
    )
    parser.add_argument(
        "--onnx", default=None, metavar="FILE", help="also write an ONNX model here"
    )
    parser.add_argument(
        "--onnx-signature",
        default="serving_default",
        choices=["serving_default", "segment_in_box"],
        help="signature converted to ONNX (default serving_default)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: tf2onnx's)")


def run(args) -> int:
    # The user's mistakes first, before TensorFlow is imported (seconds).
    if args.version is not None and args.version < 1:
        raise CommandError(f"--version: expected a positive integer, got {args.version}")
    if not Path(args.model_dir).is_dir():
        raise CommandError(
            f"--model-dir {args.model_dir}: no such folder (give the training run's "
            "--model-dir, or its segmenter/ folder)"
        )
    from indep_seg.segmenter import Segmenter
    from indep_seg.serving.export import export_onnx, export_segmenter

    t0 = time.time()

    def stage(msg):
        print(f"indep-seg export: [{time.time() - t0:5.1f} s] {msg}", file=sys.stderr, flush=True)

    stage(f"loading the model from {args.model_dir}")
    try:
        segmenter = Segmenter.load(args.model_dir)
    except FileNotFoundError as e:
        raise CommandError(f"--model-dir {e}") from None
    stage(f"writing the SavedModel (3 signatures) under {args.export_base}")
    try:
        path = export_segmenter(segmenter, args.export_base, args.version)
    except ValueError as e:
        raise CommandError(f"--{e}") from None
    summary = {
        "saved_model": str(path),
        "version": int(path.name),
        "signatures": ["serving_default", "segment_in_box", "segment_bytes"],
        "resolution": segmenter.resolution,
        "margin": segmenter.margin,
        "square": segmenter.square,
        "box_free": bool(getattr(segmenter, "box_free", False)),
    }
    stage(f"wrote {path}")
    if args.onnx:
        stage(f"converting {args.onnx_signature} to ONNX: {args.onnx}")
        onnx_path = export_onnx(path, args.onnx, signature=args.onnx_signature, opset=args.opset)
        summary["onnx"] = str(onnx_path)
        summary["onnx_signature"] = args.onnx_signature
        stage(f"wrote {onnx_path}")
    print(json.dumps(summary, indent=2))
    return 0
