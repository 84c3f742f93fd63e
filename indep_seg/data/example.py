"""tf.train.Example encoding with the keys of tensorflow/models (official/vision).

| key | content |
|---|---|
| `image/encoded` | the photo, JPEG or PNG bytes |
| `image/format` | `jpeg` / `png` |
| `image/height`, `image/width` | its size |
| `image/source_id` | where it came from (file name, or `name#y=Y,x=X` for patches) |
| `image/segmentation/class/encoded` | PNG of class ids (0 background, 1 foreground), same size;
absent = no mask |
| `image/segmentation/class/format` | `png` |
| `image/object/bbox/xmin` ... `ymax` | boxes normalised by width / height |
| `image/object/class/label` | 1 per box (foreground) |
| `image/patch/x`, `image/patch/y` | offset of a patch in its source image (patch records only) |
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from indep_seg.data import decode as _decode

__all__ = ["make_example", "parse_example", "decode_example", "FEATURES"]

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
}


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(
    encoded: bytes,
    image_format: str,
    height: int,
    width: int,
    source_id: str,
    mask_png: bytes | None = None,
    boxes=None,
    patch_offset=None,
) -> tf.train.Example:
    """One record. `boxes`: `[K, 4]` pixel x0, y0, x1, y1 (stored normalised); `mask_png`: 0/1
    PNG."""
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format: expected 'jpeg' or 'png', got {image_format!r}")
    boxes = (
        np.zeros([0, 4], np.float64)
        if boxes is None
        else np.asarray(boxes, np.float64).reshape(-1, 4)
    )
    feature = {
        "image/encoded": _bytes([encoded]),
        "image/format": _bytes([image_format.encode()]),
        "image/height": _ints([int(height)]),
        "image/width": _ints([int(width)]),
        "image/source_id": _bytes([source_id.encode("utf-8")]),
        "image/object/bbox/xmin": _floats(boxes[:, 0] / width),
        "image/object/bbox/ymin": _floats(boxes[:, 1] / height),
        "image/object/bbox/xmax": _floats(boxes[:, 2] / width),
        "image/object/bbox/ymax": _floats(boxes[:, 3] / height),
        "image/object/class/label": _ints([1] * len(boxes)),
    }
    if mask_png is not None:
        feature["image/segmentation/class/encoded"] = _bytes([mask_png])
        feature["image/segmentation/class/format"] = _bytes([b"png"])
    if patch_offset is not None:
        feature["image/patch/y"] = _ints([int(patch_offset[0])])
        feature["image/patch/x"] = _ints([int(patch_offset[1])])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized):
    """Serialized record -> dict of raw features (dense boxes in pixels `[K, 4]`)."""
    f = tf.io.parse_single_example(serialized, FEATURES)
    h = tf.cast(f["image/height"], tf.float32)
    w = tf.cast(f["image/width"], tf.float32)
    coords = [
        tf.sparse.to_dense(f[f"image/object/bbox/{k}"]) for k in ("xmin", "ymin", "xmax", "ymax")
    ]
    boxes = tf.stack([coords[0] * w, coords[1] * h, coords[2] * w, coords[3] * h], axis=-1)
    return {
        "encoded": f["image/encoded"],
        "format": f["image/format"],
        "height": f["image/height"],
        "width": f["image/width"],
        "source_id": f["image/source_id"],
        "mask_encoded": f["image/segmentation/class/encoded"],
        "boxes": tf.reshape(boxes, [-1, 4]),
    }


def decode_example(serialized):
    """Serialized record -> the decoded element of `indep_seg.data` (see `decode`)."""
    f = parse_example(serialized)
    image = _decode.decode_photo(f["encoded"])
    has_mask = tf.strings.length(f["mask_encoded"]) > 0
    mask = tf.cond(
        has_mask,
        lambda: _decode.decode_mask(f["mask_encoded"]),
        lambda: tf.zeros(tf.concat([tf.shape(image)[:2], [1]], 0), tf.uint8),
    )
    mask.set_shape([None, None, 1])
    boxes = _decode.finalize_boxes(f["boxes"], mask, has_mask)
    return {
        "image": image,
        "mask": mask,
        "has_mask": has_mask,
        "boxes": boxes,
        "source_id": f["source_id"],
    }
