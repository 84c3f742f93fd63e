"""Stride-1 convolutions to a single channel (mask and logit layers) computed as one matrix
product (same weights, same result).

oneDNN's convolution kernels are slow when the output has one channel: for the small UNet's
mask layer (3x3, 64 -> 1 channels on 64x64 maps, batch 32) the forward pass took 7.2 ms and
forward + both gradients 21.6 ms, while the matrix products below take 2.8 and 12.2 ms
(benchmarks in docs/performance.md; with 3 output channels the gain was 1.2x, with 4 none, so
the default is one channel). With taps (i, j) of a k_h x k_w kernel and a "same" or "valid"
window:

1. ``z = x @ W``, W the kernel as C x (k_h k_w F): every input position's product with every
   tap at once;
2. ``y[o] = sum_(i,j) z[o + (i, j), tap (i, j)]``: the shifted sum of the tap planes.

The gradients are written out (`tf.custom_gradient`) as two matrix products with the shifted
copies of dy, ``dz[p, tap (i, j)] = dy[p - (i, j)]``: ``dx = dz @ W^T`` and ``dW = x^T @ dz``,
instead of TensorFlow's derivative of the slices (one zero-padded copy of z per tap).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from indep_seg.fast_cpu import use_fast_cpu_kernels
from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D, add_bias_and_activate

__all__ = ["GemmConv2D", "conv2d_as_matmul", "DEFAULT_GEMM_MAX_FILTERS"]

DEFAULT_GEMM_MAX_FILTERS = (
    1  # masks and logits (benchmarks: 1.8x at 1 filter, 1.2x at 3, none at 4)
)


def _window(size, kernel, padding):
    """(leading pad, output size) of a stride-1 window: TensorFlow's "SAME" pads (k - 1) // 2
    first."""
    if padding == "same":
        return (kernel - 1) // 2, size
    return 0, size - kernel + 1


def _shifted_sum(z, kh, kw, f, top, left, ho, wo):
    """y[o] = sum over taps (i, j) of z[o + (i, j) - (top, left), tap (i, j)], z zero outside."""
    h, w = z.shape[1], z.shape[2]
    z = tf.pad(z, [[0, 0], [top, ho + kh - 1 - h - top], [left, wo + kw - 1 - w - left], [0, 0]])
    return tf.add_n(
        [
            z[:, i : i + ho, j : j + wo, (i * kw + j) * f : (i * kw + j + 1) * f]
            for i in range(kh)
            for j in range(kw)
        ]
    )


def conv2d_as_matmul(x, kernel, padding="same", custom_gradient=True):
    """`tf.nn.conv2d(x, kernel, 1, padding)` (NHWC, stride 1) as one matrix product and a shifted
    sum.

    Args:
        x: [B, H, W, C] with static H, W, C.
        kernel: [k_h, k_w, C, F] (Keras' Conv2D layout).
        padding: "same" or "valid".
        custom_gradient: differentiate with the two-GEMM gradient of the module docstring (True)
            or TensorFlow's derivative of the ops (False: the graph holds only standard ops).
    """
    kernel = tf.convert_to_tensor(kernel)  # a variable's value: its gradient flows to the variable
    kh, kw, c, f = kernel.shape
    h, w = x.shape[1], x.shape[2]
    padding = padding.lower()
    if padding not in ("same", "valid"):
        raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
    if None in (h, w, c) or c != x.shape[-1]:
        raise ValueError(f"x: expected [B, H, W, {c}] with static H, W, got {x.shape}")
    top, ho = _window(h, kh, padding)
    left, wo = _window(w, kw, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"x: a {kh}x{kw} 'valid' window needs at least that size, got {h}x{w}")

    def forward(x, kernel):
        w2 = tf.reshape(
            tf.transpose(kernel, [2, 0, 1, 3]), [c, kh * kw * f]
        )  # rows c, columns (i, j, f)
        x2 = tf.reshape(x, [-1, c])
        z = tf.reshape(tf.matmul(x2, w2), [-1, h, w, kh * kw * f])
        return _shifted_sum(z, kh, kw, f, top, left, ho, wo), x2, w2

    if not custom_gradient:
        return forward(x, kernel)[0]

    @tf.custom_gradient
    def conv(x, kernel):
        y, x2, w2 = forward(x, kernel)

        def grad(dy):
            taps = [
                tf.pad(dy, [[0, 0], [i, kh - 1 - i], [j, kw - 1 - j], [0, 0]])[
                    :, top : top + h, left : left + w, :
                ]
                for i in range(kh)
                for j in range(kw)
            ]
            dz = tf.reshape(tf.concat(taps, -1) if len(taps) > 1 else taps[0], [-1, kh * kw * f])
            dx = tf.reshape(tf.matmul(dz, w2, transpose_b=True), tf.shape(x))
            dw = tf.transpose(
                tf.reshape(tf.matmul(x2, dz, transpose_a=True), [c, kh, kw, f]), [1, 2, 0, 3]
            )
            return dx, dw

        return y, grad

    return conv(x, kernel)


@keras.saving.register_keras_serializable(package="indep_seg")
class GemmConv2D(UnfusedBiasConv2D):
    """`keras.layers.Conv2D` that runs as one GEMM when it has at most `gemm_max_filters` filters
    (`conv2d_as_matmul`): same weights and outputs (the config adds `gemm_max_filters`).

    The GEMM form applies to channels_last inputs of static size, stride 1, no dilation, one
    group, where the fast CPU kernels are on (`indep_seg.fast_cpu`: not on a GPU or TPU); anything
    else is `UnfusedBiasConv2D`'s (Keras') kernel. In training the gradient is
    the two-GEMM one; in inference the graph holds only standard ops (MatMul, Pad, slices, AddN),
    so SavedModels and ONNX exports carry no custom gradient.

    Args:
        gemm_max_filters: layers with at most this many filters run as a GEMM (0: never).
        *args, **kwargs: `keras.layers.Conv2D`'s.

    Example:
        >>> conv = GemmConv2D(1, 3, padding="same")
        >>> conv(np.zeros((2, 16, 16, 8), "float32")).shape
        TensorShape([2, 16, 16, 1])
    """

    def __init__(self, *args, gemm_max_filters=DEFAULT_GEMM_MAX_FILTERS, **kwargs):
        super().__init__(*args, **kwargs)
        self.gemm_max_filters = int(gemm_max_filters)

    def _gemm_applies(self, inputs):
        shape = inputs.shape
        return (
            len(shape) == 4
            and None not in shape[1:]
            and self.filters <= self.gemm_max_filters
            and self.data_format == "channels_last"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.padding in ("same", "valid")
            and use_fast_cpu_kernels()
        )

    def call(self, inputs, training=None):
        if not self._gemm_applies(inputs):
            return super().call(inputs)
        outputs = conv2d_as_matmul(
            inputs, self.kernel, self.padding, custom_gradient=bool(training)
        )
        return add_bias_and_activate(self, outputs)

    def get_config(self):
        return {**super().get_config(), "gemm_max_filters": self.gemm_max_filters}
