"""The batches `ForegroundSegGAN.fit` accepts, and how a batch of photos with boxes becomes one.

A batch is a dict (a `tf.data.Dataset` of dicts, e.g. parsed from TFRecords) in one of two forms:

| key | form A: crops | form B: photos with boxes |
|---|---|---|
| `"image"` | float32 `[B, R, R, 3]` in [0, 1]: box crops at the model's resolution R | `[B, H, W,
3]` photos, uint8 or float32 in [0, 1], one size per batch |
| `"box"` | absent | float32 `[B, 4]` pixel `x0, y0, x1, y1` of the object (x1, y1 exclusive) |
| `"background"` | required: `[B, R, R, 3]` patches without the object | optional `[B, R, R, 3]`;
absent: cut from each photo outside its box (below) |
| `"prior"` | `[B, R, R, 1]` per-image prior mask in [0, 1] of the crop: needed when the model's
`prior_weight` > 0 | same, of the crop of the box |
| `"area"` | optional `[B]`: a per-image a of eq. (7) (replaces the model's `area_a`) | same |
| `"prior_weight"` | optional `[B]`: each prior's weight in the prior-consistency term (e.g. 1
for the confident priors, 0 for the rest; absent: every prior weighs 1) | same |

Other keys (e.g. `"source_id"`) are ignored. Form B is cropped inside the train step with the
project's crop rule
(`indep_seg.box_crop.box_window(box, margin)` + `crop_to_window`, the rule `Segmenter` and the
serving graph use), so a user's `tf.data` pipeline only decodes, resizes to one size and batches.
Without `"background"`, each photo gives a background patch from the largest strip of it that lies
outside its box (left, right, above or below), of the crop window's size where the strip is wide
enough, at a random place (the model's seed generator); a photo whose box leaves no such strip
borrows
the next photo's. The training command (`indep-seg train --experiment box_seg`) uses scale-matched
backgrounds (`indep_seg.data.backgrounds`), which are better; pass them as `"background"`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from indep_seg.box_crop import box_window, crop_to_window
from indep_seg.distribute import global_batch_draw

__all__ = ["BATCH_KEYS", "prepare_box_seg_batch", "backgrounds_outside_boxes"]

BATCH_KEYS = ("image", "box", "background", "prior", "area", "prior_weight")


def _as_float_images(x):
    """uint8 pixels -> float32 in [0, 1]; float input is taken to be in [0, 1] already."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.uint8:
        return tf.cast(x, tf.float32) / 255.0
    return tf.cast(x, tf.float32)


def prepare_box_seg_batch(data, resolution, margin=0.0, seed_generator=None, needs_prior=False):
    """A batch of either form (module docstring) -> `{"image", "background"[, "prior", "area"]}`
    crops.

    Args:
        data: the batch: a dict, or a tuple whose first item is the dict (`(x,)`, `(x, y)`).
        resolution: R, the crop side of the model (needed for form B).
        margin: the crop margin (`box_window`).
        seed_generator: `keras.random.SeedGenerator` of the background placement (form B without
            `"background"`).
        needs_prior: the model's prior term is on: the batch must carry `"prior"`.

    Raises:
        ValueError naming the missing key, or a key with the wrong rank.
    """
    if isinstance(data, (tuple, list)):
        data = data[0]
    if not isinstance(data, dict):
        raise ValueError(
            f"batch: expected a dict with keys 'image' and 'background' (or 'image' and 'box'); "
            f"got {type(data).__name__}. See indep_seg.box_batches for the batch keys"
        )
    if "boxes" in data and "box" not in data:
        raise ValueError(
            "batch: has 'boxes' (several boxes per photo, as indep_seg.data readers give them) but "
            "no "
            "'box'; give one box per image as 'box' [B, 4] (e.g. boxes[0], or unbatch the boxes)"
        )
    if "image" not in data:
        raise ValueError(
            f"batch: missing key 'image' (got keys {sorted(data)}); ForegroundSegGAN batches are "
            "{'image', 'background'} crops or {'image', 'box'} photos (see indep_seg.box_batches)"
        )
    image = _as_float_images(data["image"])
    if image.shape.rank != 4 or image.shape[-1] != 3:
        raise ValueError(f"batch['image']: expected [B, H, W, 3], got shape {image.shape}")
    out = {}
    if "box" in data:
        if resolution is None:
            raise ValueError(
                "batch['box']: cropping photos needs the model's resolution (its segmentation "
                "network has no `resolution` attribute); pass crops instead"
            )
        box = tf.cast(tf.convert_to_tensor(data["box"]), tf.float32)
        if box.shape.rank != 2 or box.shape[-1] != 4:
            raise ValueError(
                f"batch['box']: expected [B, 4] pixel x0, y0, x1, y1 (one box per image), "
                f"got shape {box.shape}"
            )
        windows = box_window(box, margin)
        out["image"] = crop_to_window(image, windows, int(resolution))
        if "background" in data:
            out["background"] = _as_float_images(data["background"])
        else:
            out["background"] = backgrounds_outside_boxes(
                image, box, int(resolution), margin, seed_generator
            )
    else:
        if "background" not in data:
            raise ValueError(
                f"batch: missing key 'background' (got keys {sorted(data)}); crops need background "
                "patches, or give photos with a 'box' key and the backgrounds are cut from them "
                "(see indep_seg.box_batches)"
            )
        out["image"] = image
        out["background"] = _as_float_images(data["background"])
    if needs_prior and "prior" not in data:
        raise ValueError(
            f"batch: missing key 'prior' (got keys {sorted(data)}): the model's prior_weight > 0 "
            "needs a per-image prior mask [B, R, R, 1] of each crop "
            "(indep_seg.box_prior.box_priors); "
            "or build the model with prior_weight=0"
        )
    if "prior" in data:
        out["prior"] = tf.cast(data["prior"], tf.float32)
    if "area" in data:
        out["area"] = tf.cast(data["area"], tf.float32)
    if "prior_weight" in data:
        out["prior_weight"] = tf.cast(data["prior_weight"], tf.float32)
    return out


def backgrounds_outside_boxes(images, boxes, resolution, margin=0.0, seed_generator=None):
    """`[B, R, R, 3]` background patches, each from its photo's largest strip outside its box.

    The patch has the crop window's size (`box_window(box, margin)`), shrunk to the strip where the
    strip is narrower, at a uniformly random place in the strip. A photo whose box leaves no strip
    of at least one pixel uses the next photo's patch.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    n = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    windows = box_window(boxes, margin)
    ww, wh = windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]
    x0 = tf.clip_by_value(boxes[:, 0], 0.0, w)
    y0 = tf.clip_by_value(boxes[:, 1], 0.0, h)
    x1 = tf.clip_by_value(boxes[:, 2], 0.0, w)
    y1 = tf.clip_by_value(boxes[:, 3], 0.0, h)
    zero, ones_w, ones_h = tf.zeros_like(x0), tf.fill(tf.shape(x0), w), tf.fill(tf.shape(x0), h)
    strips = tf.stack(
        [
            tf.stack([zero, zero, x0, ones_h], -1),  # left of the box
            tf.stack([x1, zero, ones_w, ones_h], -1),  # right
            tf.stack([zero, zero, ones_w, y0], -1),  # above
            tf.stack([zero, y1, ones_w, ones_h], -1),
        ],
        1,
    )  # below: [B, 4 strips, 4]
    sw, sh = strips[..., 2] - strips[..., 0], strips[..., 3] - strips[..., 1]
    best = tf.argmax(sw * sh, axis=1, output_type=tf.int32)
    strip = tf.gather(strips, best, batch_dims=1)
    sw, sh = strip[:, 2] - strip[:, 0], strip[:, 3] - strip[:, 1]
    cw, ch = tf.minimum(ww, sw), tf.minimum(wh, sh)
    if seed_generator is None:
        seed_generator = keras.random.SeedGenerator(0)
    u = global_batch_draw(lambda k: keras.random.uniform((k, 2), seed=seed_generator), n)
    px = strip[:, 0] + u[:, 0] * (sw - cw)
    py = strip[:, 1] + u[:, 1] * (sh - ch)
    patch = tf.stack([px, py, px + tf.maximum(cw, 1e-3), py + tf.maximum(ch, 1e-3)], -1)
    valid = (cw >= 1.0) & (ch >= 1.0)
    index = tf.range(n)
    source = tf.where(valid, index, tf.math.floormod(index + 1, n))
    return crop_to_window(tf.gather(images, source), tf.gather(patch, source), int(resolution))
