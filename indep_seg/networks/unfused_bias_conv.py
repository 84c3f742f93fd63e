"""A 2-D convolution whose bias gradient stays out of oneDNN's filter-gradient kernel (same weights,
same results as `keras.layers.Conv2D`).

Keras adds a convolution's bias as ``outputs + reshape(bias, (1, 1, 1, F))``. In a training
step TensorFlow's graph rewriter turns that bias's gradient together with the filter gradient
into one oneDNN kernel (`_MklNativeConv2DBackpropFilterWithBias`), and on this CPU that fused
kernel is slow: for the 3 -> 64 channel first layer of Dai et al.'s Table-1 discriminator
(128x128, batch 32) the filter gradient alone takes 4.2 ms and fused with the bias gradient
15.0 ms; 1-10 % slower on the deeper layers (docs/performance.md). Adding the rank-1 bias,
``outputs + bias``, is the same arithmetic; its gradient is a plain reduction, the filter
gradient keeps oneDNN's fast kernel, and the forward pass is as fast as Keras'. Training steps
of the box-level GAN at Table-1 size ran 7 % faster with it.
"""

from __future__ import annotations

import keras

from indep_seg.fast_cpu import use_fast_cpu_kernels

__all__ = ["UnfusedBiasConv2D", "add_bias_and_activate"]


def add_bias_and_activate(layer, outputs):
    """`layer`'s bias added as a rank-1 broadcast (channels_last), then its activation: the
    epilogue of `UnfusedBiasConv2D` and of the GEMM forms of `GemmConv2D` /
    `GemmConv2DTranspose`."""
    if layer.use_bias:
        outputs = outputs + layer.bias
    if layer.activation is not None:
        return layer.activation(outputs)
    return outputs


@keras.saving.register_keras_serializable(package="indep_seg")
class UnfusedBiasConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with the bias added as a rank-1 broadcast (channels_last).

    Same arguments, weights, config and outputs as `keras.layers.Conv2D`; with
    `data_format="channels_first"`, no bias, or where the fast CPU kernels are off (a GPU or TPU,
    `indep_seg.fast_cpu`) it is Keras' own call.

    Example:
        >>> conv = UnfusedBiasConv2D(8, 3, strides=2, padding="same")
        >>> conv(np.zeros((1, 16, 16, 3), "float32")).shape
        TensorShape([1, 8, 8, 8])
    """

    def call(self, inputs):
        if not self.use_bias or self.data_format != "channels_last" or not use_fast_cpu_kernels():
            return super().call(inputs)
        return add_bias_and_activate(self, self.convolution_op(inputs, self.kernel))
