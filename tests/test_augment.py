"""ADA augmentations (indep_seg/augment.py): exact geometry, differentiability, the p controller."""

import math

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.augment import AdaptiveAugment, affine_warp_reflect, augment


def _translate(tx, ty):
    return tf.constant([[[1, 0, tx], [0, 1, ty], [0, 0, 1]]], tf.float32)


def test_identity_and_p_zero_are_exact():
    x = np.random.rand(3, 8, 8, 3).astype(np.float32)
    np.testing.assert_allclose(
        affine_warp_reflect(x, tf.eye(3, batch_shape=[3])).numpy(), x, atol=1e-6
    )
    np.testing.assert_allclose(augment(x, 0.0).numpy(), x, atol=1e-6)


def test_integer_translation_with_reflection_matches_numpy():
    x = np.random.rand(1, 7, 9, 2).astype(np.float32)
    # output pixel (y, x) reads input (y + 1, x - 2): the image moves right by 2 and up by 1
    got = affine_warp_reflect(x, _translate(-2.0, 1.0)).numpy()[0]
    padded = np.pad(x[0], ((1, 1), (2, 2), (0, 0)), mode="reflect")
    ref = padded[2 : 2 + 7, 0:9]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_xflip_and_rot90_matrices():
    x = np.random.rand(1, 6, 6, 3).astype(np.float32)
    flip = tf.constant([[[-1, 0, 0], [0, 1, 0], [0, 0, 1]]], tf.float32)
    np.testing.assert_allclose(affine_warp_reflect(x, flip).numpy()[0], x[0, :, ::-1], atol=1e-5)
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    rot = tf.constant([[[c, -s, 0], [s, c, 0], [0, 0, 1]]], tf.float32)
    got = affine_warp_reflect(x, rot).numpy()[0]
    # output (y, x) reads input at centred (-y', x'): out[y, x] = in[x, W - 1 - y] = np.rot90(in, 1)
    ref = np.stack([[x[0, j, 5 - i] for j in range(6)] for i in range(6)])
    np.testing.assert_allclose(ref, np.rot90(x[0], k=1, axes=(0, 1)))
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_augment_is_differentiable_and_changes_images_at_p1():
    x = tf.Variable(np.random.rand(4, 8, 8, 3).astype(np.float32))
    with tf.GradientTape() as tape:
        y = augment(x, 1.0)
        loss = tf.reduce_sum(y * tf.random.normal(tf.shape(y)))
    g = tape.gradient(loss, x)
    assert g is not None and float(tf.reduce_sum(tf.abs(g))) > 0
    assert not np.allclose(y.numpy(), x.numpy())
    assert y.shape == x.shape


def test_color_only_brightness_keeps_structure():
    x = np.random.rand(2, 8, 8, 3).astype(np.float32)
    y = augment(x, 1.0, xflip=False, rotate90=False, int_translation=False, geometric=False).numpy()
    # contrast/brightness/saturation are pointwise affine maps per image: correlation stays 1 per
    # channel
    for i in range(2):
        for c in range(3):
            r = np.corrcoef(x[i, ..., c].ravel(), y[i, ..., c].ravel())[0, 1]
            assert abs(r) > 0.5


def test_ada_controller_moves_p_every_interval():
    ada = AdaptiveAugment(target=0.6, interval=2, ada_kimg=0.01)  # 10 images to go 0 -> 1
    ada.update(tf.ones([4]))  # r_t = 1 > 0.6, but not an adjustment step yet
    assert ada.p.numpy() == 0.0
    ada.update(tf.ones([4]))  # step 2: p += 8 images / 10 images
    assert ada.p.numpy() == pytest.approx(0.8)
    ada.update(-tf.ones([4]))
    ada.update(-tf.ones([4]))  # r_t = -1 < 0.6: p decreases, clipped at 0
    assert ada.p.numpy() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="target"):
        AdaptiveAugment(target=1.5)
