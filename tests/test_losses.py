"""Losses of Dai et al. 2019 and ILSGAN (Zou et al. 2023): values at hand-worked points,
the ILS-MI estimate on independent vs dependent layers, and where gradients go."""

import math

import numpy as np
import pytest
import tensorflow as tf

from indep_seg import losses

LOG2 = math.log(2.0)


def _grad(fn, *tensors):
    tensors = [tf.constant(t, tf.float32) for t in tensors]
    with tf.GradientTape(persistent=True) as tape:
        for t in tensors:
            tape.watch(t)
        value = fn(*tensors)
    return value, [tape.gradient(value, t) for t in tensors]


# ----------------------------------------------------------------------------- GAN losses


def test_gan_losses_at_known_points():
    zeros = np.zeros([4, 1], np.float32)
    np.testing.assert_allclose(losses.generator_loss_ns(zeros), LOG2, rtol=1e-6)
    np.testing.assert_allclose(losses.discriminator_loss(zeros, zeros), 2 * LOG2, rtol=1e-6)
    # logit 2 -> D = sigmoid(2); -log D = log(1 + e^-2)
    np.testing.assert_allclose(
        losses.generator_loss_ns(np.array([2.0], np.float32)), math.log(1 + math.exp(-2)), rtol=1e-6
    )
    # perfect discriminator: real logits +20, fake logits -20 -> ~0
    assert (
        float(
            losses.discriminator_loss(
                np.full([3], 20.0, np.float32), np.full([3], -20.0, np.float32)
            )
        )
        < 1e-8
    )


def test_gan_losses_from_probabilities_match_logits():
    logits = np.array([[-3.0], [-0.5], [0.0], [1.5]], np.float32)
    probs = tf.sigmoid(logits).numpy()
    np.testing.assert_allclose(
        losses.generator_loss_ns(probs, from_logits=False),
        losses.generator_loss_ns(logits),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        losses.discriminator_loss(probs, probs[::-1], from_logits=False),
        losses.discriminator_loss(logits, logits[::-1]),
        rtol=1e-5,
    )
    per = losses.generator_loss_ns(logits, reduction="none").numpy()
    np.testing.assert_allclose(per, np.log1p(np.exp(-logits[:, 0])), rtol=1e-5)
    # patch discriminator outputs are averaged per example
    patch = np.zeros([2, 3, 3, 1], np.float32)
    assert losses.generator_loss_ns(patch, reduction="none").shape == (2,)


# ----------------------------------------------------------------------------- mask losses


def test_area_penalty_by_hand_and_its_gradient():
    # one layer, mean 0.5, a = 0.25 -> (0.5 - 0.25)^2 = 0.0625
    m = np.full([2, 4, 4, 1], 0.5, np.float32)
    np.testing.assert_allclose(losses.area_penalty(m, 0.25), 0.0625, rtol=1e-6)
    # two layers with areas 0.25 and 1.0, a = 0.25 -> (0 + 0.75^2) / 2 = 0.28125
    layers = np.stack([np.zeros([4, 4, 1]), np.ones([4, 4, 1])], 0)[None].astype(np.float32)
    layers[0, 0, :2, :2] = 1.0  # area 4/16 = 0.25
    np.testing.assert_allclose(losses.area_penalty(layers, 0.25), 0.28125, rtol=1e-6)
    # d/dm_u of (mean(m) - a)^2 = 2 (mean - a) / A, averaged over the batch of 2
    _, (g,) = _grad(lambda t: losses.area_penalty(t, 0.25), m)
    np.testing.assert_allclose(g.numpy(), np.full_like(m, 2 * 0.25 / 16 / 2), rtol=1e-5)


def test_mask_hinge_by_hand_and_its_gradient():
    low = np.full([1, 4, 4, 1], 0.1, np.float32)
    high = np.full([1, 4, 4, 1], 0.5, np.float32)
    np.testing.assert_allclose(losses.mask_hinge_loss(low, 0.25), 0.15, rtol=1e-5)
    np.testing.assert_allclose(losses.mask_hinge_loss(high, 0.25), 0.0)
    _, (g_low,) = _grad(lambda t: losses.mask_hinge_loss(t, 0.25), low)
    _, (g_high,) = _grad(lambda t: losses.mask_hinge_loss(t, 0.25), high)
    np.testing.assert_allclose(g_low.numpy(), np.full_like(low, -1 / 16), rtol=1e-5)  # pushes m up
    np.testing.assert_allclose(g_high.numpy(), 0.0)


def test_binarization_by_hand_and_its_gradient():
    m = np.array([0.2, 0.9, 0.0, 1.0], np.float32).reshape(1, 2, 2, 1)
    # (0.2 + 0.1 + 0 + 0) / 4 = 0.075
    np.testing.assert_allclose(losses.binarization_loss(m), 0.075, rtol=1e-5)
    m2 = np.array([0.2, 0.9, 0.3, 0.6], np.float32).reshape(1, 2, 2, 1)
    _, (g,) = _grad(losses.binarization_loss, m2)
    np.testing.assert_allclose(
        g.numpy().ravel(), [0.25, -0.25, 0.25, -0.25], rtol=1e-5
    )  # towards 0 / 1


def test_mask_losses_accept_layer_stacks():
    stack = np.full([2, 3, 4, 4, 1], 0.1, np.float32)
    np.testing.assert_allclose(losses.mask_hinge_loss(stack, 0.2), 0.1, rtol=1e-5)
    np.testing.assert_allclose(losses.binarization_loss(stack), 0.1, rtol=1e-5)
    assert losses.area_penalty(stack, 0.1, reduction="none").shape == (2,)


# ----------------------------------------------------------------------------- R1


def test_r1_penalty_matches_analytic_gradients():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=[3, 4, 4, 2]), tf.float32)
    w = tf.Variable(rng.normal(size=[1, 4, 4, 2]), dtype=tf.float32)

    def linear_d(images, training=True):
        return tf.reduce_sum(images * w, axis=[1, 2, 3])[:, None]

    # D(x) = <w, x> -> grad = w, ||grad||^2 = sum w^2 for every example
    np.testing.assert_allclose(
        losses.r1_penalty(linear_d, x), float(tf.reduce_sum(w * w)), rtol=1e-5
    )

    def square_d(images, training=True):
        return tf.reduce_sum(images**2, axis=[1, 2, 3])

    # D(x) = sum x^2 -> grad = 2x, ||grad||^2 = 4 sum x^2 (per example)
    expected = 4 * np.sum(x.numpy() ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(
        losses.r1_penalty(square_d, x, reduction="none"), expected, rtol=1e-5
    )
    # second-order gradient w.r.t. D's weights: d/dw sum(w^2) = 2w
    with tf.GradientTape() as tape:
        penalty = losses.r1_penalty(linear_d, x)
    np.testing.assert_allclose(tape.gradient(penalty, w).numpy(), 2 * w.numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------- ILS-MI


def test_ils_mi_eq9_and_eq12_by_hand():
    # One pixel, one channel, batch of 2, permutation k = (1, 0).
    f = np.array([0.2, 0.8], np.float32).reshape(2, 1, 1, 1)
    b = np.array([0.3, 0.5], np.float32).reshape(2, 1, 1, 1)
    perm = np.array([1, 0], np.int32)
    # eq. (9): i=0: -|0.3-0.2| + |0.5-0.2| = 0.2 ; i=1: -|0.5-0.8| + |0.3-0.8| = 0.2 -> 0.2
    whole = losses.ils_mi_loss(f, b, np.ones_like(f), separate=False, permutation=perm)
    np.testing.assert_allclose(whole, 0.2, atol=1e-6)
    # Gaussian q: 1/2 [(-(0.01) + 0.09) + (-(0.09) + 0.25)] / 2 = 0.06
    gauss = losses.ils_mi_loss(
        f, b, np.ones_like(f), separate=False, permutation=perm, distribution="gaussian"
    )
    np.testing.assert_allclose(gauss, 0.06, atol=1e-6)
    # eq. (12) with m = (1, 0): b_inv = (0.3, 0), f_vis = (0.2, 0), b_vis = (0, 0.5), f_inv = (0,
    # 0.8)
    # Î(b_inv; f_vis): i=0: -0.1 + |0 - 0.2| = 0.1 ; i=1: -0 + |0.3 - 0| = 0.3 -> 0.2
    # Î(b_vis; f_inv): i=0: -0 + |0.5 - 0| = 0.5 ; i=1: -|0.5-0.8| + |0 - 0.8| = 0.5 -> 0.5
    m = np.array([1.0, 0.0], np.float32).reshape(2, 1, 1, 1)
    loss, terms = losses.ils_mi_loss(f, b, m, permutation=perm, return_terms=True)
    np.testing.assert_allclose(terms["inv_vis"], 0.2, atol=1e-6)
    np.testing.assert_allclose(terms["vis_inv"], 0.5, atol=1e-6)
    np.testing.assert_allclose(loss, 0.7, atol=1e-6)
    # "sum" = the literal L1 norm: 4 elements instead of 1 -> 4x
    f4, b4, m4 = (np.tile(t, [1, 2, 2, 1]) for t in (f, b, m))
    np.testing.assert_allclose(
        losses.ils_mi_loss(f4, b4, m4, permutation=perm, pixel_reduction="sum"), 2.8, atol=1e-5
    )


def _layers(rng, n=256, dependent=False):
    f = rng.uniform(size=[n, 8, 8, 3]).astype(np.float32)
    if dependent:  # b = f + small noise: the background leaks the foreground
        b = np.clip(f + rng.normal(scale=0.05, size=f.shape), 0, 1).astype(np.float32)
    else:
        b = rng.uniform(size=[n, 8, 8, 3]).astype(np.float32)
    return f, b


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_ils_mi_near_zero_for_independent_and_positive_for_dependent_layers(distribution):
    rng = np.random.default_rng(0)
    f, b = _layers(rng)
    fd, bd = _layers(rng, dependent=True)
    common = np.zeros([1, 8, 8, 1], np.float32)
    common[:, 2:6, 1:7] = 1.0
    common = np.repeat(common, 256, axis=0)  # one mask for the whole batch
    random_masks = (rng.uniform(size=[256, 8, 8, 1]) > 0.5).astype(np.float32)
    kw = dict(distribution=distribution, seed=3)
    indep_whole = float(losses.ils_mi_loss(f, b, common, separate=False, **kw))
    indep_sep = float(losses.ils_mi_loss(f, b, common, **kw))
    dep_whole = float(losses.ils_mi_loss(fd, bd, common, separate=False, **kw))
    dep_sep = float(losses.ils_mi_loss(fd, bd, random_masks, **kw))
    scale = 1.0 if distribution == "laplace" else 0.5 * 0.5  # E|u-v| = 1/3 ; E (u-v)^2 / 2 = 1/12
    assert abs(indep_whole) < 0.02 * scale, indep_whole
    assert abs(indep_sep) < 0.02 * scale, indep_sep
    assert dep_whole > 0.25 * scale, dep_whole
    assert dep_sep > 0.25 * scale, dep_sep


def test_ils_mi_gradient_switches():
    rng = np.random.default_rng(1)
    f = tf.constant(rng.uniform(size=[8, 6, 6, 3]), tf.float32)
    b = tf.constant(rng.uniform(size=[8, 6, 6, 3]), tf.float32)
    binary = (rng.uniform(size=[8, 6, 6, 1]) > 0.5).astype(np.float32)
    m = tf.constant(np.clip(binary, 0.0, 1.0), tf.float32)
    vis_f = np.broadcast_to(binary == 1, [8, 6, 6, 3])  # where f is visible
    vis_b = ~vis_f  # where b is visible

    def grads(**kw):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([f, b, m])
            loss = losses.ils_mi_loss(f, b, m, seed=5, **kw)
        return [tape.gradient(loss, t) for t in (f, b, m)]

    gf, gb, gm = grads()
    assert gm is not None and np.abs(gm.numpy()).sum() > 0  # optimize_mask=True reaches m
    assert np.abs(gf.numpy()[vis_f]).sum() > 0 and np.abs(gb.numpy()[vis_b]).sum() > 0

    gf, gb, gm = grads(optimize_mask=False)
    assert gm is None or np.abs(gm.numpy()).sum() == 0  # no gradient to the mask
    assert np.abs(gf.numpy()).sum() > 0 and np.abs(gb.numpy()).sum() > 0  # layers still learn

    gf, gb, gm = grads(optimize_visible=False)
    np.testing.assert_array_equal(gf.numpy()[vis_f], 0.0)  # f_vis = f m is stopped
    np.testing.assert_array_equal(gb.numpy()[vis_b], 0.0)  # b_vis = b (1 - m) is stopped
    assert (
        np.abs(gf.numpy()[~vis_f]).sum() > 0 and np.abs(gb.numpy()[~vis_b]).sum() > 0
    )  # invisible parts do
    assert np.abs(gm.numpy()).sum() > 0


def test_ils_mi_permutation_is_seeded_and_per_sample_terms_average_to_the_loss():
    rng = np.random.default_rng(2)
    f, b = _layers(rng, n=16)
    m = (rng.uniform(size=[16, 8, 8, 1]) > 0.5).astype(np.float32)
    a = losses.ils_mi_loss(f, b, m, seed=1)
    np.testing.assert_allclose(a, losses.ils_mi_loss(f, b, m, seed=1))
    per = losses.ils_mi_loss(f, b, m, seed=1, reduction="none")
    assert per.shape == (16,)
    np.testing.assert_allclose(np.mean(per), a, rtol=1e-5)


# ----------------------------------------------------------------------------- other terms


def test_ils_l1_by_hand_and_where_its_gradients_go():
    f = np.array([0.2, 0.9], np.float32).reshape(1, 1, 2, 1)
    b = np.array([0.3, 0.4], np.float32).reshape(1, 1, 2, 1)
    m = np.array([1.0, 0.0], np.float32).reshape(1, 1, 2, 1)
    # b_inv - f_vis = (0.3-0.2, 0) ; b_vis - f_inv = (0, 0.4-0.9) -> -(0.1/2) - (0.5/2) = -0.3
    np.testing.assert_allclose(losses.ils_l1_loss(f, b, m), -0.3, atol=1e-6)
    np.testing.assert_allclose(losses.ils_l1_loss(f, b, m, pixel_reduction="sum"), -0.6, atol=1e-6)
    # |m (b - f)| + |(1 - m)(b - f)| = |b - f|: eq. (13) is blind to the mask, for any soft m
    soft = np.array([0.3, 0.8], np.float32).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(losses.ils_l1_loss(f, b, soft), -np.mean(np.abs(b - f)), atol=1e-6)
    _, (gf, gb, gm) = _grad(losses.ils_l1_loss, f, b, soft)
    np.testing.assert_array_equal(gm.numpy(), 0.0)
    np.testing.assert_allclose(gf.numpy().ravel(), [0.5, -0.5], atol=1e-6)  # d/df of -mean|b - f|
    np.testing.assert_allclose(gb.numpy().ravel(), [-0.5, 0.5], atol=1e-6)
    # optimize_visible=False (the code's 'l1_distance'): b only under m, f only outside it
    _, (gf, gb, gm) = _grad(lambda *t: losses.ils_l1_loss(*t, optimize_visible=False), f, b, soft)
    np.testing.assert_allclose(gb.numpy().ravel(), [-0.3 / 2, 0.8 / 2], atol=1e-6)
    np.testing.assert_allclose(gf.numpy().ravel(), [0.7 / 2, -0.2 / 2], atol=1e-6)
    assert gm is None or not np.any(gm.numpy())


def test_infogan_information_loss_is_mean_squared_error():
    z = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    zp = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(
        losses.infogan_information_loss(z, zp, reduction="none"), [2.5, 0.5], rtol=1e-6
    )
    np.testing.assert_allclose(losses.infogan_information_loss(z, zp), 1.5, rtol=1e-6)
    z3 = np.zeros([2, 4, 3], np.float32)
    assert losses.infogan_information_loss(z3, z3 + 1).numpy() == pytest.approx(1.0)


def test_smooth_l1_at_known_points():
    x = np.array([0.0, 0.1, -0.2, 0.2499, 0.25, 0.3, -2.0], np.float32)
    expected = [0.0, 0.04, 0.16, 4 * 0.2499**2, 0.25, 0.3, 2.0]
    np.testing.assert_allclose(losses.smooth_l1(x), expected, rtol=1e-5)
    t = np.zeros([1, 2, 2, 1], np.float32)
    p = np.array([0.1, 0.5, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(losses.smooth_l1_loss(t, p), (0.04 + 0.5) / 4, rtol=1e-5)


@pytest.mark.parametrize("name", ["area", "hinge", "binarization", "ils_mi"])
def test_gradients_reach_the_mask(name):
    rng = np.random.default_rng(3)
    f = tf.constant(rng.uniform(size=[4, 6, 6, 3]), tf.float32)
    b = tf.constant(rng.uniform(size=[4, 6, 6, 3]), tf.float32)
    m = tf.constant(rng.uniform(0.05, 0.3, size=[4, 6, 6, 1]), tf.float32)  # small, soft masks
    fn = {
        "area": lambda: losses.area_penalty(m, 0.25),
        "hinge": lambda: losses.mask_hinge_loss(m, 0.25),
        "binarization": lambda: losses.binarization_loss(m),
        "ils_mi": lambda: losses.ils_mi_loss(f, b, m, seed=0),
    }[name]
    with tf.GradientTape() as tape:
        tape.watch(m)
        loss = fn()
    g = tape.gradient(loss, m)
    assert g is not None and np.abs(g.numpy()).sum() > 0


def test_bad_inputs_name_the_argument():
    m = np.zeros([1, 4, 4, 1], np.float32)
    f = np.zeros([1, 4, 4, 3], np.float32)
    with pytest.raises(ValueError, match=r"masks: expected values in \[0, 1\], got max 2"):
        losses.area_penalty(m + 2, 0.25)
    with pytest.raises(ValueError, match="a: expected a number in"):
        losses.area_penalty(m, 1.5)
    with pytest.raises(ValueError, match="mask: expected 1 channel"):
        losses.binarization_loss(f)
    with pytest.raises(ValueError, match="eta: expected a number in"):
        losses.mask_hinge_loss(m, -0.1)
    with pytest.raises(ValueError, match="bg: expected the same shape as fg"):
        losses.ils_mi_loss(f, f[:, :2], m)
    with pytest.raises(ValueError, match="distribution: expected one of"):
        losses.ils_mi_loss(f, f, m, distribution="cauchy")
    with pytest.raises(TypeError, match="optimize_mask: expected True or False"):
        losses.ils_mi_loss(f, f, m, optimize_mask="yes")
    with pytest.raises(ValueError, match="reduction: expected one of"):
        losses.binarization_loss(m, reduction="sum")
    with pytest.raises(ValueError, match="fake_scores: expected values in"):
        losses.generator_loss_ns(np.array([1.5], np.float32), from_logits=False)
    with pytest.raises(ValueError, match="fake_scores: expected finite values"):
        losses.generator_loss_ns(np.array([np.nan], np.float32))
    with pytest.raises(TypeError, match="discriminator: expected a callable"):
        losses.r1_penalty(None, f)
    with pytest.raises(ValueError, match="z_pred: expected the same shape as z"):
        losses.infogan_information_loss(np.zeros([2, 3], np.float32), np.zeros([2, 4], np.float32))
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        losses.smooth_l1(np.array([1, 2]))
