"""`indep-seg tfrecords inspect`: counts of a TFRecord set and a PNG of a few decoded records."""

from __future__ import annotations

import collections
import os

import tensorflow as tf

from indep_seg.data.example import decode_example, parse_example
from indep_seg.data.preview import save_preview
from indep_seg.data.readers import resolve_tfrecord_files

__all__ = ["inspect_tfrecords"]


def inspect_tfrecords(pattern, png_path=None, num_preview: int = 8) -> dict:
    """Counts records, masks, boxes, formats and sizes; writes a preview PNG of the first records.

    Returns:
        dict with `files`, `records` (per file and total), `with_mask`, `boxes`, `formats`,
        `height`/`width` ranges and `preview` (the PNG path or None).
    """
    files = resolve_tfrecord_files(pattern)
    per_file = {}
    formats = collections.Counter()
    with_mask = boxes = 0
    heights, widths = [], []
    preview = []
    for f in files:
        count = 0
        for serialized in tf.data.TFRecordDataset(f):
            raw = parse_example(serialized)
            count += 1
            formats[raw["format"].numpy().decode()] += 1
            with_mask += int(len(raw["mask_encoded"].numpy()) > 0)
            boxes += int(raw["boxes"].shape[0])
            heights.append(int(raw["height"]))
            widths.append(int(raw["width"]))
            if len(preview) < num_preview:
                preview.append({k: v.numpy() for k, v in decode_example(serialized).items()})
        per_file[f] = count
    total = sum(per_file.values())
    report = {
        "files": len(files),
        "records": total,
        "records_per_file": per_file,
        "with_mask": with_mask,
        "boxes": boxes,
        "formats": dict(formats),
        "height": [min(heights), max(heights)] if heights else None,
        "width": [min(widths), max(widths)] if widths else None,
        "preview": None,
    }
    if png_path is not None and preview:
        report["preview"] = save_preview(preview, png_path, tile=160, columns=min(4, len(preview)))
    return report


def format_report(report: dict) -> str:
    lines = [
        f"{report['records']} records in {report['files']} file(s); {report['with_mask']} with "
        "masks; "
        f"{report['boxes']} boxes stored; formats {report['formats']}"
    ]
    if report["height"]:
        lines.append(
            f"image sizes: height {report['height'][0]}-{report['height'][1]}, "
            f"width {report['width'][0]}-{report['width'][1]}"
        )
    for f, n in list(report["records_per_file"].items())[:10]:
        lines.append(f"  {os.path.basename(f)}: {n}")
    if len(report["records_per_file"]) > 10:
        lines.append(f"  ... ({len(report['records_per_file']) - 10} more files)")
    if report["preview"]:
        lines.append(f"preview: {report['preview']}")
    return "\n".join(lines)
