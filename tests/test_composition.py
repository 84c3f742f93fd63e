"""Composition: Dai et al. 2019 eq. (5) and ILSGAN eq. (1) against hand-worked numbers."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.composition import composite, composite_layers, split_rgba

# Two grey layers (one appearance channel + alpha), 2x2 pixels, layer 0 at the bottom.
I0 = np.array([[0.8, 0.6], [0.4, 0.2]])
M0 = np.array([[1.0, 0.5], [0.0, 0.25]])
I1 = np.array([[0.1, 1.0], [0.5, 0.0]])
M1 = np.array([[0.5, 0.0], [1.0, 0.5]])
# Third layer: opaque white at the bottom-right pixel only.
I2 = np.array([[0.0, 0.0], [0.0, 1.0]])
M2 = np.array([[0.0, 0.0], [0.0, 1.0]])


def _stack(*pairs):
    layers = [np.stack([i, m], axis=-1) for i, m in pairs]  # [H, W, 2]
    return np.stack(layers, axis=0)[None].astype(np.float32)  # [1, L, H, W, 2]


def test_two_layers_black_background_by_hand():
    # x0 = 0
    # x1 = I0*M0                 = [[0.8, 0.3], [0.0, 0.05]]
    # x2 = I1*M1 + x1*(1 - M1)   = [[0.05 + 0.4, 0 + 0.3], [0.5 + 0, 0 + 0.025]]
    expected_x1 = np.array([[0.8, 0.3], [0.0, 0.05]])
    expected_x2 = np.array([[0.45, 0.3], [0.5, 0.025]])
    x, extras = composite_layers(_stack((I0, M0), (I1, M1)), return_layers=True)
    np.testing.assert_allclose(x.numpy()[0, ..., 0], expected_x2, atol=1e-6)
    np.testing.assert_allclose(extras["partial"].numpy()[0, 0, ..., 0], expected_x1, atol=1e-6)
    np.testing.assert_allclose(extras["partial"].numpy()[0, 1, ..., 0], expected_x2, atol=1e-6)
    np.testing.assert_allclose(
        extras["carved"].numpy()[0, 1, ..., 0], [[0.05, 0.0], [0.5, 0.0]], atol=1e-6
    )
    # visibility_0 = M0 * (1 - M1) = [[0.5, 0.5], [0, 0.125]]; visibility_1 = M1 (top layer)
    np.testing.assert_allclose(
        extras["visibility"].numpy()[0, 0, ..., 0], [[0.5, 0.5], [0.0, 0.125]], atol=1e-6
    )
    np.testing.assert_allclose(extras["visibility"].numpy()[0, 1, ..., 0], M1, atol=1e-6)


def test_three_layers_and_given_background_by_hand():
    # With x0 = 0.2 everywhere:
    # x1 = I0*M0 + 0.2*(1 - M0)  = [[0.8, 0.3 + 0.1], [0.2, 0.05 + 0.15]] = [[0.8, 0.4], [0.2, 0.2]]
    # x2 = I1*M1 + x1*(1 - M1)   = [[0.05 + 0.4, 0.4], [0.5, 0.1]]
    # x3 = I2*M2 + x2*(1 - M2)   = [[0.45, 0.4], [0.5, 1.0]]
    background = np.full([1, 2, 2, 1], 0.2, np.float32)
    x = composite_layers(_stack((I0, M0), (I1, M1), (I2, M2)), background=background)
    np.testing.assert_allclose(x.numpy()[0, ..., 0], [[0.45, 0.4], [0.5, 1.0]], atol=1e-6)
    # A background without a batch axis is broadcast over the batch.
    x2 = composite_layers(
        np.repeat(_stack((I0, M0), (I1, M1)), 3, axis=0), background=background[0]
    )
    np.testing.assert_allclose(
        x2.numpy()[:, ..., 0], np.repeat([[[0.45, 0.4], [0.5, 0.1]]], 3, 0), atol=1e-6
    )


def test_stacking_order_top_layer_wins():
    red = np.zeros([1, 2, 1, 1, 4], np.float32)
    red[0, 0, ..., 0] = 1.0  # bottom: red, opaque
    red[0, 1, ..., 2] = 1.0  # top: blue, opaque
    red[..., 3] = 1.0
    x = composite_layers(red).numpy()
    np.testing.assert_array_equal(x[0, 0, 0], [0.0, 0.0, 1.0])


def test_visibility_reconstructs_composite_rgb():
    rng = np.random.default_rng(0)
    layers = rng.uniform(size=[3, 4, 5, 6, 4]).astype(np.float32)
    bg = rng.uniform(size=[3, 5, 6, 3]).astype(np.float32)
    x, ex = composite_layers(layers, background=bg, return_layers=True)
    transmit_all = np.prod(1 - layers[..., 3:], axis=1)
    recon = (ex["visibility"].numpy() * layers[..., :3]).sum(axis=1) + transmit_all * bg
    np.testing.assert_allclose(x.numpy(), recon, atol=1e-5)


def test_two_layer_composite_by_hand_and_as_special_case():
    # x = m f + (1 - m) b: [0.25*1 + 0.75*0.2, 1*0.5 + 0*0.8] = [0.4, 0.5]
    f = np.array([[[[1.0], [0.5]]]], np.float32)
    m = np.array([[[[0.25], [1.0]]]], np.float32)
    b = np.array([[[[0.2], [0.8]]]], np.float32)
    np.testing.assert_allclose(composite(f, m, b).numpy().ravel(), [0.4, 0.5], atol=1e-6)
    rng = np.random.default_rng(1)
    f, b = (
        rng.uniform(size=[2, 3, 3, 3]).astype(np.float32),
        rng.uniform(size=[2, 3, 3, 3]).astype(np.float32),
    )
    m = rng.uniform(size=[2, 3, 3, 1]).astype(np.float32)
    layers = np.stack(
        [np.concatenate([b, np.ones_like(m)], -1), np.concatenate([f, m], -1)], axis=1
    )
    np.testing.assert_allclose(
        composite(f, m, b).numpy(), composite_layers(layers).numpy(), atol=1e-6
    )


def test_composite_gradient_wrt_mask_is_f_minus_b():
    rng = np.random.default_rng(2)
    f = tf.constant(rng.uniform(size=[1, 2, 2, 3]), tf.float32)
    b = tf.constant(rng.uniform(size=[1, 2, 2, 3]), tf.float32)
    m = tf.constant(rng.uniform(size=[1, 2, 2, 1]), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(m)
        y = tf.reduce_sum(composite(f, m, b))
    np.testing.assert_allclose(
        tape.gradient(y, m).numpy(), np.sum(f - b, axis=-1, keepdims=True), atol=1e-6
    )


def test_works_inside_tf_function_with_unknown_batch():
    fn = tf.function(
        lambda t: composite_layers(t),
        input_signature=[tf.TensorSpec([None, 2, 2, 2, 4], tf.float32)],
    )
    out = fn(tf.ones([3, 2, 2, 2, 4]) * 0.5)
    np.testing.assert_allclose(
        out.numpy(), np.full([3, 2, 2, 3], 0.375), atol=1e-6
    )  # 0.25 + 0.5*0.25


def test_split_rgba():
    rgb, a = split_rgba(np.ones([1, 2, 2, 4], np.float32))
    assert rgb.shape == (1, 2, 2, 3) and a.shape == (1, 2, 2, 1)


def test_bad_inputs_name_the_argument():
    good = np.zeros([1, 2, 2, 2, 4], np.float32)
    with pytest.raises(ValueError, match=r"layers: expected \[B, L, H, W, C \+ 1\]"):
        composite_layers(np.zeros([1, 2, 2, 4], np.float32))
    with pytest.raises(ValueError, match=r"layers: expected values in \[0, 1\], got max 3.2"):
        bad = good.copy()
        bad[0, 0, 0, 0, 3] = 3.2
        composite_layers(bad)
    with pytest.raises(TypeError, match="layers: expected a floating-point"):
        composite_layers(good.astype(np.int32))
    with pytest.raises(ValueError, match="background:"):
        composite_layers(good, background=np.zeros([1, 3, 3, 3], np.float32))
    with pytest.raises(ValueError, match="layers: expected at least 2 channels"):
        composite_layers(np.zeros([1, 2, 2, 2, 1], np.float32))
    f = np.zeros([1, 2, 2, 3], np.float32)
    with pytest.raises(ValueError, match="mask:"):
        composite(f, np.zeros([1, 2, 2, 2], np.float32), f)
    with pytest.raises(ValueError, match="bg: expected the same shape as fg"):
        composite(f, np.zeros([1, 2, 2, 1], np.float32), np.zeros([1, 3, 2, 3], np.float32))
    with pytest.raises(ValueError, match=r"mask: expected values in \[0, 1\], got min -0.5"):
        composite(f, np.full([1, 2, 2, 1], -0.5, np.float32), f)
    with pytest.raises(ValueError, match="mask: expected values in .* got NaN"):
        composite(f, np.full([1, 2, 2, 1], np.nan, np.float32), f)
