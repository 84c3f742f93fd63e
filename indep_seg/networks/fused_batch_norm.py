"""`FusedBatchNormalization`: Keras' BatchNormalization whose training pass is TensorFlow's fused
kernel.

Keras 3 writes batch normalisation (Ioffe & Szegedy 2015, Algorithm 1) in training as separate
ops: the moments (mean, squared difference, mean), then the normalisation, scale and shift, and
their gradients op by op, each a pass over the activations. `tf.nn.fused_batch_norm` (oneDNN's
batch normalisation on CPU) does the forward in one kernel and the backward in another. The result
is the same normalisation; the moving statistics are updated exactly as Keras updates them (with
the biased batch variance; TensorFlow's kernel returns the unbiased one, which is converted back).
On the Table-1 step it took another 3 % off the step time (docs/performance.md).

Only the plain case takes the fused kernel: training, float32, rank-4 input normalised over its
channel axis, no mask, no renorm, not `synchronized` (the cross-replica statistics are Keras').
Inference, everything else, and every call where the fast CPU kernels are off (a GPU or TPU is
the default device: `indep_seg.fast_cpu`) is `keras.layers.BatchNormalization` itself, so exported
SavedModels and ONNX graphs are unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from indep_seg.fast_cpu import use_fast_cpu_kernels

__all__ = ["FusedBatchNormalization"]


@keras.saving.register_keras_serializable(package="indep_seg")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments, weights and results) with the training
    pass run by TensorFlow's fused batch-norm kernel (Ioffe & Szegedy 2015, Algorithm 1)."""

    def _fused_applies(self, inputs, training, mask):
        axis = self.axis if isinstance(self.axis, int) else None
        return (
            training is True
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and inputs.dtype == tf.float32
            and self.moving_mean.dtype == tf.float32
            and axis in (1, 3, -1)
            and use_fast_cpu_kernels()
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        data_format = "NCHW" if self.axis == 1 else "NHWC"
        channels = self.moving_mean.shape[0]
        gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta if self.center else tf.zeros([channels], tf.float32)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, data_format=data_format, is_training=True
        )
        # Keras' moving variance follows the biased batch variance: undo the kernel's n / (n - 1).
        n = tf.cast(tf.size(inputs) // channels, tf.float32)
        variance = unbiased_variance * (n - 1.0) / tf.maximum(n, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + tf.stop_gradient(mean) * (1.0 - m))
        self.moving_variance.assign(
            self.moving_variance * m + tf.stop_gradient(variance) * (1.0 - m)
        )
        return outputs
