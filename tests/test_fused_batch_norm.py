"""`FusedBatchNormalization` equals Keras' BatchNormalization: training outputs, gradients, moving
statistics (Keras' biased-variance update), inference; Keras' own path where the fused kernel does
not apply."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.fused_batch_norm import FusedBatchNormalization


def _pair(shape, **kwargs):
    ref, got = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    ref.build(shape)
    got.build(shape)
    rng = np.random.default_rng(1)
    weights = [
        w + rng.normal(size=w.shape).astype("float32") * (0.5 if i < 2 else 0.0)
        for i, w in enumerate(ref.get_weights())
    ]
    ref.set_weights(weights)
    got.set_weights(weights)
    return ref, got


@pytest.mark.parametrize("axis,shape", [(-1, (4, 5, 6, 7)), (1, (4, 7, 5, 6)), (-1, (3, 1, 1, 2))])
def test_training_outputs_gradients_and_moving_statistics(axis, shape):
    ref, got = _pair(shape, axis=axis, momentum=0.8)
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=shape), tf.float32)
    assert got._fused_applies(x, True, None)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ref, y_got = ref(x, training=True), got(x, training=True)
        weights = tf.constant(np.random.default_rng(2).normal(size=shape), tf.float32)
        l_ref, l_got = tf.reduce_sum(y_ref * weights), tf.reduce_sum(y_got * weights)
    np.testing.assert_allclose(y_got.numpy(), y_ref.numpy(), atol=1e-5)
    g_ref = tape.gradient(l_ref, [x, ref.gamma, ref.beta])
    g_got = tape.gradient(l_got, [x, got.gamma, got.beta])
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got.moving_mean.numpy(), ref.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(got.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5)
    np.testing.assert_allclose(got(x).numpy(), ref(x).numpy(), atol=1e-5)  # inference: moving stats


def test_moving_variance_by_hand():
    """One step from (mean 0, var 1) with momentum 0.5: 0.5 + 0.5 * biased variance of the batch."""
    layer = FusedBatchNormalization(momentum=0.5)
    x = tf.constant([1.0, 2.0, 3.0, 6.0], shape=(1, 2, 2, 1))
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.5 * 3.0], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [0.5 + 0.5 * 3.5], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,shape,mask",
    [
        (dict(synchronized=True), (2, 3, 3, 4), None),
        (dict(renorm=True), (2, 3, 3, 4), None),
        ({}, (6, 4), None),
        ({}, (2, 3, 4), np.array([[1, 1, 0], [1, 0, 0]], bool)),
    ],
)
def test_keras_path_where_the_fused_kernel_does_not_apply(kwargs, shape, mask):
    ref, got = _pair(shape, **kwargs)
    x = tf.constant(np.random.default_rng(3).normal(size=shape), tf.float32)
    assert not got._fused_applies(x, True, mask)
    np.testing.assert_allclose(
        got(x, training=True, mask=mask).numpy(),
        ref(x, training=True, mask=mask).numpy(),
        atol=1e-5,
    )


def test_serialises_as_itself():
    layer = FusedBatchNormalization(momentum=0.7, epsilon=1e-4)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(back) is FusedBatchNormalization and back.momentum == 0.7 and back.epsilon == 1e-4
