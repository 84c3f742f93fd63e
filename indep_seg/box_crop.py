"""The box-crop rule: from a box to a fixed-size crop, and from the crop's mask back.

Dai et al. 2019 ("Foreground Segmentation on Category-specific Images") crop every
image with its box and scale the crop to 128x128; the evaluation protocol of DRC and
ILSGAN cuts a square of half-side 0.75 x max(w, h) around the box. Both are instances
of one rule, `box_window(boxes, margin, square)`; `crop_to_window` and `paste_back`
are exact inverses of each other up to resampling, built on `tf.image.crop_and_resize`
so that they run inside exported serving graphs with dynamic sizes (and convert to
ONNX), and fill with black where a window leaves the image (reflect padding would
mirror the object into the crop; DESIGN.md §7).

Coordinates: boxes and windows are pixel `x0, y0, x1, y1` with `x1, y1` exclusive, in
the continuous convention where pixel `(r, c)` covers `[c, c+1) x [r, r+1)`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["mask_box", "box_window", "crop_to_window", "paste_back", "EVAL_MARGIN", "EVAL_SQUARE"]

#: The evaluation protocol of ../shared/datasets/README.md: half-side 0.75 * max(w, h).
EVAL_MARGIN = 0.25
EVAL_SQUARE = True


def mask_box(mask):
    """Tight pixel box ``[x0, y0, x1, y1]`` (x1, y1 exclusive, floats) of a mask (``[H, W]`` or
    ``[H, W, 1]``, foreground where non-zero / True), or None when the mask is empty.

    The one NumPy mask-to-box rule (evaluation, box-level training data); the tf.data pipelines'
    graph version is `indep_seg.data.decode.mask_box`."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask: expected [H, W] or [H, W, 1], got shape {mask.shape}")
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _as_boxes(boxes, name="boxes"):
    boxes = tf.convert_to_tensor(boxes, dtype=tf.float32)
    if boxes.shape.rank == 1:
        boxes = boxes[tf.newaxis]
    if boxes.shape.rank != 2 or (boxes.shape[-1] is not None and boxes.shape[-1] != 4):
        raise ValueError(f"{name}: expected shape [N, 4] (x0, y0, x1, y1), got {boxes.shape}")
    if tf.executing_eagerly():
        b = boxes.numpy()
        bad = np.nonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | ~np.isfinite(b).all(axis=1))[
            0
        ]
        if bad.size:
            raise ValueError(
                f"{name}: box {int(bad[0])} = {b[bad[0]].tolist()} is empty or not finite "
                "(expected x1 > x0 and y1 > y0)"
            )
    return boxes


def box_window(boxes, margin: float = 0.0, square: bool = False):
    """The crop window of each box: the box grown by `margin` x its size on every side.

    With `square=True` the window is the square of half-side `(0.5 + margin) * max(w, h)`
    centred on the box (the evaluation protocol is `margin=0.25, square=True`). With
    `margin=0, square=False` the window is the box itself, as in Dai et al. 2019.

    Args:
        boxes: `[N, 4]` (or `[4]`) pixel boxes `x0, y0, x1, y1`.
        margin: non-negative fraction of the box size added on each side.
        square: make the window square around the box centre.

    Returns:
        `[N, 4]` float32 windows `x0, y0, x1, y1`; they may extend past the image.
    """
    if not (isinstance(margin, (int, float)) and margin >= 0 and np.isfinite(margin)):
        raise ValueError(f"margin: expected a finite number >= 0, got {margin!r}")
    boxes = _as_boxes(boxes)
    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    w, h = x1 - x0, y1 - y0
    if square:
        half_w = half_h = (0.5 + margin) * tf.maximum(w, h)
    else:
        half_w, half_h = (0.5 + margin) * w, (0.5 + margin) * h
    return tf.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def _sample_windows(images, windows, out_h, out_w):
    """Bilinear samples of each window at `out_h x out_w` pixel centres, black outside the image.

    `tf.image.crop_and_resize` samples output row i at input row `y1n*(H-1) +
    i*(y2n-y1n)*(H-1)/(out_h-1)` and returns its extrapolation value past the outer pixel
    *centres*. We sample row i at the centre of the i-th of `out_h` equal slices of the
    window, `u_i = y0 + (i + 0.5) * h_window / out_h - 0.5`, on the image padded by one
    replicated pixel (so the half pixel at each border keeps the edge value), and zero
    the samples whose position lies outside the image `[-0.5, H - 0.5]`.
    """
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    # ONNX parity (serving owner's edit): onnxruntime's Resize in tf_crop_and_resize mode
    # ignores the box on an axis whose input and output sizes are equal, so a padded side
    # equal to the output side gave wrong crops after tf2onnx. One more (never sampled)
    # zero row / column at the end when the parities match makes the two sizes differ.
    extra_h = 1 - tf.math.floormod(h + 2 - tf.cast(out_h, tf.int32), 2)
    extra_w = 1 - tf.math.floormod(w + 2 - tf.cast(out_w, tf.int32), 2)
    padded = tf.pad(padded, tf.stack([[0, 0], [0, extra_h], [0, extra_w], [0, 0]]))
    x0, y0, x1, y1 = tf.unstack(windows, axis=-1)

    def axis(start, stop, size_in, size_out, extra):
        size_in = tf.cast(size_in, tf.float32)
        n = tf.cast(size_out, tf.float32)
        step = (stop - start) / n
        first = start + 0.5 * step - 0.5  # [N]
        last = start + (n - 0.5) * step - 0.5
        positions = first[:, None] + tf.range(n)[None, :] * step[:, None]  # [N, out]
        valid = tf.cast(
            (positions >= -0.5 - 1e-4) & (positions <= size_in - 0.5 + 1e-4), tf.float32
        )
        denom = size_in + 1.0 + tf.cast(extra, tf.float32)  # padded size - 1
        return (first + 1.0) / denom, (last + 1.0) / denom, valid

    ya, yb, valid_y = axis(y0, y1, h, out_h, extra_h)
    xa, xb, valid_x = axis(x0, x1, w, out_w, extra_w)
    boxes = tf.stack([ya, xa, yb, xb], axis=-1)
    samples = tf.image.crop_and_resize(
        padded,
        boxes,
        tf.range(tf.shape(windows)[0]),
        tf.stack([out_h, out_w]),
        method="bilinear",
        extrapolation_value=0.0,
    )
    return samples * (valid_y[:, :, None, None] * valid_x[:, None, :, None])


def crop_to_window(images, windows, size: int, supersample: int = 2):
    """Crops `images` to `windows` and resizes to `size x size`, black outside the image.

    Args:
        images: `[N, H, W, C]` float images (one window per image).
        windows: `[N, 4]` pixel windows from `box_window`.
        size: output side in pixels.
        supersample: sample at `size * supersample` and average-pool, an antialiasing
            filter for large photos (1 disables it).

    Returns:
        `[N, size, size, C]` float32.
    """
    if not (isinstance(size, (int, np.integer)) and size > 0):
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    if not (isinstance(supersample, (int, np.integer)) and supersample >= 1):
        raise ValueError(f"supersample: expected an integer >= 1, got {supersample!r}")
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"images: expected rank 4 [N, H, W, C], got shape {images.shape}")
    images = tf.cast(images, tf.float32)
    windows = _as_boxes(windows, "windows")
    n = int(size) * int(supersample)
    crops = _sample_windows(images, windows, n, n)
    if supersample > 1:
        crops = tf.nn.avg_pool2d(crops, supersample, supersample, "VALID")
    return crops


def paste_back(masks, windows, image_hw):
    """The inverse of `crop_to_window`: each mask resampled into its window of an `H x W` image.

    Args:
        masks: `[N, R, R, C]` crops (masks) in window coordinates.
        windows: `[N, 4]` pixel windows the crops were taken from.
        image_hw: `(H, W)` of the full image (ints or scalar tensors).

    Returns:
        `[N, H, W, C]` float32, zero outside the windows.
    """
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank != 4:
        raise ValueError(f"masks: expected rank 4 [N, R, R, C], got shape {masks.shape}")
    masks = tf.cast(masks, tf.float32)
    windows = _as_boxes(windows, "windows")
    h, w = image_hw
    mshape = tf.shape(masks)
    mh = tf.cast(mshape[1], tf.float32)
    mw = tf.cast(mshape[2], tf.float32)
    x0, y0, x1, y1 = tf.unstack(windows, axis=-1)
    hf = tf.cast(h, tf.float32)
    wf = tf.cast(w, tf.float32)
    # The full image, expressed as a "window" in the mask's pixel frame.
    sy = mh / (y1 - y0)
    sx = mw / (x1 - x0)
    inverse = tf.stack([-x0 * sx, -y0 * sy, (wf - x0) * sx, (hf - y0) * sy], axis=-1)
    return _sample_windows(masks, inverse, h, w)
