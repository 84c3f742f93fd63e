"""Converters into sharded TFRecords with the tensorflow/models keys (`indep_seg.data.example`).

- `convert_folder`: an image folder with an optional `boxes.csv`;
- `convert_masks`: image + mask folders (optional `boxes.csv`; boxes default to the masks'
  tight boxes); photos whose mask has another size are resized to it (stored as PNG);
- `convert_patches`: one large image cut into windows (window, stride) for the dense-cluster
  application, with an optional mask or instance label map cut the same way.

Photos that need no resizing are stored as their original JPEG / PNG bytes (no re-encoding,
so reading the records gives exactly the pixels the folder reader gives); other formats and
resized photos are stored as PNG. Masks are stored as PNG class ids (0 / 1).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from indep_seg.data.decode import load_folder_item
from indep_seg.data.example import make_example
from indep_seg.data.files import DataError, plan_folder, probe_image
from indep_seg.tfrecords_tools.writer import auto_num_shards, write_sharded

__all__ = ["convert_folder", "convert_masks", "convert_patches", "folder_record", "patch_windows"]


def _encode_png(array) -> bytes:
    return tf.io.encode_png(tf.constant(array)).numpy()


def folder_record(item) -> bytes:
    """The serialized tf.train.Example of one `FolderItem` (raises `DataError` naming the bad
    file)."""
    image, mask, boxes, raw, fmt = load_folder_item(item)
    if item.needs_resize or fmt not in ("jpeg", "png"):
        encoded, fmt = _encode_png(image), "png"
    else:
        encoded = raw
    mask_png = _encode_png(mask) if mask is not None else None
    h, w = image.shape[:2]
    return make_example(
        encoded, fmt, h, w, item.source_id, mask_png=mask_png, boxes=boxes
    ).SerializeToString()


def _convert_plan(plan, out_prefix, num_shards, workers, skip_bad, overwrite, progress, desc):
    if plan.problems and not skip_bad:
        plan.raise_if_problems()
    if not plan.items:
        raise DataError(f"{out_prefix}: no valid images to convert ({len(plan.problems)} skipped)")
    if num_shards is None:
        total = sum(
            os.path.getsize(it.image_path) + (os.path.getsize(it.mask_path) if it.mask_path else 0)
            for it in plan.items
        )
        num_shards = auto_num_shards(total, len(plan.items))
    tasks = [(it.image_path, functools.partial(folder_record, it)) for it in plan.items]
    summary = write_sharded(
        tasks,
        out_prefix,
        num_shards,
        workers=workers,
        skip_bad=skip_bad,
        overwrite=overwrite,
        progress=progress,
        desc=desc,
        skipped=plan.problems,
    )
    summary.unboxed = len(plan.unboxed)
    return summary


def convert_folder(
    images_dir,
    out_prefix,
    boxes_csv=None,
    *,
    num_shards=None,
    workers=None,
    skip_bad=False,
    overwrite=False,
    progress=True,
):
    """(a) An image folder (+ optional `boxes.csv`) -> `OUT_PREFIX-0000i-of-0000N.tfrecord`.

    Returns a `ConversionSummary` (records, shards, bytes, skipped with reasons).
    """
    plan = plan_folder(images_dir, None, boxes_csv)
    return _convert_plan(
        plan, out_prefix, num_shards, workers, skip_bad, overwrite, progress, "folder"
    )


def convert_masks(
    images_dir,
    masks_dir,
    out_prefix,
    boxes_csv=None,
    *,
    num_shards=None,
    workers=None,
    skip_bad=False,
    overwrite=False,
    progress=True,
):
    """(b) Image + mask folders (matched by stem; + optional `boxes.csv`) -> sharded TFRecords."""
    plan = plan_folder(images_dir, masks_dir, boxes_csv)
    return _convert_plan(
        plan, out_prefix, num_shards, workers, skip_bad, overwrite, progress, "masks"
    )


def patch_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners `(y, x)` of `window x window` patches every `stride` pixels covering the
    image.

    The last row / column of windows is aligned with the image's edge, so every pixel is covered.
    """
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window: expected a positive integer, got {window!r}")
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"stride: expected a positive integer, got {stride!r}")
    if window > height or window > width:
        raise ValueError(f"window: {window} is larger than the {width}x{height} image")

    def starts(size):
        s = list(range(0, size - window + 1, stride))
        if s[-1] != size - window:
            s.append(size - window)
        return s

    return [(y, x) for y in starts(height) for x in starts(width)]


def _load_array(path, what):
    probe_image(path, full=True)
    with Image.open(path) as img:
        return np.asarray(img)


def convert_patches(
    image_path,
    out_prefix,
    window: int,
    stride: int,
    mask_path=None,
    *,
    num_shards=None,
    workers=None,
    overwrite=False,
    progress=True,
    skip_empty: bool = False,
):
    """(c) One large image -> `window x window` patches every `stride` pixels, as sharded TFRecords.

    Args:
        image_path: the image (any PIL format; grey images are stored as RGB).
        mask_path: optional mask or 16-bit instance label map of the same size (foreground:
            label > 0 for 16/32-bit label maps and 0/1 masks, > 127 for 8-bit 0..255 masks).
        skip_empty: leave out patches whose mask is empty (needs `mask_path`).

    Each record's `image/source_id` is `NAME#y=Y,x=X`, `image/patch/y|x` hold the offset and its
    one box is the whole patch.
    """
    image_path = os.fspath(image_path)
    image = _load_array(image_path, "image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        scale = 255.0 / max(1, int(image.max()))
        image = np.clip(np.round(image * scale), 0, 255).astype(np.uint8)
    h, w = image.shape[:2]
    mask = None
    if mask_path is not None:
        mask_path = os.fspath(mask_path)
        raw = _load_array(mask_path, "mask")
        if raw.ndim == 3:
            raw = raw[..., 0]
        if raw.shape != (h, w):
            raise DataError(
                f"{mask_path}: mask is {raw.shape[1]}x{raw.shape[0]} but the image {image_path} "
                f"is {w}x{h}"
            )
        # 8-bit masks follow `binarize_mask` (> 127 when 0..255, > 0 when 0/1); wider
        # integer images are instance label maps (> 0).
        threshold = 127 if (raw.dtype == np.uint8 and raw.max() > 1) else 0
        mask = (raw > threshold).astype(np.uint8)[..., None]
    if skip_empty and mask is None:
        raise ValueError("skip_empty: needs mask_path")
    try:
        corners = patch_windows(h, w, window, stride)
    except ValueError as e:
        raise DataError(f"{image_path}: {e}") from None
    if skip_empty:
        corners = [(y, x) for y, x in corners if mask[y : y + window, x : x + window].any()]
    name = os.path.basename(image_path)

    def build(y, x):
        patch = np.ascontiguousarray(image[y : y + window, x : x + window])
        mask_png = None
        if mask is not None:
            mask_png = _encode_png(np.ascontiguousarray(mask[y : y + window, x : x + window]))
        # The box of a patch is the whole patch (not its mask's box): the dense-cluster
        # application trains on whole windows.
        return make_example(
            _encode_png(patch),
            "png",
            window,
            window,
            f"{name}#y={y},x={x}",
            mask_png=mask_png,
            boxes=[[0, 0, window, window]],
            patch_offset=(y, x),
        ).SerializeToString()

    if num_shards is None:
        num_shards = auto_num_shards(len(corners) * window * window * 2, len(corners))
    tasks = [(f"{name}#y={y},x={x}", functools.partial(build, y, x)) for y, x in corners]
    return write_sharded(
        tasks,
        out_prefix,
        num_shards,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
        desc="patches",
    )
