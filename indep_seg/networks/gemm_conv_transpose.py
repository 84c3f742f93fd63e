"""Transposed convolutions on tiny maps or to few channels computed as one matrix product (same
weights, same result).

The innermost decoder layers of Dai et al.'s Table-1 UNet upsample 2x2 and 4x4 maps with 512-1024
channels. With batch 16 a 4x4 map is only 256 positions, and oneDNN's direct kernels ran the 4x4
one at 35-40 % of the machine's matmul rate, forward and backward (docs/performance.md). Written
as a GEMM the same arithmetic runs 1.3-2.1x faster:

1. ``y = x @ K^T`` with K the kernel reshaped to (k k F) x C: every input position's whole
   k x k x F contribution at once, for tap (s a + p, s b + q), k = s t; y's columns are then
   regrouped from (a, p, b, q, f) to (a, b, p, q, f);
2. overlap-add (col2im) as sub-pixel convolution: the t*t column blocks are phase images, each
   shifted by its (a, b) and summed, then depth-to-space interleaves the s*s phases;
3. the "same" crop.

TensorFlow differentiates it into the same kind of graph (two GEMMs, slices, space-to-depth), so
the backward pass gains too: 90 -> 42 ms for that layer's forward + backward at batch 16
(`benchmarks/bench_layers.py`).
On maps of 8x8 and more oneDNN's kernels are as fast or faster, so the GEMM form is used only up to
`gemm_max_input_pixels` (16: 4x4), except for layers with at most `gemm_max_filters` (4) output
channels, such as the UNet's mask layer: oneDNN's kernels for a 1-channel output are slow, and the
GEMM form ran the 64x64 -> 128x128 mask layer (128 -> 1 channels, batch 16) 1.9x faster forward
+ backward (14.9 -> 7.9 ms; 3 channels 1.2x; equal at 4; 2x slower at 64). Everywhere else
`GemmConv2DTranspose` is `keras.layers.Conv2DTranspose`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from indep_seg.fast_cpu import use_fast_cpu_kernels
from indep_seg.networks.unfused_bias_conv import add_bias_and_activate

__all__ = [
    "GemmConv2DTranspose",
    "conv2d_transpose_as_matmul",
    "DEFAULT_GEMM_MAX_INPUT_PIXELS",
    "DEFAULT_GEMM_MAX_FILTERS",
]

DEFAULT_GEMM_MAX_INPUT_PIXELS = 16  # 4x4 maps and smaller (benchmarks: 8x8 is faster in oneDNN)
DEFAULT_GEMM_MAX_FILTERS = 4  # any map size for outputs of at most 4 channels (masks, RGB(A))


def _same_crop(size_in, kernel, stride):
    """Top / left crop of a "same" transposed conv: the padding of the conv it transposes."""
    total = max((size_in - 1) * stride + kernel - size_in * stride, 0)
    return total // 2


def conv2d_transpose_as_matmul(x, kernel, stride=2, padding="same"):
    """`tf.nn.conv2d_transpose(x, kernel, ..., stride, padding)` (NHWC) as one matrix product.

    Args:
        x: [B, H, W, C] with static H, W, C.
        kernel: [k, k, F, C] (Keras' Conv2DTranspose layout), k a multiple of `stride`.
        stride: the stride on both axes.
        padding: "same" (output [B, sH, sW, F]) or "valid" (output [B, s(H-1)+k, s(W-1)+k, F]).
    """
    kh, kw, f, c = kernel.shape
    s = int(stride)
    if kh != kw or kh % s:
        raise ValueError(
            f"kernel: expected a square kernel whose side is a multiple of the stride {s}, "
            f"got {kh}x{kw}"
        )
    h, w = x.shape[1], x.shape[2]
    t = kh // s
    # y's columns in the kernel's own order (a, p, b, q, f): the kernel is only reshaped (a
    # transpose of the multi-megabyte kernel cost more than this step's transpose of y, whose
    # innermost s*f values move as contiguous blocks)
    y = tf.matmul(tf.reshape(x, [-1, c]), tf.reshape(kernel, [kh * kw * f, c]), transpose_b=True)
    if t > 1:
        y = tf.transpose(tf.reshape(y, [-1, h, w, t, s, t, s * f]), [0, 1, 2, 3, 5, 4, 6])
    y = tf.reshape(y, [-1, h, w, t * t * s * s * f])  # columns (a, b, p, q, f)
    z = None
    for index, phase in enumerate(tf.split(y, t * t, axis=-1) if t > 1 else [y]):
        a, b = divmod(index, t)
        if t > 1:
            phase = tf.pad(phase, [[0, 0], [a, t - 1 - a], [b, t - 1 - b], [0, 0]])
        z = phase if z is None else z + phase
    full = tf.nn.depth_to_space(z, s) if s > 1 else z  # [B, s(H-1) + k, s(W-1) + k, F]
    if padding.lower() == "same":
        top, left = _same_crop(h, kh, s), _same_crop(w, kw, s)
        full = full[:, top : top + h * s, left : left + w * s, :]
    return full


@keras.saving.register_keras_serializable(package="indep_seg")
class GemmConv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` that runs as one GEMM on tiny maps and for few output
    channels (`conv2d_transpose_as_matmul`): same weights and outputs (the config adds
    `gemm_max_input_pixels` and `gemm_max_filters`).

    The GEMM form applies to channels_last inputs of static size with at most
    `gemm_max_input_pixels` positions or at most `gemm_max_filters` output channels, square
    kernels whose side is a multiple of the (equal) strides, no dilation and no output_padding;
    and only where the fast CPU kernels are on (`indep_seg.fast_cpu`: not on a GPU or TPU); anything
    else is the parent's (Keras') kernel.

    Args:
        gemm_max_input_pixels: largest input H * W run as a GEMM (0: never by size).
        gemm_max_filters: layers with at most this many filters run as a GEMM on any map size
            (0: never by filters).
        *args, **kwargs: `keras.layers.Conv2DTranspose`'s.
    """

    def __init__(
        self,
        *args,
        gemm_max_input_pixels=DEFAULT_GEMM_MAX_INPUT_PIXELS,
        gemm_max_filters=DEFAULT_GEMM_MAX_FILTERS,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.gemm_max_input_pixels = int(gemm_max_input_pixels)
        self.gemm_max_filters = int(gemm_max_filters)

    def _gemm_applies(self, inputs):
        shape = inputs.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        small = (
            len(shape) == 4
            and None not in shape[1:]
            and (
                shape[1] * shape[2] <= self.gemm_max_input_pixels
                or self.filters <= self.gemm_max_filters
            )
        )
        return (
            small
            and self.data_format == "channels_last"
            and tuple(self.dilation_rate) == (1, 1)
            and self.output_padding is None
            and sh == sw
            and kh == kw
            and kh % sh == 0
            and use_fast_cpu_kernels()
        )

    def call(self, inputs):
        if not self._gemm_applies(inputs):
            return super().call(inputs)
        outputs = conv2d_transpose_as_matmul(inputs, self.kernel, self.strides[0], self.padding)
        return add_bias_and_activate(self, outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "gemm_max_input_pixels": self.gemm_max_input_pixels,
            "gemm_max_filters": self.gemm_max_filters,
        }
