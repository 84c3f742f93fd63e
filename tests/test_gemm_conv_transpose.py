"""`GemmConv2DTranspose` / `conv2d_transpose_as_matmul` equal Keras' transposed convolution:
outputs and gradients, "same" and "valid", k = s and k = 2s, odd sizes, bias and activation;
which path each option takes (tiny maps, few filters); config round trip; unknown sizes keep
Keras' kernel."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.gemm_conv_transpose import GemmConv2DTranspose, conv2d_transpose_as_matmul


@pytest.mark.parametrize(
    "size,kernel,stride,padding",
    [
        ((4, 4), 4, 2, "same"),
        ((2, 3), 2, 2, "same"),
        ((3, 5), 4, 2, "valid"),
        ((4, 4), 6, 2, "same"),
        ((2, 2), 3, 3, "same"),
        ((1, 1), 4, 2, "same"),
    ],
)
def test_matches_tf_conv2d_transpose_and_its_gradients(size, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, *size, 5)), tf.float32)
    k = tf.constant(rng.normal(size=(kernel, kernel, 7, 5)), tf.float32)
    h, w = size
    out_shape = (
        (3, h * stride, w * stride, 7)
        if padding == "same"
        else (3, (h - 1) * stride + kernel, (w - 1) * stride + kernel, 7)
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, k])
        ref = tf.nn.conv2d_transpose(x, k, out_shape, stride, padding.upper())
        got = conv2d_transpose_as_matmul(x, k, stride, padding)
        weights = tf.constant(rng.normal(size=out_shape), tf.float32)
        loss_ref, loss_got = tf.reduce_sum(ref * weights), tf.reduce_sum(got * weights)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4, rtol=1e-5)
    for g_got, g_ref in zip(tape.gradient(loss_got, [x, k]), tape.gradient(loss_ref, [x, k])):
        np.testing.assert_allclose(g_got.numpy(), g_ref.numpy(), atol=1e-3, rtol=1e-5)


def test_by_hand_one_pixel_one_channel():
    """A single input pixel scatters the kernel; "same" crops (k - s) // 2 from the top-left."""
    k = np.arange(16, dtype=np.float32).reshape(4, 4, 1, 1)
    out = conv2d_transpose_as_matmul(tf.ones((1, 1, 1, 1)), tf.constant(k), 2, "valid")
    np.testing.assert_array_equal(out.numpy()[0, :, :, 0], k[:, :, 0, 0])
    same = conv2d_transpose_as_matmul(tf.ones((1, 1, 1, 1)), tf.constant(k), 2, "same")
    np.testing.assert_array_equal(same.numpy()[0, :, :, 0], k[1:3, 1:3, 0, 0])


def test_layer_equals_keras_layer_with_bias_and_activation():
    x = tf.random.stateless_normal((2, 4, 4, 6), seed=(1, 2))
    ref = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="relu")
    got = GemmConv2DTranspose(3, 4, strides=2, padding="same", activation="relu")
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights([ref.kernel.numpy(), np.linspace(-1, 1, 3).astype("float32")])
    ref.bias.assign(got.bias)
    assert got._gemm_applies(x)
    np.testing.assert_allclose(got(x).numpy(), ref(x).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(strides=2), (2, 8, 8, 4)),  # 64 positions > 16: oneDNN's kernel
        (dict(strides=2, output_padding=1), (2, 4, 4, 4)),  # output_padding: Keras' path
        (dict(strides=1), (2, 4, 4, 4)),  # k = 3, stride 1: 3 % 1 == 0 -> GEMM
        (dict(strides=2, data_format="channels_first"), (2, 4, 4, 4)),
    ],
)
def test_path_choice_and_equality_with_keras(kwargs, shape):
    k = 3 if kwargs.get("strides") == 1 else 4
    ref = keras.layers.Conv2DTranspose(5, k, padding="same", **kwargs)
    got = GemmConv2DTranspose(5, k, padding="same", **kwargs)
    x = tf.random.stateless_normal(shape, seed=(3, 4))
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights(ref.get_weights())
    expected_gemm = kwargs == dict(strides=1)
    assert got._gemm_applies(x) is expected_gemm
    try:
        want = ref(x).numpy()
    except tf.errors.InvalidArgumentError:
        # CPUs where TensorFlow runs without oneDNN have no NCHW transposed-convolution kernel
        # ("Conv2DCustomBackpropInputOp only supports NHWC"): Keras' layer fails, and so must ours
        assert kwargs.get("data_format") == "channels_first"
        with pytest.raises(tf.errors.InvalidArgumentError, match="NHWC"):
            got(x)
        return
    np.testing.assert_allclose(got(x).numpy(), want, atol=1e-4)


def test_thresholds_zero_never_use_gemm_and_config_round_trip():
    layer = GemmConv2DTranspose(
        2, 4, strides=2, padding="same", gemm_max_input_pixels=0, gemm_max_filters=0
    )
    assert not layer._gemm_applies(tf.zeros((1, 1, 1, 3)))
    back = GemmConv2DTranspose.from_config(layer.get_config())
    assert back.gemm_max_input_pixels == 0 and back.gemm_max_filters == 0 and back.filters == 2
    by_filters = GemmConv2DTranspose(2, 4, strides=2, padding="same", gemm_max_input_pixels=0)
    assert by_filters._gemm_applies(tf.zeros((1, 1, 1, 3)))  # 2 filters <= the default 4
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is GemmConv2DTranspose


@pytest.mark.parametrize("filters,expected_gemm", [(1, True), (4, True), (5, False)])
def test_few_filters_use_gemm_on_large_maps_with_keras_results(filters, expected_gemm):
    """The mask layer's case: 1-4 output channels take the GEMM form on a 16x16 map (256 > 16
    positions), with Keras' outputs and gradients; 5 filters keep oneDNN's kernel."""
    x = tf.random.stateless_normal((2, 16, 16, 6), seed=(7, 8))
    ref = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="sigmoid")
    got = GemmConv2DTranspose(filters, 4, strides=2, padding="same", activation="sigmoid")
    ref.build(x.shape)
    got.build(x.shape)
    got.set_weights(ref.get_weights())
    assert got._gemm_applies(x) is expected_gemm
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        yr, yg = ref(x), got(x)
        lr, lg = tf.reduce_sum(yr**2), tf.reduce_sum(yg**2)
    np.testing.assert_allclose(yg.numpy(), yr.numpy(), atol=1e-5)
    for a, b in zip(
        tape.gradient(lg, [x, *got.trainable_variables]),
        tape.gradient(lr, [x, *ref.trainable_variables]),
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-5)


def test_bad_kernel_names_it():
    with pytest.raises(ValueError, match="kernel"):
        conv2d_transpose_as_matmul(tf.zeros((1, 2, 2, 3)), tf.zeros((3, 3, 2, 3)), 2)


def test_unknown_spatial_size_uses_keras_kernel_inside_tf_function():
    layer = GemmConv2DTranspose(2, 4, strides=2, padding="same")
    layer.build((None, None, None, 3))
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    out = fn(tf.zeros((1, 3, 3, 3)))
    assert out.shape == (1, 6, 6, 2)
    assert not any(op.type == "MatMul" for op in fn.get_concrete_function().graph.get_operations())


def test_every_small_config_differentiates_like_keras():
    """Parameters through the layer: gradients of kernel and bias equal Keras' (4x4 and 2x2
    maps)."""
    for size, k in itertools.product([(2, 2), (4, 4)], [2, 4]):
        x = tf.random.stateless_normal((2, *size, 3), seed=(5, 6))
        ref = keras.layers.Conv2DTranspose(4, k, strides=2, padding="same")
        got = GemmConv2DTranspose(4, k, strides=2, padding="same")
        ref.build(x.shape)
        got.build(x.shape)
        got.set_weights(ref.get_weights())
        with tf.GradientTape(persistent=True) as tape:
            lr, lg = tf.reduce_sum(ref(x) ** 2), tf.reduce_sum(got(x) ** 2)
        for a, b in zip(
            tape.gradient(lg, got.trainable_variables), tape.gradient(lr, ref.trainable_variables)
        ):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3, rtol=1e-5)
