"""Graph-mode decoding shared by every reader, the TFRecord converters and the tfds builder.

Using the same functions everywhere is what makes the round trip files -> TFRecords ->
dataset (and files -> tfds) give back identical pixels.

The decoded element (the common structure of every reader in `indep_seg.data`):

    {"image": uint8 [H, W, 3],
     "mask": uint8 [H, W, 1] with values 0 / 1 (all zeros when unknown),
     "has_mask": bool [],
     "boxes": float32 [K, 4] pixel x0, y0, x1, y1 (x1, y1 exclusive), K >= 1,
     "source_id": string []}
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "ELEMENT_SPEC_KEYS",
    "decode_photo",
    "decode_photo_to_size",
    "decode_mask",
    "binarize_mask",
    "mask_box",
    "finalize_boxes",
    "element_signature",
]

ELEMENT_SPEC_KEYS = ("image", "mask", "has_mask", "boxes", "source_id")
_JPEG_MAGIC = b"\xff\xd8\xff"


def element_signature():
    """The `tf.TensorSpec` dict of the decoded element."""
    return {
        "image": tf.TensorSpec([None, None, 3], tf.uint8),
        "mask": tf.TensorSpec([None, None, 1], tf.uint8),
        "has_mask": tf.TensorSpec([], tf.bool),
        "boxes": tf.TensorSpec([None, 4], tf.float32),
        "source_id": tf.TensorSpec([], tf.string),
    }


def decode_photo(contents):
    """Any JPEG / PNG / BMP / GIF (first frame) string -> uint8 `[H, W, 3]`."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _is_jpeg(contents):
    return tf.equal(tf.strings.substr(contents, 0, 3), _JPEG_MAGIC)


def decode_photo_to_size(contents, height, width, dct_scaling: bool = True):
    """Decodes a photo and resizes it to `height x width` (the mask's size).

    When the photo is a JPEG at least twice as large as the target on both sides it is
    decoded with DCT scaling (`decode_jpeg(ratio=2|4|8)`, the largest ratio that keeps it at
    least as large as the target), then resized with an antialiased bilinear filter and
    rounded to uint8. A photo already at the target size is returned unchanged.
    `dct_scaling=False` always decodes at full size (for benchmarks).
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)

    def jpeg_scaled():
        shape = tf.io.extract_jpeg_shape(contents)
        factor = tf.minimum(shape[0] // height, shape[1] // width)
        # Branch index 0..3 <-> ratio 1, 2, 4, 8 (ratio is an op attribute, not a tensor).
        index = tf.add_n([tf.cast(factor >= f, tf.int32) for f in (2, 4, 8)])
        branches = [
            lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r) for r in (1, 2, 4, 8)
        ]
        return tf.switch_case(index, branches)

    if not dct_scaling:
        image = decode_photo(contents)
    else:
        image = tf.cond(_is_jpeg(contents), jpeg_scaled, lambda: decode_photo(contents))
    image.set_shape([None, None, 3])
    same = tf.logical_and(tf.equal(tf.shape(image)[0], height), tf.equal(tf.shape(image)[1], width))

    def resize():
        r = tf.image.resize(
            tf.cast(image, tf.float32), tf.stack([height, width]), method="bilinear", antialias=True
        )
        return tf.cast(tf.clip_by_value(tf.round(r), 0.0, 255.0), tf.uint8)

    return tf.cond(same, lambda: image, resize)


def binarize_mask(mask):
    """uint8 mask -> uint8 0/1: threshold at 127 for 0..255 masks, `> 0` for 0/1 label masks.

    A mask whose maximum is at most 1 is a class-id mask (tensorflow/models convention, what
    the converters store); otherwise it is an 8-bit mask such as Weizmann's JPEG masks, whose
    compression noise the threshold at 127 removes.
    """
    mask = tf.convert_to_tensor(mask)
    threshold = tf.where(
        tf.reduce_max(mask) > 1, tf.constant(127, mask.dtype), tf.constant(0, mask.dtype)
    )
    return tf.cast(mask > threshold, tf.uint8)


def decode_mask(contents):
    """Mask file contents (PNG / JPEG / ..., any channels) -> uint8 0/1 `[H, W, 1]`."""
    mask = tf.io.decode_image(contents, channels=1, expand_animations=False)
    mask.set_shape([None, None, 1])
    return binarize_mask(mask)


def mask_box(mask):
    """Tight pixel box `[1, 4]` (x0, y0, x1, y1; exclusive) of a 0/1 mask `[H, W, 1]`; whole image
    if empty."""
    m = tf.cast(mask[..., 0] > 0, tf.int32)
    h = tf.shape(m)[0]
    w = tf.shape(m)[1]
    rows = tf.where(tf.reduce_any(m > 0, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(m > 0, axis=0))[:, 0]

    def box():
        return tf.cast(
            tf.stack(
                [
                    tf.reduce_min(cols),
                    tf.reduce_min(rows),
                    tf.reduce_max(cols) + 1,
                    tf.reduce_max(rows) + 1,
                ]
            ),
            tf.float32,
        )

    def whole():
        return tf.cast(tf.stack([0, 0, w, h]), tf.float32)

    return tf.cond(tf.size(rows) > 0, box, whole)[tf.newaxis]


def finalize_boxes(boxes, mask, has_mask):
    """`boxes` if it has rows, else the mask's box (when there is a mask), else the whole image."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    shape = tf.shape(mask)

    def fallback():
        whole = tf.cast(tf.stack([0, 0, shape[1], shape[0]]), tf.float32)[tf.newaxis]
        return tf.cond(has_mask, lambda: mask_box(mask), lambda: whole)

    return tf.cond(tf.shape(boxes)[0] > 0, lambda: boxes, fallback)


def load_folder_item(item):
    """Eagerly decodes one `indep_seg.data.files.FolderItem` exactly as `read_image_folder` does.

    Returns:
        `(image uint8 [H, W, 3], mask uint8 0/1 [H, W, 1] or None, boxes float32 [K, 4],
        photo_bytes, photo_format)`: boxes are the item's CSV boxes, else the mask's box, else
        empty (= whole image); `photo_bytes` is the original file content and `photo_format`
        'jpeg', 'png' or another PIL-style name. Raises `DataError` naming the file when a file
        does not decode.
    """
    import numpy as np

    from indep_seg.data.files import DataError

    with open(item.image_path, "rb") as f:
        raw = f.read()
    fmt = (
        "jpeg"
        if raw[:3] == _JPEG_MAGIC
        else ("png" if raw[:8] == b"\x89PNG\r\n\x1a\n" else "other")
    )
    mask = None
    if item.mask_path:
        try:
            with open(item.mask_path, "rb") as f:
                mask = decode_mask(f.read()).numpy()
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            raise DataError(f"{item.mask_path}: mask does not decode ({_first_line(e)})") from None
        if mask.shape[:2] != (item.height, item.width):
            raise DataError(
                f"{item.mask_path}: decoded mask is {mask.shape[1]}x{mask.shape[0]}, "
                f"expected {item.width}x{item.height}"
            )
    try:
        if mask is not None:
            image = decode_photo_to_size(raw, item.height, item.width).numpy()
        else:
            image = decode_photo(raw).numpy()
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        raise DataError(f"{item.image_path}: image does not decode ({_first_line(e)})") from None
    boxes = np.asarray(item.boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0 and mask is not None:
        boxes = mask_box(tf.constant(mask)).numpy()
    return image, mask, boxes, raw, fmt


def _first_line(e) -> str:
    text = getattr(e, "message", None) or str(e)
    return text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
