"""`UnfusedBiasConv2D` equals `keras.layers.Conv2D`: outputs and gradients (input, kernel, bias)
for strides / padding / activation, inside SpectralNormalization, Keras' own call where it does
not apply; config and serialisation; the bias reaches the output as a rank-1 add."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D


def _pair(shape, *args, **kwargs):
    ref, got = keras.layers.Conv2D(*args, **kwargs), UnfusedBiasConv2D(*args, **kwargs)
    ref.build(shape)
    got.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()]
    ref.set_weights(weights)
    got.set_weights(weights)
    return ref, got


def _assert_same_outputs_and_gradients(ref, got, x, call=lambda layer, x: layer(x)):
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ref, y_got = call(ref, x), call(got, x)
        w = tf.constant(np.random.default_rng(1).normal(size=y_ref.shape), tf.float32)
        l_ref, l_got = tf.reduce_sum(y_ref * w), tf.reduce_sum(y_got * w)
    np.testing.assert_allclose(y_got.numpy(), y_ref.numpy(), atol=1e-4, rtol=1e-5)
    g_ref = tape.gradient(l_ref, [x, *ref.trainable_variables])
    g_got = tape.gradient(l_got, [x, *got.trainable_variables])
    assert len(g_got) == len(g_ref)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(filters=6, kernel_size=3, strides=2, padding="same"),
        dict(filters=4, kernel_size=4, strides=2, padding="same", activation="relu"),
        dict(filters=5, kernel_size=3, strides=1, padding="valid"),
        dict(filters=3, kernel_size=1),
        dict(filters=4, kernel_size=3, use_bias=False),  # Keras' call
    ],
)
def test_equals_keras_conv2d_with_gradients(kwargs):
    x = tf.random.stateless_normal((2, 9, 9, 3), seed=(1, 2))
    ref, got = _pair(x.shape, **kwargs)
    _assert_same_outputs_and_gradients(ref, got, x)


def test_channels_first_is_keras_call():
    x = tf.random.stateless_normal((2, 3, 8, 8), seed=(3, 4))
    ref, got = _pair(x.shape, 4, 3, padding="same", data_format="channels_first")
    # TensorFlow's CPU conv has no NCHW kernel: compare the layers' definitions, not a run
    assert got.data_format == "channels_first" and got.get_config() == {
        **ref.get_config(),
        "name": got.name,
    }


def test_inside_spectral_normalization_training_step():
    x = tf.random.stateless_normal((2, 16, 16, 3), seed=(5, 6))
    ref = keras.layers.SpectralNormalization(keras.layers.Conv2D(8, 3, strides=2, padding="same"))
    got = keras.layers.SpectralNormalization(UnfusedBiasConv2D(8, 3, strides=2, padding="same"))
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights(ref.get_weights())
    _assert_same_outputs_and_gradients(ref, got, x, call=lambda layer, x: layer(x, training=True))


def test_bias_is_a_rank1_add_of_the_variable():
    """The graph adds the bias variable itself (no (1, 1, 1, F) reshape): the pattern that keeps
    TensorFlow from fusing its gradient into oneDNN's slow Conv2DBackpropFilterWithBias."""
    layer = UnfusedBiasConv2D(4, 3, padding="same")
    layer.build((1, 8, 8, 3))
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((1, 8, 8, 3))).graph
    ops = graph.get_operations()
    assert not any(op.type == "Reshape" for op in ops)
    add = [op for op in ops if op.type in ("AddV2", "Add")]
    assert len(add) == 1
    assert [i.shape.as_list() for i in add[0].inputs] == [[1, 8, 8, 4], [4]]


def test_config_and_serialisation_round_trip():
    layer = UnfusedBiasConv2D(7, 3, strides=2, padding="same", name="c")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is UnfusedBiasConv2D
    assert restored.get_config() == layer.get_config()
