"""Adaptive discriminator augmentation (ADA; Karras et al. 2020a), used by ILSGAN ("We employ
StyleGAN2 with adaptive discriminator augmentation", Zou et al. 2023, Implementation Details).

Every augmentation is differentiable with respect to the images (the generator is trained through
them) and is applied to reals and fakes alike, each transform independently per sample with
probability `p`. The pipeline is ADA's "bgc" set, with the geometric parts fused into one bilinear
warp with reflection padding:

- blit: x-flip, rotation by a multiple of 90 degrees, integer translation (up to 0.125 of the size);
- geometric: isotropic scaling (log2 ~ N(0, 0.2)), rotation (uniform, applied with probability
  `1 - sqrt(1 - p)` twice), anisotropic scaling (log2 ~ N(0, 0.2)), fractional translation (std
  0.125);
- colour: brightness (+N(0, 0.2)), contrast (x lognormal, log2 ~ N(0, 0.5)), saturation
  (x lognormal, log2 ~ N(0, 1)) about the grey point 0.5 / the luma axis.

`AdaptiveAugment` keeps the probability `p` and adjusts it from the overfitting heuristic
`r_t = E[sign(D(real))]` towards `target` (0.6): every `interval` steps,
`p += sign(r_t - target) * batch * interval / (ada_kimg * 1000)`, clipped to [0, 1].
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from indep_seg import checks

__all__ = ["augment", "AdaptiveAugment", "affine_warp_reflect"]


def affine_warp_reflect(images, matrices):
    """Bilinear warp with reflection padding; differentiable w.r.t. `images`.

    Args:
        images: `[N, H, W, C]`.
        matrices: `[N, 3, 3]` mapping *output* pixel coordinates (centred, in pixels: x - (W-1)/2,
            y - (H-1)/2, 1) to input coordinates in the same frame.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    ys, xs = tf.meshgrid(tf.range(hf) - (hf - 1) / 2, tf.range(wf) - (wf - 1) / 2, indexing="ij")
    grid = tf.stack(
        [tf.reshape(xs, [-1]), tf.reshape(ys, [-1]), tf.ones_like(tf.reshape(xs, [-1]))]
    )
    src = tf.matmul(tf.cast(matrices, tf.float32), tf.tile(grid[tf.newaxis], tf.stack([n, 1, 1])))
    sx = src[:, 0] + (wf - 1) / 2
    sy = src[:, 1] + (hf - 1) / 2

    def reflect(v, size):
        period = tf.maximum(2.0 * (size - 1.0), 1.0)
        t = tf.math.floormod(v, period)
        return (size - 1.0) - tf.abs(t - (size - 1.0))

    sx, sy = reflect(sx, wf), reflect(sy, hf)
    x0, y0 = tf.floor(sx), tf.floor(sy)
    ax, ay = sx - x0, sy - y0
    x0i = tf.clip_by_value(tf.cast(x0, tf.int32), 0, w - 1)
    y0i = tf.clip_by_value(tf.cast(y0, tf.int32), 0, h - 1)
    x1i = tf.minimum(x0i + 1, w - 1)
    y1i = tf.minimum(y0i + 1, h - 1)
    flat = tf.reshape(images, tf.stack([n, h * w, -1]))

    def gather(yi, xi):
        return tf.gather(flat, yi * w + xi, batch_dims=1)

    ax, ay = ax[..., tf.newaxis], ay[..., tf.newaxis]
    out = (
        gather(y0i, x0i) * (1 - ax) * (1 - ay)
        + gather(y0i, x1i) * ax * (1 - ay)
        + gather(y1i, x0i) * (1 - ax) * ay
        + gather(y1i, x1i) * ax * ay
    )
    return tf.reshape(out, shape)


def _mat(rows):
    return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)


def _translate(tx, ty):
    o, z = tf.ones_like(tx), tf.zeros_like(tx)
    return _mat([[o, z, tx], [z, o, ty], [z, z, o]])


def _scale(sx, sy):
    o, z = tf.ones_like(sx), tf.zeros_like(sx)
    return _mat([[sx, z, z], [z, sy, z], [z, z, o]])


def _rotate(theta):
    c, s = tf.cos(theta), tf.sin(theta)
    o, z = tf.ones_like(theta), tf.zeros_like(theta)
    return _mat([[c, -s, z], [s, c, z], [z, z, o]])


def augment(
    images,
    p,
    seed=None,
    xflip=True,
    rotate90=True,
    int_translation=True,
    geometric=True,
    color=True,
):
    """Apply ADA's differentiable augmentations to `images` `[N, H, W, 3]` in [0, 1] with
    probability p.

    Args:
        images: float `[N, H, W, 3]`.
        p: scalar probability in [0, 1] (a tensor or variable inside training).
        seed: None or a `keras.random.SeedGenerator`.
        xflip, rotate90, int_translation, geometric, color: enable groups of transforms.
    """
    checks.check_rank(images, "images", 4, "[N, H, W, C]")
    images = tf.convert_to_tensor(images)
    p = tf.cast(p, tf.float32)
    n = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    h, w = size[0], size[1]

    def u(shape=None):
        shape = [n] if shape is None else shape
        if seed is None:
            return tf.random.uniform(shape)
        return tf.cast(keras.random.uniform(shape, seed=seed), tf.float32)

    def g(shape=None):
        shape = [n] if shape is None else shape
        if seed is None:
            return tf.random.normal(shape)
        return tf.cast(keras.random.normal(shape, seed=seed), tf.float32)

    def on(prob=None):
        return tf.cast(u() < (p if prob is None else prob), tf.float32)

    m = tf.eye(3, batch_shape=[n])
    if xflip:
        f = on() * tf.floor(u() * 2)  # flip with prob p/2 as ADA (i ~ U{0,1})
        m = m @ _scale(1 - 2 * f, tf.ones_like(f))
    if rotate90:
        k = on() * tf.floor(u() * 4)
        m = m @ _rotate(k * (math.pi / 2))
    if int_translation:
        e = on()
        tx = tf.round((u() * 2 - 1) * 0.125 * w) * e
        ty = tf.round((u() * 2 - 1) * 0.125 * h) * e
        m = m @ _translate(tx, ty)
    if geometric:
        s = tf.pow(2.0, g() * 0.2 * on())
        m = m @ _scale(s, s)
        p_rot = 1 - tf.sqrt(tf.maximum(1 - p, 0.0))
        m = m @ _rotate((u() * 2 - 1) * math.pi * on(p_rot))
        a = tf.pow(2.0, g() * 0.2 * on())
        m = m @ _scale(a, 1 / a)
        m = m @ _rotate((u() * 2 - 1) * math.pi * on(p_rot))
        e = on()
        m = m @ _translate(g() * 0.125 * w * e, g() * 0.125 * h * e)
    x = images
    if xflip or rotate90 or int_translation or geometric:
        x = affine_warp_reflect(x, m)
    if color:
        b = (g() * 0.2 * on())[:, None, None, None]
        c = tf.pow(2.0, g() * 0.5 * on())[:, None, None, None]
        x = (x - 0.5) * c + 0.5 + b
        sat = tf.pow(2.0, g() * 1.0 * on())[:, None, None, None]
        luma = tf.reduce_mean(x, axis=-1, keepdims=True)
        x = luma + (x - luma) * sat
    return x


class AdaptiveAugment:
    """ADA's probability `p` and its controller (Karras et al. 2020a, sec. 3).

    Args:
        target: the target of `r_t = E[sign(D(real))]` (0.6).
        interval: adjust every `interval` discriminator steps (4).
        ada_kimg: thousands of images for `p` to go from 0 to 1 (500).
        initial_p: starting probability.
    """

    def __init__(self, target=0.6, interval=4, ada_kimg=500.0, initial_p=0.0):
        self.target = float(checks.check_fraction(target, "target"))
        self.interval = checks.check_int(interval, "interval", minimum=1)
        self.ada_kimg = float(checks.check_positive_number(ada_kimg, "ada_kimg"))
        checks.check_fraction(initial_p, "initial_p")
        self.p = tf.Variable(float(initial_p), trainable=False, name="ada_p")
        self.sign_sum = tf.Variable(0.0, trainable=False, name="ada_sign_sum")
        self.count = tf.Variable(0.0, trainable=False, name="ada_count")
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="ada_steps")

    def variables(self):
        return [self.p, self.sign_sum, self.count, self.steps]

    def update(self, real_logits):
        """Accumulate `sign(D(real))`; every `interval` calls, move `p`. Returns the current r_t."""
        real_logits = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
        self.sign_sum.assign_add(tf.reduce_sum(tf.sign(real_logits)))
        self.count.assign_add(tf.cast(tf.size(real_logits), tf.float32))
        self.steps.assign_add(1)
        r_t = self.sign_sum / tf.maximum(self.count, 1.0)

        def adjust():
            delta = tf.sign(r_t - self.target) * self.count / (self.ada_kimg * 1000.0)
            self.p.assign(tf.clip_by_value(self.p + delta, 0.0, 1.0))
            self.sign_sum.assign(0.0)
            self.count.assign(0.0)
            return tf.constant(0)

        tf.cond(tf.equal(self.steps % self.interval, 0), adjust, lambda: tf.constant(0))
        return r_t
