"""`GemmConv2D` / `conv2d_as_matmul` equal Keras' / TensorFlow's convolution: outputs and
gradients (custom two-GEMM gradient and TensorFlow's own) for "same" / "valid", odd and even
kernels, 1 and several filters; a hand-computed case; which path each option takes; training vs
inference graphs; config round trip; bad arguments name themselves."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.gemm_conv import GemmConv2D, conv2d_as_matmul


@pytest.mark.parametrize("custom_gradient", [True, False])
@pytest.mark.parametrize(
    "size,kernel,filters,padding",
    [
        ((9, 9), 3, 1, "same"),
        ((8, 6), 4, 1, "same"),
        ((7, 8), 3, 2, "valid"),
        ((5, 5), 1, 3, "same"),
        ((6, 7), 2, 1, "valid"),
        ((4, 4), 5, 1, "same"),
    ],
)
def test_matches_tf_conv2d_and_its_gradients(size, kernel, filters, padding, custom_gradient):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, *size, 5)), tf.float32)
    k = tf.constant(rng.normal(size=(kernel, kernel, 5, filters)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, k])
        ref = tf.nn.conv2d(x, k, 1, padding.upper())
        got = conv2d_as_matmul(x, k, padding, custom_gradient=custom_gradient)
        weights = tf.constant(rng.normal(size=ref.shape), tf.float32)
        loss_ref, loss_got = tf.reduce_sum(ref * weights), tf.reduce_sum(got * weights)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4, rtol=1e-5)
    for g_got, g_ref in zip(tape.gradient(loss_got, [x, k]), tape.gradient(loss_ref, [x, k])):
        np.testing.assert_allclose(g_got.numpy(), g_ref.numpy(), atol=1e-3, rtol=1e-5)


def test_by_hand_3x3_box_filter():
    """All-ones 3x3 kernel on an all-ones 3x3 image: "same" counts the in-image neighbours."""
    out = conv2d_as_matmul(tf.ones((1, 3, 3, 1)), tf.ones((3, 3, 1, 1)), "same")
    np.testing.assert_array_equal(out.numpy()[0, :, :, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    valid = conv2d_as_matmul(tf.ones((1, 3, 3, 1)), tf.ones((3, 3, 1, 1)), "valid")
    np.testing.assert_array_equal(valid.numpy()[0, :, :, 0], [[9]])


@pytest.mark.parametrize("training", [True, False])
def test_layer_equals_keras_layer_with_bias_activation_and_gradients(training):
    x = tf.random.stateless_normal((2, 10, 10, 6), seed=(1, 2))
    ref = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")
    got = GemmConv2D(1, 3, padding="same", activation="sigmoid")
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights([ref.kernel.numpy(), np.array([0.3], "float32")])
    ref.bias.assign(got.bias)
    assert got._gemm_applies(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        yr, yg = ref(x, training=training), got(x, training=training)
        lr, lg = tf.reduce_sum(yr**2), tf.reduce_sum(yg**2)
    np.testing.assert_allclose(yg.numpy(), yr.numpy(), atol=1e-5)
    for a, b in zip(
        tape.gradient(lg, [x, *got.trainable_variables]),
        tape.gradient(lr, [x, *ref.trainable_variables]),
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-5)


def test_inference_graph_has_only_standard_ops_and_training_graph_the_custom_gradient():
    layer = GemmConv2D(1, 3, padding="same")
    layer.build((1, 8, 8, 4))
    spec = tf.TensorSpec((1, 8, 8, 4))
    infer = tf.function(lambda x: layer(x, training=False)).get_concrete_function(spec).graph
    train = tf.function(lambda x: layer(x, training=True)).get_concrete_function(spec).graph
    assert {"MatMul", "AddN"} <= {op.type for op in infer.get_operations()}
    assert not any(op.type == "IdentityN" for op in infer.get_operations())
    assert any(
        op.type == "IdentityN" for op in train.get_operations()
    )  # tf.custom_gradient's marker
    assert not any(op.type == "Conv2D" for op in infer.get_operations())


@pytest.mark.parametrize(
    "kwargs,shape,expected",
    [
        (dict(filters=1, kernel_size=3, padding="same"), (2, 8, 8, 4), True),
        (dict(filters=2, kernel_size=3, padding="same"), (2, 8, 8, 4), False),  # > gemm_max_filters
        (
            dict(filters=1, kernel_size=3, strides=2, padding="same"),
            (2, 8, 8, 4),
            False,
        ),  # stride 2
        (dict(filters=1, kernel_size=3, dilation_rate=2, padding="same"), (2, 8, 8, 4), False),
        (dict(filters=2, kernel_size=3, padding="valid", gemm_max_filters=2), (2, 8, 8, 4), True),
    ],
)
def test_path_choice_and_equality_with_keras(kwargs, shape, expected):
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "gemm_max_filters"}
    ref, got = keras.layers.Conv2D(**ref_kwargs), GemmConv2D(**kwargs)
    x = tf.random.stateless_normal(shape, seed=(3, 4))
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights(ref.get_weights())
    assert got._gemm_applies(x) is expected
    np.testing.assert_allclose(got(x).numpy(), ref(x).numpy(), atol=1e-4)


def test_unknown_spatial_size_uses_keras_kernel():
    layer = GemmConv2D(1, 3, padding="same")
    layer.build((None, None, None, 3))
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    assert fn(tf.zeros((1, 5, 5, 3))).shape == (1, 5, 5, 1)
    assert any(op.type == "Conv2D" for op in fn.get_concrete_function().graph.get_operations())


def test_config_round_trip_and_serialisation():
    layer = GemmConv2D(1, 3, padding="same", gemm_max_filters=0, name="m")
    assert not layer._gemm_applies(tf.zeros((1, 4, 4, 2)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is GemmConv2D and restored.get_config() == layer.get_config()


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="padding"):
        conv2d_as_matmul(tf.zeros((1, 4, 4, 2)), tf.zeros((3, 3, 2, 1)), "full")
    with pytest.raises(ValueError, match="valid"):
        conv2d_as_matmul(tf.zeros((1, 2, 2, 2)), tf.zeros((3, 3, 2, 1)), "valid")
    with pytest.raises(ValueError, match="x: expected"):
        conv2d_as_matmul(tf.zeros((1, 4, 4, 3)), tf.zeros((3, 3, 2, 1)), "same")


def test_inside_spectral_normalization_gets_the_training_flag():
    """SpectralNormalization calls its layer without `training`: Keras' call context passes it on,
    so the training graph takes the custom gradient, and results equal the Keras layer's."""
    x = tf.random.stateless_normal((2, 8, 8, 16), seed=(5, 6))
    ref = keras.layers.SpectralNormalization(keras.layers.Conv2D(1, 1))
    got = keras.layers.SpectralNormalization(GemmConv2D(1, 1))
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights(ref.get_weights())
    graph = (
        tf.function(lambda x: got(x, training=True))
        .get_concrete_function(tf.TensorSpec(x.shape))
        .graph
    )
    assert any(op.type == "IdentityN" for op in graph.get_operations())
    with tf.GradientTape(persistent=True) as tape:
        yr, yg = ref(x, training=True), got(x, training=True)
        lr, lg = tf.reduce_sum(yr**2), tf.reduce_sum(yg**2)
    np.testing.assert_allclose(yg.numpy(), yr.numpy(), atol=1e-5)
    for a, b in zip(
        tape.gradient(lg, got.trainable_variables), tape.gradient(lr, ref.trainable_variables)
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-5)
