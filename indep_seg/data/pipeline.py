"""tf.data pipelines on decoded elements: the box crop (Dai et al. 2019), augmentation, batching.

`box_crop_pipeline` turns a reader's dataset (one element per image, any number of boxes)
into one element per box, cropped with the project's box-crop rule
(`indep_seg.box_crop.box_window` + `crop_to_window`) and resized to `resolution`:

    {"image": float32 [R, R, 3] in [0, 1], "mask": float32 [R, R, 1] in [0, 1] (antialiased),
     "has_mask": bool, "box": float32 [4] (the box, pixels of the image),
     "window": float32 [4] (the crop window before augmentation), "source_id": string}

Order of work, so that the expensive part runs once:
1. deterministic stage (parallel): decode (done by the reader) -> crop a *context* window
   (the crop window grown by the largest jitter) at the output scale -> uint8;
2. optional `cache` (memory, or a file path) of those small uint8 crops: from the second
   epoch on no image is decoded or resampled from full size again;
3. optional shuffle (seeded) and repeat;
4. batch (the small uint8 crops), then augmentation (parallel, one vectorised op per batch):
   random scale/shift of the window inside the context and horizontal flip, with stateless
   random ops seeded by `(seed, batch index)` (`(seed, element index)` when unbatched), so
   that the stream is identical across runs and independent of parallelism;
5. prefetch.
"""

from __future__ import annotations

import math

import tensorflow as tf

from indep_seg import box_crop

__all__ = ["box_crop_pipeline", "background_crop_pipeline", "crop_boxes"]

AUTOTUNE = tf.data.AUTOTUNE


def _context_pad(resolution: int, jitter: float) -> int:
    return int(math.ceil(1.5 * jitter * resolution)) if jitter > 0 else 0


def crop_boxes(
    element,
    resolution: int,
    margin: float = 0.0,
    square: bool = False,
    pad: int = 0,
    supersample: int = 2,
):
    """One decoded element -> `[K, R + 2 pad, R + 2 pad, 4]` uint8 crops (RGB + mask x 255) and
    windows.

    Each box's window (`box_window(box, margin, square)`) is grown by `pad / resolution` of its
    size on every side, so that the window proper covers the central `R x R` pixels.
    """
    boxes = tf.reshape(tf.cast(element["boxes"], tf.float32), [-1, 4])
    windows = box_crop.box_window(boxes, margin=margin, square=square)
    size = resolution + 2 * pad
    if pad:
        grow = pad / resolution
        x0, y0, x1, y1 = tf.unstack(windows, axis=-1)
        dw, dh = (x1 - x0) * grow, (y1 - y0) * grow
        context = tf.stack([x0 - dw, y0 - dh, x1 + dw, y1 + dh], axis=-1)
    else:
        context = windows
    mask = tf.cast(element["mask"], tf.uint8)
    stacked = tf.concat(
        [tf.cast(element["image"], tf.uint8), mask * tf.constant(255, tf.uint8)], axis=-1
    )
    k = tf.shape(boxes)[0]
    images = tf.cond(
        k > 1, lambda: tf.repeat(stacked[tf.newaxis], k, axis=0), lambda: stacked[tf.newaxis]
    )
    crops = box_crop.crop_to_window(images, context, size, supersample=supersample)
    crops = tf.cast(tf.clip_by_value(tf.round(crops), 0.0, 255.0), tf.uint8)
    crops.set_shape([None, size, size, 4])
    return crops, boxes, windows


def _check_pipeline_arguments(resolution, jitter, batch_size, shuffle_buffer, seed) -> None:
    """ValueError naming the argument of `box_crop_pipeline` that is out of range."""
    if not (isinstance(resolution, int) and resolution >= 4):
        raise ValueError(f"resolution: expected an integer >= 4, got {resolution!r}")
    if not (isinstance(jitter, (int, float)) and 0 <= jitter <= 0.5):
        raise ValueError(f"jitter: expected a number in [0, 0.5], got {jitter!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size!r}")
    if not (isinstance(shuffle_buffer, int) and shuffle_buffer >= 0):
        raise ValueError(f"shuffle_buffer: expected an integer >= 0, got {shuffle_buffer!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")


def _check_decoded(ds) -> None:
    """ValueError unless `ds` yields the decoded elements of `indep_seg.data` readers."""
    spec = ds.element_spec
    missing = {"image", "mask", "has_mask", "boxes", "source_id"} - set(
        spec if isinstance(spec, dict) else {}
    )
    if missing:
        raise ValueError(
            "ds: expected decoded elements from indep_seg.data readers, missing keys "
            f"{sorted(missing)}"
        )


def _crop_stage(resolution, margin, square, pad, supersample):
    """The deterministic stage: one decoded element -> its boxes' uint8 context crops
    (`crop_boxes`), with each box's box, window, has_mask and source_id."""

    def stage_crop(e):
        crops, boxes, windows = crop_boxes(e, resolution, margin, square, pad, supersample)
        k = tf.shape(boxes)[0]
        return {
            "crop": crops,
            "box": boxes,
            "window": windows,
            "has_mask": tf.fill([k], e["has_mask"]),
            "source_id": tf.fill([k], e["source_id"]),
        }

    return stage_crop


def _repeat(ds, repeat):
    """`repeat`: False (once), True (forever) or a number of epochs."""
    if repeat is True:
        return ds.repeat()
    return ds.repeat(int(repeat)) if repeat else ds


def _cache_shuffle_repeat(ds, cache, shuffle_buffer: int, seed: int, repeat):
    """Caches the small crops (`cache`: True for memory, or a file path), shuffles them (seeded)
    and repeats them."""
    if cache is True:
        ds = ds.cache()
    elif cache:
        ds = ds.cache(str(cache))
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return _repeat(ds, repeat)


def _jitter_boxes(key, n, resolution: int, size: int, jitter: float, flip: bool):
    """`crop_and_resize` boxes `[n, 4]` of random sub-windows of `size`-pixel context crops: the
    window proper (the central `resolution` pixels) scaled and shifted by up to `jitter` of its
    size and, with `flip`, sampled from right to left half of the time.

    Output pixel i samples the context at start + (i + 0.5) * step - 0.5 (pixel centres, as
    `crop_to_window`); a flip is the same window sampled from right to left (crop_and_resize
    takes x1 < x0). Randomness: stateless, from `key`."""
    s = tf.random.experimental.stateless_split(key, 3)
    scale = tf.exp(tf.random.stateless_uniform([n], s[0], -math.log1p(jitter), math.log1p(jitter)))
    shift = tf.random.stateless_uniform([n, 2], s[1], -jitter, jitter) * resolution
    step = scale  # input pixels per output pixel (the window proper is R context pixels)
    start = size / 2.0 + shift - 0.5 * resolution * step[:, None]
    first = start + 0.5 * step[:, None] - 0.5
    last = start + (resolution - 0.5) * step[:, None] - 0.5
    if flip:
        do_flip = tf.random.stateless_uniform([n], s[2]) < 0.5
        first_x = tf.where(do_flip, last[:, 0], first[:, 0])
        last_x = tf.where(do_flip, first[:, 0], last[:, 0])
    else:
        first_x, last_x = first[:, 0], last[:, 0]
    return tf.stack([first[:, 1], first_x, last[:, 1], last_x], axis=-1) / float(size - 1)


def _augment_stage(resolution: int, size: int, seed: int, augment: bool, jitter, flip):
    """The augmentation stage on a batch `[B, size, size, 4]` of uint8 context crops -> the
    pipeline's elements (float in [0, 1]); per-batch randomness from `(seed, index)`."""

    def stage_augment(index, e):
        crop = e["crop"]
        if augment:
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
            n = tf.shape(crop)[0]
            boxes = _jitter_boxes(key, n, resolution, size, jitter, flip)
            crop = tf.image.crop_and_resize(
                crop,
                boxes,
                tf.range(n),
                [resolution, resolution],
                method="bilinear",
                extrapolation_value=0.0,
            )
        else:
            crop = tf.cast(crop, tf.float32)
        crop = crop * (1.0 / 255.0)
        return {
            "image": crop[..., :3],
            "mask": crop[..., 3:],
            "has_mask": e["has_mask"],
            "box": e["box"],
            "window": e["window"],
            "source_id": e["source_id"],
        }

    return stage_augment


def _one_at_a_time(stage_augment, resolution: int):
    """`stage_augment` on one element (a batch of one), with static output shapes."""

    def augment_one(index, e):
        out = stage_augment(index, tf.nest.map_structure(lambda t: t[tf.newaxis], e))
        out = tf.nest.map_structure(lambda t: t[0], out)
        out["image"] = tf.ensure_shape(out["image"], [resolution, resolution, 3])
        out["mask"] = tf.ensure_shape(out["mask"], [resolution, resolution, 1])
        return out

    return augment_one


def box_crop_pipeline(
    ds,
    resolution: int,
    margin: float = 0.0,
    square: bool = False,
    augment: bool = False,
    *,
    batch_size: int | None = None,
    drop_remainder: bool = False,
    shuffle_buffer: int = 0,
    seed: int = 0,
    cache=False,
    repeat=False,
    jitter: float = 0.05,
    flip: bool = True,
    supersample: int = 2,
    prefetch: bool = True,
):
    """Per-box crops of a reader's dataset, ready for `keras.Model.fit`.

    Args:
        ds: a dataset of decoded elements (`read_dataset` and the other readers).
        resolution: output side R in pixels.
        margin, square: the crop rule (`indep_seg.box_crop.box_window`); the paper's training
            crop is `margin=0, square=False`, the evaluation protocol `margin=0.25, square=True`.
        augment: random window jitter (scale and shift up to `jitter` of the window size) and,
            with `flip`, random horizontal flips (image and mask together).
        batch_size: batch the elements (None: unbatched).
        drop_remainder: drop a last incomplete batch (static batch shape).
        shuffle_buffer: shuffle per-box crops with this buffer (0: keep order); seeded by `seed`.
        seed: seed of shuffling and augmentation; the output stream is a function of it.
        cache: False, True (memory) or a file path prefix: cache the decoded context crops.
        repeat: False, True (forever) or a number of epochs.
        supersample: antialiasing of `crop_to_window` for the full-size crop.
        prefetch: add `prefetch(AUTOTUNE)` at the end.
    """
    _check_pipeline_arguments(resolution, jitter, batch_size, shuffle_buffer, seed)
    _check_decoded(ds)
    augment = bool(augment)
    pad = _context_pad(resolution, jitter) if augment else 0
    stage_crop = _crop_stage(resolution, margin, square, pad, supersample)
    out = ds.map(stage_crop, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
    out = _cache_shuffle_repeat(out, cache, shuffle_buffer, seed, repeat)
    stage_augment = _augment_stage(resolution, resolution + 2 * pad, seed, augment, jitter, flip)
    if batch_size:
        # Batching the small uint8 crops first makes the augmentation one vectorised op per batch.
        out = out.batch(batch_size, drop_remainder=drop_remainder)
    else:
        stage_augment = _one_at_a_time(stage_augment, resolution)
    out = out.enumerate().map(stage_augment, num_parallel_calls=AUTOTUNE, deterministic=True)
    return out.prefetch(AUTOTUNE) if prefetch else out


def _overlap_share(cand, boxes, area):
    """Share of each candidate window `[K, T, 4]` (of area `[K]`) covered by the image's boxes
    `[M, 4]`: the sum of the pairwise intersections (>= their union), `[K, T]`."""
    ix = tf.maximum(
        0.0,
        tf.minimum(cand[..., None, 2], boxes[:, 2]) - tf.maximum(cand[..., None, 0], boxes[:, 0]),
    )
    iy = tf.maximum(
        0.0,
        tf.minimum(cand[..., None, 3], boxes[:, 3]) - tf.maximum(cand[..., None, 1], boxes[:, 1]),
    )
    return tf.reduce_sum(ix * iy, axis=-1) / area[:, None]


def _background_placer(resolution, margin, square, max_overlap, tries, seed, supersample):
    """`place(index, element)`: for each box, the first of `tries` random windows of its crop
    window's size inside the image that overlaps the boxes by at most `max_overlap`, cropped
    like the boxes (`crop_to_window`); `"valid"` is False where none fits."""

    def place(index, e):
        boxes = tf.reshape(tf.cast(e["boxes"], tf.float32), [-1, 4])
        windows = box_crop.box_window(boxes, margin=margin, square=square)
        shape = tf.shape(e["image"])
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        ww = windows[:, 2] - windows[:, 0]
        wh = windows[:, 3] - windows[:, 1]
        k = tf.shape(boxes)[0]
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
        u = tf.random.stateless_uniform(tf.stack([k, tries, 2]), key)
        x0 = u[..., 0] * tf.maximum(w - ww, 0.0)[:, None]
        y0 = u[..., 1] * tf.maximum(h - wh, 0.0)[:, None]
        cand = tf.stack([x0, y0, x0 + ww[:, None], y0 + wh[:, None]], axis=-1)  # [K, T, 4]
        fits = tf.logical_and(ww <= w, wh <= h)[:, None]
        valid = tf.logical_and(_overlap_share(cand, boxes, ww * wh) <= max_overlap, fits)
        first = tf.argmax(tf.cast(valid, tf.int32), axis=1, output_type=tf.int32)
        chosen = tf.gather(cand, first, batch_dims=1)
        images = tf.repeat(tf.cast(e["image"], tf.float32)[tf.newaxis], k, axis=0)
        crops = box_crop.crop_to_window(images, chosen, resolution, supersample=supersample)
        crops = tf.clip_by_value(tf.round(crops), 0.0, 255.0) / 255.0
        return {
            "image": crops,
            "window": chosen,
            "valid": tf.reduce_any(valid, axis=1),
            "source_id": tf.fill([k], e["source_id"]),
        }

    return place


def background_crop_pipeline(
    ds,
    resolution: int,
    margin: float = 0.0,
    square: bool = False,
    *,
    max_overlap: float = 0.0,
    tries: int = 16,
    batch_size: int | None = None,
    drop_remainder: bool = False,
    shuffle_buffer: int = 0,
    seed: int = 0,
    repeat=False,
    supersample: int = 2,
    prefetch: bool = True,
):
    """Background crops at the same scale as the box crops (Dai et al. 2019's background source).

    For every box of every image, a window of the same pixel size as the box's crop window
    (`box_window(box, margin, square)`) is placed at random inside the same image where it
    overlaps that image's boxes by at most `max_overlap` of its area (up to `tries` random
    places; boxes where none fits are dropped), and cropped with the same `crop_to_window`
    resampling as `box_crop_pipeline`, so real crops and backgrounds share scale and sharpness
    (DESIGN.md §7). With `repeat`, each epoch draws new places (stateless randomness seeded by
    `(seed, image index)`).

    Yields `{"image": float32 [R, R, 3] in [0, 1], "window": float32 [4], "source_id": string}`.
    """
    if not (isinstance(resolution, int) and resolution >= 4):
        raise ValueError(f"resolution: expected an integer >= 4, got {resolution!r}")
    if not (isinstance(max_overlap, (int, float)) and 0 <= max_overlap <= 1):
        raise ValueError(f"max_overlap: expected a number in [0, 1], got {max_overlap!r}")
    if not (isinstance(tries, int) and tries >= 1):
        raise ValueError(f"tries: expected a positive integer, got {tries!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size!r}")

    place = _background_placer(resolution, margin, square, max_overlap, tries, seed, supersample)
    out = (
        _repeat(ds, repeat)
        .enumerate()
        .map(place, num_parallel_calls=AUTOTUNE, deterministic=True)
        .unbatch()
    )
    out = out.filter(lambda e: e["valid"]).map(
        lambda e: {
            "image": tf.ensure_shape(e["image"], [resolution, resolution, 3]),
            "window": e["window"],
            "source_id": e["source_id"],
        },
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if shuffle_buffer:
        out = out.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if batch_size:
        out = out.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        out = out.prefetch(AUTOTUNE)
    return out
