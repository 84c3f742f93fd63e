"""Counting instances without labels: a centre-heatmap network trained on the generator's
composites.

Beyond Dai et al. 2019. After HocGAN training, every generated composite comes with its own ground
truth: layer i's soft mask m_i gives the instance's centre (the mask centroid, moved by the layout
shift) and eq. (5)'s visibility ``m_i prod_{j>i}(1 - m_j)`` tells how much of it is left visible.
A small fully convolutional network learns to map composites to a heatmap with one unit-peak
Gaussian per (mostly) visible instance. On the real image (rescaled by resolution / window, so that
instances have the training scale) the same network runs over the whole image at once, which is the
same as sliding it window by window and stitching the outputs; the count is the heatmap's mass
divided by a single Gaussian's (robust to touching instances) and the centres are its strongest
local maxima. Details and limits: docs/counting.md.
"""

from __future__ import annotations

import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from PIL import Image, ImageDraw
from scipy import ndimage

from indep_seg import checks
from indep_seg.composition import composite_layers
from indep_seg.hoc import instances as inst
from indep_seg.hoc.estimate import foreground_components
from indep_seg.hoc.patches import rescale_image
from indep_seg.optimizers import FusedAdam

__all__ = [
    "build_counter",
    "centre_targets",
    "to_gray",
    "jitter_instance_gain",
    "match_instance_contrast",
    "gaussian_blur",
    "blur_augment",
    "dihedral_augment",
    "counter_pairs",
    "heatmap_loss",
    "CounterTrainer",
    "train_counter",
    "predict_heatmap",
    "single_instance_mass",
    "count_image",
    "count_instances",
    "check_counting_image",
    "peaks",
    "save_counter",
    "load_counter",
    "draw_overlay",
]


def build_counter(width: int = 32, name: str = "centre_counter") -> keras.Model:
    """FCN image ``[B, H, W, 3]`` -> heatmap ``[B, H, W, 1]`` (any H, W divisible by 2)."""
    checks.check_int(width, "width", minimum=1)
    inp = keras.Input((None, None, 3), name="image")
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    skip = x
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", dilation_rate=4, activation="relu")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Concatenate()([x, skip])
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    out = layers.Conv2D(1, 1, name="heatmap")(x)
    return keras.Model(inp, out, name=name)


def centre_targets(
    out,
    sigma: float,
    min_visible: float = 0.5,
    min_mass: float = 1.0,
    background=None,
    min_contrast: float = 0.0,
):
    """Heatmap targets from one `HocGAN.generate(..., return_all=True)` output.

    Instance i of an example counts with weight ``clip((v_i - 0.25) / 0.5, 0, 1)`` where ``v_i`` is
    the
    visible fraction of its in-window mask (eq. 5's visibility over the warped mask), so a layer
    hidden under others does not count; layers with mask mass below `min_mass` pixels are empty.
    `min_visible` is where the weight reaches 0.5 (default 0.5). With `background` (x_0, ``[B, R, R,
    3]``)
    and ``min_contrast > 0``, an instance also needs its mean visible difference from the background
    beneath, ``|I_i - x_0|``, to reach `min_contrast` (weight ramps from 0 at half of it): a layer
    that paints background-coloured pixels is invisible in the composite and must not count.

    Returns ``(heatmap [B, R, R, 1], centres [B, N, 2] (x, y), weights [B, N])``.
    """
    layers_ = out["layers"]
    m = layers_[..., 3]  # [B, N, R, R]
    r = tf.shape(m)[-1]
    rf = tf.cast(r, tf.float32)
    grid = tf.range(rf) + 0.0
    mass = tf.reduce_sum(m, axis=[-2, -1])  # [B, N]
    cx = tf.reduce_sum(m * grid[None, None, None, :], axis=[-2, -1]) / (mass + 1e-6)
    cy = tf.reduce_sum(m * grid[None, None, :, None], axis=[-2, -1]) / (mass + 1e-6)
    shifts = tf.cast(out["shifts"], tf.float32)  # [B, N, 2] (dx, dy)
    cx, cy = cx + shifts[..., 0], cy + shifts[..., 1]
    inwin = tf.reduce_sum(out["warped"][..., 3], axis=[-2, -1])
    vis = tf.reduce_sum(out["visibility"][..., 0], axis=[-2, -1])
    frac = vis / (inwin + 1e-6)
    weight = tf.clip_by_value((frac - (min_visible - 0.25)) / 0.5, 0.0, 1.0)
    weight *= tf.cast(mass > min_mass, tf.float32) * tf.cast(inwin > 0.25 * mass, tf.float32)
    if background is not None and min_contrast > 0:
        diff = tf.reduce_mean(
            tf.abs(out["warped"][..., :3] - background[:, None]), axis=-1
        )  # [B, N, R, R]
        vis_m = out["visibility"][..., 0]
        contrast = tf.reduce_sum(vis_m * diff, axis=[-2, -1]) / (vis + 1e-6)
        weight *= tf.clip_by_value((contrast - 0.5 * min_contrast) / (0.5 * min_contrast), 0.0, 1.0)
    dx2 = tf.square(grid[None, None, None, :] - cx[..., None, None])
    dy2 = tf.square(grid[None, None, :, None] - cy[..., None, None])
    g = tf.exp(-(dx2 + dy2) / (2.0 * sigma * sigma))  # [B, N, R, R]
    heat = tf.reduce_sum(weight[..., None, None] * g, axis=1)[..., None]
    return heat, tf.stack([cx, cy], -1), weight


def to_gray(images):
    """Luminance (channel mean) replicated to 3 channels: ``[..., 3] -> [..., 3]``."""
    return tf.repeat(tf.reduce_mean(images, axis=-1, keepdims=True), 3, axis=-1)


def jitter_instance_gain(out, background, gain_jitter: float, seed=None):
    """Re-composite `out` (a `HocGAN.generate(..., return_all=True)` dict) with every warped
    layer's appearance scaled by its own gain ``exp(U(-gain_jitter, gain_jitter))`` (clipped to
    [0, 1]); masks, layout and eq. (5)'s visibility are unchanged.

    Real clusters hold instances of many brightnesses (stained nuclei: mean intensity 0.14 to 0.9
    on the DSB image) while a generator trained for minutes covers fewer; the counter must count an
    instance whatever its brightness, so it is shown the same generated instances at other gains.
    """
    warped = out["warped"]
    shape = tf.concat([tf.shape(warped)[:2], [1, 1, 1]], 0)
    u = (
        tf.random.uniform(shape, -1.0, 1.0, seed=seed)
        if seed is None or isinstance(seed, int)
        else tf.random.stateless_uniform(shape, seed, -1.0, 1.0)
    )
    gain = tf.exp(gain_jitter * u)
    rgb = tf.clip_by_value(warped[..., :-1] * gain, 0.0, 1.0)
    warped = tf.concat([rgb, warped[..., -1:]], axis=-1)
    composite, extras = composite_layers(warped, background=background, return_layers=True)
    return dict(out, warped=warped, composite=composite, **extras)


def match_instance_contrast(out, background, low: float, high: float, seed=None):
    """Re-composite `out` (a `HocGAN.generate(..., return_all=True)` dict) with every instance's
    contrast to the background beneath it drawn log-uniformly from ``[low, high]``.

    Layer i's contrast is its mask-weighted mean difference from x_0, ``c_i = sum m_i (I_i - x_0) /
    sum m_i``; its appearance becomes ``x_0 + (c / c_i) (I_i - x_0)`` (clipped to [0, 1]), which
    keeps
    its texture, mask, layout and eq. (5)'s visibility. Layers darker than the background (c_i <= 0,
    a generator's "holes") are left as they are. A generator trained for minutes paints instances at
    the brightnesses it found easiest (on the DSB nuclei image twice the real median contrast),
    while
    a counter must count every instance that stands out of the background, from the faintest one
    that
    still counts (`centre_targets`' ``min_contrast``) to the brightest; `low` and `high` come from
    the
    image (`instance_contrast_range`).
    """
    low, high = float(low), float(high)
    if not (0 < low <= high):
        raise ValueError(f"low, high: expected 0 < low <= high, got {low}, {high}")
    warped = out["warped"]
    rgb, m = warped[..., :-1], warped[..., -1:]
    x0 = background[:, None]
    diff = tf.reduce_mean(rgb - x0, axis=-1, keepdims=True)
    c_i = tf.reduce_sum(m * diff, axis=[2, 3, 4], keepdims=True) / (
        tf.reduce_sum(m, axis=[2, 3, 4], keepdims=True) + 1e-6
    )
    shape = tf.shape(c_i)
    u = (
        tf.random.uniform(shape, seed=seed)
        if seed is None or isinstance(seed, int)
        else tf.random.stateless_uniform(shape, seed)
    )
    target = tf.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    k = tf.where(c_i > 0.02, target / tf.maximum(c_i, 0.02), tf.ones_like(c_i))
    rgb = tf.clip_by_value(x0 + k * (rgb - x0), 0.0, 1.0)
    warped = tf.concat([rgb, m], axis=-1)
    composite, extras = composite_layers(warped, background=background, return_layers=True)
    return dict(out, warped=warped, composite=composite, **extras)


def gaussian_blur(images, sigma, radius: int):
    """Each example ``images[b]`` (``[B, H, W, C]``) blurred by its own Gaussian of standard
    deviation
    ``sigma[b]`` px, truncated at `radius` px, borders mirrored (scipy's ``mode="reflect"``)."""
    images = tf.convert_to_tensor(images, tf.float32)
    b, c = tf.shape(images)[0], images.shape[-1]
    t = tf.range(-radius, radius + 1, dtype=tf.float32)[None, :]
    sig = tf.reshape(tf.convert_to_tensor(sigma, tf.float32), [-1, 1])
    k = tf.exp(-tf.square(t) / (2.0 * tf.square(sig)))
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # [B, K]
    # one depthwise pass per axis over the (example, channel) pairs stacked as channels
    xt = tf.transpose(images, [1, 2, 0, 3])  # [H, W, B, C]
    h, w = tf.shape(xt)[0], tf.shape(xt)[1]
    xt = tf.reshape(xt, [1, h, w, -1])
    kk = tf.transpose(tf.repeat(k, c, axis=0))  # [K, B*C]
    xt = tf.pad(xt, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    xt = tf.nn.depthwise_conv2d(xt, kk[None, :, :, None], [1, 1, 1, 1], "VALID")
    xt = tf.nn.depthwise_conv2d(xt, kk[:, None, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(xt, [h, w, b, c]), [2, 0, 1, 3])


def _is_stateless(seed) -> bool:
    """Whether `seed` is a stateless TF seed (a shape-[2] integer tensor), not None / an op seed."""
    return seed is not None and not isinstance(seed, int)


def _three_seeds(seed):
    """Three draws' seeds from one: None stays None, an int op seed ``s`` gives ``s, s+1, s+2``,
    a stateless seed is split in three (`tf.random.experimental.stateless_split`)."""
    if seed is None:
        return None, None, None
    if isinstance(seed, int):
        return seed, seed + 1, seed + 2
    return tuple(tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)))


def _uniform(shape, seed, minval=0.0, maxval=1.0):
    """``U(minval, maxval)``: stateful with an op seed (or None), stateless with a tensor seed."""
    if _is_stateless(seed):
        return tf.random.stateless_uniform(shape, seed, minval, maxval)
    return tf.random.uniform(shape, minval, maxval, seed=seed)


def blur_augment(images, max_sigma: float, noise: float = 0.0, seed=None):
    """Gaussian blur of a random width in ``[0, max_sigma]`` px per example (`gaussian_blur`), plus
    Gaussian noise of a random standard deviation in ``[0, noise]``, clipped to [0, 1].

    A real image reaches the counter through an area-resampling shrink (`rescale_image`), so its
    instances have soft rims; a small generator's instances have hard, sometimes blocky ones. A
    counter that relied on the hard rim would put its peaks on the real instances' edges.
    `seed`: None, an int op seed, or a shape-[2] tensor for stateless draws.
    """
    x = images
    b = tf.shape(images)[0]
    s0, s1, s2 = _three_seeds(seed)
    if max_sigma > 0:
        sig = _uniform([b], s0, 1e-3, max_sigma)
        x = gaussian_blur(x, sig, int(math.ceil(3 * max_sigma)))
    if noise > 0:
        sd = _uniform([b, 1, 1, 1], s1, 0.0, noise)
        x = x + sd * (
            tf.random.stateless_normal(tf.shape(x), s2)
            if _is_stateless(s2)
            else tf.random.normal(tf.shape(x), seed=s2)
        )
    return tf.clip_by_value(x, 0.0, 1.0)


def dihedral_augment(images, heatmaps, seed=None):
    """The same random flip / transpose (one of the 8 symmetries of the square) of every image and
    its target heatmap, drawn per example.

    A generator trained for minutes draws its instances with one-sided quirks (a sharp right
    edge, a shadow below) that a counter can learn to rely on; the instances of a real cluster
    come in every orientation. On the nuclei image, with the same generator, the count went from
    90 to 104 of 125 (docs/counting.md); the centres' placement on real nuclei did not improve.
    `seed`: None, an int op seed, or a shape-[2] tensor for stateless draws.
    """
    x = tf.concat([images, heatmaps], axis=-1)
    c = images.shape[-1]
    s = _three_seeds(seed)
    if _is_stateless(s[0]):
        x = tf.image.stateless_random_flip_left_right(x, s[0])
        x = tf.image.stateless_random_flip_up_down(x, s[1])
    else:
        x = tf.image.random_flip_left_right(x, seed=s[0])
        x = tf.image.random_flip_up_down(x, seed=s[1])
    transpose = _uniform([tf.shape(x)[0], 1, 1, 1], s[2]) < 0.5
    x = tf.where(transpose, tf.transpose(x, [0, 2, 1, 3]), x)
    return x[..., :c], x[..., c:]


def counter_pairs(
    gan,
    background,
    sigma: float,
    seed=None,
    min_contrast: float = 0.0,
    gain_jitter: float = 0.0,
    grayscale: bool = False,
    dihedral: bool = False,
    contrast_range=None,
    blur_sigma: float = 0.0,
    noise: float = 0.0,
):
    """One batch of the counter's training pairs ``(images [B, R, R, 3], heatmaps [B, R, R, 1])``:
    the frozen generator's composites over `background` (``[B, R, R, 3]``) and their
    `centre_targets`, augmented as `train_counter` describes.

    `seed`: a shape-[2] tensor, split among the augmentations' draws (None: TF's stateful ones);
    the generator draws its layers and layout from its own seed generators.
    """
    out = gan.generate(
        tf.shape(background)[0], background=background, training=False, return_all=True
    )
    seeds = (
        [None] * 4
        if seed is None
        else tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4))
    )
    if gain_jitter > 0:
        out = jitter_instance_gain(out, background, gain_jitter, seed=seeds[0])
    if contrast_range is not None:
        out = match_instance_contrast(out, background, *contrast_range, seed=seeds[1])
    target, _, _ = centre_targets(out, sigma, background=background, min_contrast=min_contrast)
    x = to_gray(out["composite"]) if grayscale else out["composite"]
    if blur_sigma > 0 or noise > 0:
        x = blur_augment(x, blur_sigma, noise, seed=seeds[2])
    if dihedral:
        x, target = dihedral_augment(x, target, seed=seeds[3])
    return x, target


def heatmap_loss(target, pred):
    """The counter's regression loss: 100 x the mean squared heatmap error."""
    return tf.reduce_mean(tf.square(pred - target)) * 100.0


class CounterTrainer(keras.Model):
    """The centre counter's training step as a `keras.Model`: `heatmap_loss` between the counter's
    heatmap and the target, one optimizer step on the counter's weights.

    Batches are ``(images [B, H, W, 3], heatmaps [B, H, W, 1])``, or, with `pairs`, whatever
    `pairs(batch, seed)` turns into such a pair inside the step (`train_counter`: the frozen
    generator's composites over the batch's backgrounds, `counter_pairs`). `fit` reports each
    step's `loss`. Calling it runs the counter.

    Args:
        counter: the network to train (`build_counter`).
        pairs: None, or a function ``(batch, seed) -> (images, heatmaps)``.
        seed: int or None, the seed of the stateless draws handed to `pairs` (one per step).
    """

    def __init__(self, counter, pairs=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter
        self.pairs = pairs
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def metrics(self):
        return []

    def compile(self, optimizer=None, learning_rate=1e-3, **kwargs):
        """`FusedAdam(learning_rate)` unless an optimizer is given; no XLA unless asked
        (`jit_compile=True`)."""
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer or FusedAdam(learning_rate), **kwargs)

    def call(self, images, training=False):
        return self.counter(images, training=training)

    def train_step(self, data):
        if self.pairs is None:
            images, target = data
        else:
            images, target = self.pairs(data, self.seed_generator.next())
        with tf.GradientTape() as tape:
            loss = heatmap_loss(target, self.counter(images, training=True))
        variables = self.counter.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


class _CounterLog(keras.callbacks.Callback):
    """The loss every `log_every` steps and at the last one, as ``(step, loss)`` in `history` and a
    log line; stops `fit` when `time_limit_s` is spent (checked after every step)."""

    def __init__(self, steps, log_every, time_limit_s, log):
        super().__init__()
        self.steps, self.log_every, self.log = steps, log_every, log
        self.time_limit_s = time_limit_s
        self.history = []
        self.t0 = time.time()

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        if batch % self.log_every == 0 or batch == self.steps - 1:
            self.history.append((batch, loss))
            self.log(f"counter step {batch}: loss {loss:.4f}")
        if self.time_limit_s is not None and time.time() - self.t0 > self.time_limit_s:
            if not self.history or self.history[-1][0] != batch:
                self.history.append((batch, loss))
            self.log(f"counter: time limit reached at step {batch}")
            self.model.stop_training = True


def train_counter(
    gan,
    dataset,
    steps: int,
    sigma: float,
    counter=None,
    learning_rate=1e-3,
    time_limit_s: float | None = None,
    log_every: int = 200,
    log=print,
    min_contrast: float = 0.0,
    gain_jitter: float = 0.0,
    grayscale: bool = False,
    dihedral: bool = False,
    contrast_range=None,
    blur_sigma: float = 0.0,
    noise: float = 0.0,
    seed: int | None = None,
):
    """Train the centre counter on the (frozen) generator's composites over the dataset's
    backgrounds (`CounterTrainer.fit`, `steps` steps of the batches' ``"background"``).

    `gain_jitter` > 0 re-composites each batch with per-instance gains (`jitter_instance_gain`);
    `grayscale` trains on luminance only (`to_gray`), for gray images, whose counter then never sees
    the colours a generator may paint; `dihedral` shows every composite and its target in a random
    one of the square's 8 orientations (`dihedral_augment`); `contrast_range` ``(low, high)`` draws
    every instance's contrast from that range (`match_instance_contrast`, after any gain jitter);
    `blur_sigma` / `noise` soften and noise the composites (`blur_augment`). `seed` seeds those
    draws (None: a seed from Keras' global one, `keras.utils.set_random_seed`); the same seed,
    counter weights, generator state and batches give the same counter. Stops early when
    `time_limit_s` is spent. Returns ``(counter, history)``, history a list of ``(step, loss)``.
    """
    steps = checks.check_int(steps, "steps", minimum=0)
    log_every = checks.check_int(log_every, "log_every", minimum=1)
    gain_jitter = float(checks.check_positive_number(gain_jitter, "gain_jitter", allow_zero=True))
    counter = counter or build_counter()
    if steps == 0:
        return counter, []
    options = dict(
        min_contrast=min_contrast,
        gain_jitter=gain_jitter,
        grayscale=grayscale,
        dihedral=dihedral,
        contrast_range=contrast_range,
        blur_sigma=blur_sigma,
        noise=noise,
    )

    def pairs(batch, step_seed):
        return counter_pairs(gan, batch["background"], sigma, seed=step_seed, **options)

    trainer = CounterTrainer(counter, pairs=pairs, seed=seed)
    trainer.compile(learning_rate=learning_rate)
    logger = _CounterLog(steps, log_every, time_limit_s, log)
    trainer.fit(
        dataset, epochs=1, steps_per_epoch=steps, callbacks=[logger], shuffle=False, verbose=0
    )
    return counter, logger.history


def predict_heatmap(counter, image_scaled, margin: int = 16) -> np.ndarray:
    """Heatmap ``[h, w]`` of a rescaled image ``[h, w, 3]``.

    The image is reflect-padded by `margin` px (and up to a multiple of 4) before the network runs
    and the output cropped back: with zero padding the network saw a dark frame around every image,
    and on a dark-field image's edges it answered with false centres (issue 19); a reflected border
    looks like the image's middle. Images larger than 2048 px a side run in overlapping tiles.
    """
    a = np.asarray(image_scaled, np.float32)
    h, w = a.shape[:2]
    m = int(max(0, min(margin, h - 1, w - 1)))
    ph, pw = (-(h + 2 * m)) % 4, (-(w + 2 * m)) % 4
    a = np.pad(
        a, ((m, m + ph), (m, m + pw), (0, 0)), mode="reflect" if m or ph or pw else "constant"
    )
    tile = 2048
    H, W = a.shape[:2]
    if H <= tile and W <= tile:
        heat = np.asarray(counter(a[None], training=False))[0, :, :, 0]
    else:
        heat = np.zeros((H, W), np.float32)
        step = tile - 2 * 64
        for y0 in range(0, H, step):
            for x0 in range(0, W, step):
                ys, xs = max(0, min(y0, H - tile)), max(0, min(x0, W - tile))
                ys, xs = ys - ys % 4, xs - xs % 4
                part = np.asarray(counter(a[None, ys : ys + tile, xs : xs + tile], training=False))[
                    0, :, :, 0
                ]
                ty, tx = (64 if ys > 0 else 0), (64 if xs > 0 else 0)
                heat[ys + ty : ys + part.shape[0], xs + tx : xs + part.shape[1]] = part[ty:, tx:]
    return heat[m : m + h, m : m + w]


def peaks(heat, sigma: float, threshold: float = 0.3):
    """Local maxima of `heat` above `threshold` in a ``(2 ceil(sigma) + 1)`` neighbourhood,
    strongest first: array ``[K, 3]`` of (x, y, value)."""
    size = 2 * int(math.ceil(sigma)) + 1
    mx = ndimage.maximum_filter(heat, size=size, mode="constant", cval=-np.inf)
    ys, xs = np.nonzero((heat >= mx) & (heat > threshold))
    vals = heat[ys, xs]
    order = np.argsort(-vals)
    return (
        np.stack([xs[order], ys[order], vals[order]], -1).astype(np.float64)
        if len(order)
        else np.zeros((0, 3))
    )


def single_instance_mass(heat, image, sigma: float, band=(0.5, 1.5), min_singles: int = 5):
    """How much heatmap mass the counter gives one instance *of this image*, in units of one
    target Gaussian (2 pi sigma^2): ``(mass, number of instances it was measured on)``, or
    ``(None, n)`` when fewer than `min_singles` instances qualify.

    Measured on the image's own clear single instances, found without labels: the classical
    components (`estimate.foreground_components`: Otsu, opening) whose area is within `band` of
    their median area. Every heatmap pixel belongs to the nearest component (a Voronoi partition),
    so each component's mass is what the counter put on it and around it; the median over the
    single ones is returned. On generated composites the counter gives an instance mass 1; on real
    instances, which look somewhat unlike the generator's, it may give them a broader, heavier
    (or a lighter) response, by a factor that is nearly the same for every instance of the image
    (docs/counting.md).
    """
    heat = np.clip(np.asarray(heat, np.float64), 0, None)
    _, labels, areas, _ = foreground_components(image)
    if areas.size == 0:
        return None, 0
    med = float(np.median(areas))
    single = (areas >= band[0] * med) & (areas <= band[1] * med)
    small = np.asarray(
        Image.fromarray(labels.astype(np.int32)).resize(
            (heat.shape[1], heat.shape[0]), Image.NEAREST
        )
    )
    if not (small > 0).any():
        return None, 0
    _, (iy, ix) = ndimage.distance_transform_edt(small == 0, return_indices=True)
    owner = small[iy, ix]
    mass = ndimage.sum(heat, owner, np.arange(1, int(labels.max()) + 1)) / (
        2.0 * math.pi * sigma * sigma
    )
    present = np.isin(np.arange(1, int(labels.max()) + 1), np.unique(small))
    chosen = single & present
    if int(chosen.sum()) < min_singles:
        return None, int(chosen.sum())
    return float(np.median(mass[chosen])), int(chosen.sum())


def count_image(
    counter,
    image,
    window: int,
    resolution: int,
    sigma: float,
    threshold: float = 0.3,
    grayscale: bool = False,
    calibrate: bool = True,
    calibration_limits=(1 / 3, 3.0),
):
    """Count instances in a full image (float ``[H, W, 3]`` in [0, 1]); `grayscale`: the counter was
    trained on luminance (`train_counter(grayscale=True)`), so it sees the image's luminance.

    The raw count is the heatmap's mass over one Gaussian's, 2 pi sigma^2. With `calibrate` it is
    divided by `single_instance_mass` (the mass the counter gives one clear single instance of
    this image), unless that could not be measured or falls outside `calibration_limits` (then a
    counter that misses most instances would be inflated rather than corrected): the raw count
    stands and ``calibration`` is None.

    Returns dict ``count`` (int), ``count_raw`` (float), ``calibration`` (float or None),
    ``calibration_instances``, ``calibration_refused`` (measured, outside the limits),
    ``centres`` (``[[x, y], ...]`` full-resolution pixels, the `count` strongest heatmap peaks),
    ``mass`` (float count), ``num_peaks`` and ``heatmap``.
    """
    a = np.asarray(image, np.float32)
    if grayscale:
        a = np.repeat(a.mean(-1, keepdims=True), 3, -1)
    h, w = a.shape[:2]
    scaled = rescale_image(a, window, resolution)
    heat = predict_heatmap(counter, scaled)
    raw = float(np.clip(heat, 0, None).sum() / (2.0 * math.pi * sigma * sigma))
    cal, n_single = single_instance_mass(heat, a, sigma) if calibrate else (None, 0)
    refused = cal is not None and not calibration_limits[0] <= cal <= calibration_limits[1]
    if refused:
        cal = None
    mass = raw / cal if cal else raw
    pk = peaks(heat, sigma, threshold)
    n = int(round(mass))
    chosen = pk[:n]
    sy, sx = h / scaled.shape[0], w / scaled.shape[1]
    centres = [
        [round(float((x + 0.5) * sx - 0.5), 1), round(float((y + 0.5) * sy - 0.5), 1)]
        for x, y, _ in chosen
    ]
    return {
        "count": n,
        "centres": centres,
        "mass": round(mass, 3),
        "count_raw": round(raw, 3),
        "calibration": None if cal is None else round(cal, 4),
        "calibration_instances": n_single,
        "calibration_refused": bool(refused),
        "num_peaks": int(len(pk)),
        "heatmap": heat,
    }


MIN_COUNTER_STEPS = 500  # a counter trained less is not trusted by default (count_instances)
#: `count_instances`' automatic choice answers with the LoG centres when the learned count is more
#: than this factor above or below the LoG count: two estimators that disagree that much mean the
#: learned one met an image unlike its training composites (issue #19, session 12: a counter
#: trained on three images counted 1789 of 289 nuclei on a fourth, whose calibration was refused;
#: on the eight other development images the two counts were within a factor of 1.2).
MAX_COUNT_DISAGREEMENT = 2.0
#: Where the automatic choice trusts the learned counter, the count it answers is the mean of the
#: learned and the LoG counts (`count_by_mean`), and the centres and label map are the LoG's: two
#: estimators whose errors are independent (they erred in opposite directions on most development
#: images). Chosen on the tuned images the learned counter answered (session 12's 30-minute run
#: trained on dsb2018_image, 04acab76, 150b0ffa): |error| 0.8 / 8.5 / 6.6 % learned, 8.8 / 2.4 /
#: 8.6 % LoG, 4.8 / 5.5 / 1.0 % their mean (docs/counting.md, session 13; the held-out figures of
#: session 12 and a stained held-out image's +20 % had been seen before the choice).
AUTOMATIC_COUNT = "mean"
#: Kinds of image (`instances.describe_kind`) whose automatic answer is the LoG's alone: on the
#: tuned stained image f952cc65 the learned counter (30 minutes, trained on cbca32da) counted
#: +11.9 %, the LoG +1.3 % and their mean +6.6 %; the learned counter over-counted every stained
#: development image (+10 to +25 %: docs/counting.md, session 13).
LOG_ONLY_KINDS = ("stained",)
MAX_COUNT_PIXELS = (
    64_000_000  # 8000 x 8000: larger images are refused (memory), see docs/counting.md
)


def check_counting_image(image, name: str = "image"):
    """Clear errors for images that cannot be counted: too large (over `MAX_COUNT_PIXELS`), too
    small
    (under 16 px a side), constant. Returns the image as float32."""
    a = np.asarray(image, np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected [H, W, 3], got shape {a.shape}")
    h, w = a.shape[:2]
    if h * w > MAX_COUNT_PIXELS:
        raise ValueError(
            f"{name}: {w}x{h} pixels is more than the {MAX_COUNT_PIXELS // 1_000_000} megapixels "
            "one "
            f"count handles; cut it into tiles and add the counts"
        )
    if min(h, w) < 16:
        raise ValueError(f"{name}: {w}x{h} pixels is too small to count (at least 16 px a side)")
    return a


def count_instances(
    counter,
    meta: dict,
    image,
    threshold: float = 0.3,
    calibrate: bool = True,
    window: int | None = None,
    centres_from: str | None = None,
) -> dict:
    """The whole counting pipeline on one image (float ``[H, W, 3]`` in [0, 1]), the Python API of
    `indep-seg count`.

    1. With a normalising model (``meta["normalise"]``, the default since issue 19) the image
    becomes
       its nucleus signal (`instances.nucleus_signal`: polarity and stain from its own histogram)
       and its window follows its own LoG scale (`instances.estimate_scale`), ``window_per_sigma x
       sigma``, so the counter sees nuclei at the size it was trained on whatever the magnification.
    2. The learned counter (`count_image`) gives the heatmap, the calibrated count and its centres.
    3. The classical detector (`instances.log_centres`) gives the LoG centres on the same signal.
    4. The instance label map: a watershed seeded at the chosen centres
    (`instances.watershed_instances`; on bright field with a cytoplasm plateau each basin is cut
    at half of its nucleus's own peak, ``own_peak``).

    `centres_from`: "learned", "log" or None (the model's ``centres_from``, else the automatic
    choice) picks which centres are the answer (``count``: the learned calibrated count, whose
    centres are its strongest peaks, or the number of LoG centres). The automatic choice answers
    with the LoG where the counter trained fewer than `MIN_COUNTER_STEPS` steps, or its
    calibration on this image was refused (`count_image`), or its count is more than
    `MAX_COUNT_DISAGREEMENT` times above or below the LoG count, or the image is of a kind in
    `LOG_ONLY_KINDS` (stained) (``fallback`` says why); otherwise
    ``count`` is `count_by_mean` of the two (`AUTOMATIC_COUNT`) with the LoG's centres and label
    map. ``count_from`` says which rule gave ``count``. Both counts are always returned.
    A constant image gives count 0 and an empty label map (``note`` says why).
    Returns dict: ``count``, ``centres``, ``labels`` ([H, W] int32), ``count_learned``,
    ``count_log``, ``count_raw``, ``calibration``, ``window``, ``sigma``, ``polarity``, ``kind``,
    ``illumination_min`` (the light field's darkest relative illumination divided out, 1.0 when
    it was even),
    ``kind_mismatch`` (the training images were of another polarity / colour), ``heatmap``.
    """
    a = check_counting_image(image)
    h, w = a.shape[:2]
    automatic = centres_from is None and not meta.get("centres_from")
    centres_from = _requested_centres(meta, centres_from)
    try:
        ns = inst.nucleus_signal(a)
        sc = inst.estimate_scale(ns.signal)
    except inst.ImageKindError as e:
        return _nothing_to_count(h, w, str(e))
    kind = inst.describe_kind(ns.meta())
    x, win = _counter_input(a, ns, sc["sigma"], meta, window)
    learned = count_image(
        counter,
        x,
        win,
        int(meta["resolution"]),
        float(meta["sigma"]),
        threshold=threshold,
        grayscale=bool(meta.get("grayscale", False)),
        calibrate=calibrate,
    )
    det, plateau, log = inst.classical_centres(a, ns, sc["sigma"])
    log_xy = [[round(float(c[0]), 1), round(float(c[1]), 1)] for c in log]
    fallback = None
    count_from = centres_from
    if automatic and centres_from == "learned":
        fallback = _learned_count_doubt(learned, len(log_xy), kind)
        if fallback:
            centres_from = count_from = "log"
        elif AUTOMATIC_COUNT == "mean":
            centres_from, count_from = "log", "mean"
    centres = learned["centres"] if centres_from == "learned" else log_xy
    seeds = np.array([[c[0], c[1], 1.0] for c in centres], np.float64).reshape(-1, 3)
    labels = inst.watershed_instances(det, seeds, sc["sigma"], own_peak=plateau)
    count = {
        "learned": learned["count"],
        "log": len(log_xy),
        "mean": count_by_mean(learned["count"], len(log_xy)),
    }[count_from]
    return {
        "count": count,
        "centres": centres,
        "labels": labels,
        "count_learned": learned["count"],
        "count_log": len(log_xy),
        "count_raw": learned["count_raw"],
        "calibration": learned["calibration"],
        "calibration_instances": learned["calibration_instances"],
        "num_peaks": learned["num_peaks"],
        "mass": learned["mass"],
        "window": win,
        "sigma": round(float(sc["sigma"]), 3),
        "polarity": ns.polarity,
        "kind": kind,
        "illumination_min": ns.meta()["illumination_min"],
        "kind_mismatch": _kind_mismatch(meta, ns),
        "centres_from": centres_from,
        "count_from": count_from,
        "fallback": fallback,
        "heatmap": learned["heatmap"],
    }


def _requested_centres(meta: dict, centres_from: str | None) -> str:
    """Which centres `count_instances` starts from: the caller's, else the model's
    ``centres_from``, else the LoG's for a counter trained under `MIN_COUNTER_STEPS` steps and the
    learned counter's otherwise."""
    if centres_from is None:
        trained = meta.get("steps")
        centres_from = meta.get("centres_from") or (
            "log" if trained is not None and int(trained) < MIN_COUNTER_STEPS else "learned"
        )
    checks.check_choice(centres_from, "centres_from", ("learned", "log"))
    return centres_from


def _nothing_to_count(h: int, w: int, note: str) -> dict:
    """`count_instances`' answer for an image without a nucleus signal (a constant image): count
    0, an empty label map, and ``note`` saying why."""
    return {
        "count": 0,
        "centres": [],
        "labels": np.zeros((h, w), np.int32),
        "count_learned": 0,
        "count_log": 0,
        "count_raw": 0.0,
        "calibration": None,
        "window": None,
        "sigma": None,
        "polarity": None,
        "kind": None,
        "illumination_min": None,
        "kind_mismatch": False,
        "heatmap": None,
        "count_from": None,
        "note": note,
    }


def _counter_input(a, ns, sigma: float, meta: dict, window: int | None):
    """`(image the counter sees, window)`: with a normalising model the nucleus signal and a window
    of ``window_per_sigma x sigma`` (the image's own LoG scale), else the image and the model's
    window; `window` overrides; clipped to 4 px and the image's sides."""
    h, w = a.shape[:2]
    if meta.get("normalise"):
        x = np.repeat(ns.signal[..., None], 3, -1)
        win = window or int(round(float(meta["window_per_sigma"]) * sigma))
    else:
        x = a
        win = window or int(meta["window"])
    return x, int(max(4, min(win, h, w)))


def _kind_mismatch(meta: dict, ns) -> bool:
    """The image's polarity and colour are not those of any image the model trained on."""
    trained = [
        (i.get("polarity"), i.get("colour"))
        for i in (meta.get("images") or [])
        if i.get("polarity")
    ]
    return bool(trained) and (ns.polarity, ns.colour) not in trained


def count_by_mean(count_learned: int, count_log: int) -> int:
    """The mean of the learned and the LoG counts, rounded half up: the automatic answer where both
    are trusted (`AUTOMATIC_COUNT`)."""
    return int(math.floor((int(count_learned) + int(count_log)) / 2.0 + 0.5))


def _learned_count_doubt(learned: dict, count_log: int, kind: str | None = None):
    """Why the learned count of `count_image` should not be the automatic answer (None: no
    reason): the image is of a kind in `LOG_ONLY_KINDS`, or the counter's calibration on this
    image was measured and refused (outside its limits: the counter gives this image's clear
    single instances a mass it never gave a training instance), or it and the LoG count differ by
    more than `MAX_COUNT_DISAGREEMENT` times."""
    if kind in LOG_ONLY_KINDS:
        return f"{kind} images: the LoG answers (LOG_ONLY_KINDS)"
    if learned["calibration_refused"]:
        return "the learned counter's calibration on this image was refused (outside its limits)"
    n, m = learned["count"], count_log
    if max(n, m) > MAX_COUNT_DISAGREEMENT * max(min(n, m), 1):
        return (
            f"the learned count ({n}) and the LoG count ({m}) differ by more than "
            f"{MAX_COUNT_DISAGREEMENT:g}x"
        )
    return None


def save_counter(directory, counter, meta: dict):
    """Write ``counter.keras`` and ``counter.json`` (window, resolution, sigma, ...) atomically."""
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"counter.tmp-{os.getpid()}.keras")
    counter.save(tmp)
    os.replace(tmp, os.path.join(directory, "counter.keras"))
    tmpj = os.path.join(directory, f"counter.json.tmp-{os.getpid()}")
    with open(tmpj, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmpj, os.path.join(directory, "counter.json"))


def load_counter(path):
    """`path`: a counter folder, or a model dir holding ``counter/``. Returns ``(model, meta)``."""
    path = os.fspath(path)
    cands = [path, os.path.join(path, "counter")]
    for c in cands:
        if os.path.isfile(os.path.join(c, "counter.keras")) and os.path.isfile(
            os.path.join(c, "counter.json")
        ):
            with open(os.path.join(c, "counter.json")) as f:
                meta = json.load(f)
            return keras.saving.load_model(os.path.join(c, "counter.keras"), compile=False), meta
    raise FileNotFoundError(
        f"model: no counter found in {path} (expected counter/counter.keras and "
        f"counter/counter.json from 'indep-seg train --experiment hoc')"
    )


def draw_overlay(image, centres, radius: float = 6.0) -> np.ndarray:
    """uint8 RGB overlay: the image with a red ring and dot at each centre."""
    a = (np.clip(np.asarray(image, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a).convert("RGB")
    d = ImageDraw.Draw(im)
    for x, y in centres:
        d.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(255, 40, 40), width=2)
        d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(255, 255, 0))
    return np.asarray(im)
