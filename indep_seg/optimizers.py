"""`FusedAdam`: Keras' Adam whose per-variable update is TensorFlow's single fused Adam kernel.

Keras 3's `Adam.update_step` writes Kingma & Ba's update as about ten element-wise TensorFlow ops
per variable (two moment updates, a square root, a division, three assignments), each a full pass
over the variable's memory. `tf.raw_ops.ResourceApplyAdam` computes the same update

    m <- m + (g - m)(1 - beta_1),  v <- v + (g^2 - v)(1 - beta_2),
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

(Kingma & Ba 2015, Algorithm 1 with the "efficient" bias correction of section 2, which is
Keras' formula too) in one multi-threaded pass. On the Table-1 training step (23 M + 1.6 M
parameters, batch 16, 2 CPU cores) this took 2-3 % off the step time (docs/performance.md); the
weights after a step equal Keras' to float32 rounding (tests/test_optimizers.py).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from indep_seg.fast_cpu import use_fast_cpu_kernels

__all__ = ["FusedAdam"]


@keras.saving.register_keras_serializable(package="indep_seg")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` (same arguments, variables, checkpoints and update), with each
    variable updated by TensorFlow's fused `ResourceApplyAdam` kernel.

    Where the fast CPU kernels are off (a GPU or TPU is the default device: `indep_seg.fast_cpu`)
    the update is Keras' own. `amsgrad=True` keeps Keras' own update too (the fused AMSGrad kernel
    keeps its maximum differently). Gradient clipping, weight decay, EMA, loss scaling and
    tf.distribute behave as in Keras: they act outside `update_step`.

    Example:
        >>> opt = FusedAdam(2e-4, beta_1=0.5, beta_2=0.999)
    """

    def update_step(self, gradient, variable, learning_rate):
        """One Adam step for `variable` (Kingma & Ba 2015, Algorithm 1)."""
        if self.amsgrad or not use_fast_cpu_kernels():
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
            use_locking=False,
        )
