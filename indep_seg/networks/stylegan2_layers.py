"""StyleGAN2 building blocks (Karras et al. 2020b), used by ILSGAN (Zou et al. 2023, "Implementation
Details": "We employ StyleGAN2 ... with adaptive discriminator augmentation").

- `EqualizedDense`, `EqualizedConv2D`: equalised learning rate (weights drawn from N(0, 1) and
scaled
  by `1 / sqrt(fan_in)` at run time; dense layers of the mapping network use `lr_multiplier` 0.01).
- `MappingNetwork`: z -> w (pixel-norm of z, then `num_layers` dense + leaky ReLU).
- `ModulatedConv2D`: modulated convolution with weight demodulation (StyleGAN2 eq. 1-3). Implemented
  in the "non-fused" form (scale the input by the style, convolve with the shared weight, scale the
  output by the demodulation coefficients), which is mathematically identical to per-sample weights
  and fast on CPU. Up-sampling is bilinear x2 before the convolution (StyleGAN2 uses a transposed
  convolution followed by a blur; both are a smooth x2 up-sampling followed by a 3x3 filter).
- `NoiseInjection`: per-pixel Gaussian noise with a learned per-layer strength (initialised to 0).
- `MinibatchStdDev`: the minibatch standard-deviation feature of the discriminator's epilogue.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from indep_seg.checks import check_int, check_positive_number

__all__ = [
    "EqualizedDense",
    "EqualizedConv2D",
    "MappingNetwork",
    "ModulatedConv2D",
    "NoiseInjection",
    "MinibatchStdDev",
    "lrelu_gain",
    "track_for_checkpoint",
    "modulated_conv_reference",
]

SQRT2 = math.sqrt(2.0)


def track_for_checkpoint(owner, prefix, layers):
    """Also set each layer of a Python list as its own attribute (`prefix0`, `prefix1`, ...).

    With Keras 3 on TensorFlow, `tf.train.Checkpoint` does not follow layers held in lists (Keras'
    `TrackedList`), although `owner.weights` does: without this, checkpoints silently miss them.
    """
    for i, layer in enumerate(layers):
        object.__setattr__(owner, f"_ckpt_{prefix}{i}", layer)
        owner._track_trackable(layer, name=f"{prefix}{i}", overwrite=True)


def lrelu_gain(x):
    """Leaky ReLU (slope 0.2) times sqrt(2), StyleGAN2's `lrelu` with its default gain."""
    return tf.nn.leaky_relu(x, alpha=0.2) * SQRT2


@keras.saving.register_keras_serializable("indep_seg")
class EqualizedDense(keras.layers.Layer):
    """Dense layer with equalised learning rate.

    Args:
        units: output features.
        lr_multiplier: learning-rate multiplier (0.01 in the mapping network).
        bias_init: initial bias value (1.0 for the style affine of a modulated conv).
        activation: None or "lrelu" (leaky ReLU 0.2 with gain sqrt(2)).
    """

    def __init__(self, units, lr_multiplier=1.0, bias_init=0.0, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_int(units, "units", minimum=1)
        self.lr_multiplier = float(check_positive_number(lr_multiplier, "lr_multiplier"))
        self.bias_init = float(bias_init)
        if activation not in (None, "lrelu"):
            raise ValueError(f"activation: expected None or 'lrelu', got {activation!r}")
        self.activation = activation

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(fan_in, self.units),
            initializer=keras.initializers.RandomNormal(0.0, 1.0 / self.lr_multiplier),
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(self.units,),
            initializer=keras.initializers.Constant(self.bias_init / self.lr_multiplier),
        )
        self.weight_gain = self.lr_multiplier / math.sqrt(fan_in)

    def call(self, x):
        y = tf.matmul(x, self.kernel * self.weight_gain) + self.bias * self.lr_multiplier
        return lrelu_gain(y) if self.activation == "lrelu" else y

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "lr_multiplier": self.lr_multiplier,
            "bias_init": self.bias_init,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable("indep_seg")
class EqualizedConv2D(keras.layers.Layer):
    """Convolution with equalised learning rate, optional x2 average-pool down-sampling after it.

    Args:
        filters: output channels.
        kernel_size: square kernel side.
        down: halve the resolution after the convolution (2x2 average pooling).
        use_bias: add a bias.
        activation: None or "lrelu".
    """

    def __init__(
        self, filters, kernel_size=3, down=False, use_bias=True, activation=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters", minimum=1)
        self.kernel_size = check_int(kernel_size, "kernel_size", minimum=1)
        self.down = bool(down)
        self.use_bias = bool(use_bias)
        if activation not in (None, "lrelu"):
            raise ValueError(f"activation: expected None or 'lrelu', got {activation!r}")
        self.activation = activation

    def build(self, input_shape):
        cin = int(input_shape[-1])
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, cin, self.filters),
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.weight_gain = 1.0 / math.sqrt(cin * k * k)

    def call(self, x):
        y = tf.nn.conv2d(x, self.kernel * self.weight_gain, strides=1, padding="SAME")
        if self.down:
            y = tf.nn.avg_pool2d(y, 2, 2, "VALID")
        if self.use_bias:
            y = y + self.bias
        return lrelu_gain(y) if self.activation == "lrelu" else y

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "down": self.down,
            "use_bias": self.use_bias,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable("indep_seg")
class MappingNetwork(keras.layers.Layer):
    """StyleGAN2 mapping network f: z -> w (pixel norm of z, `num_layers` x dense + lrelu).

    Args:
        w_dim: dimension of w (512 in the paper).
        num_layers: dense layers (8 in StyleGAN2).
        lr_multiplier: learning-rate multiplier of its dense layers (0.01).
    """

    def __init__(self, w_dim=512, num_layers=8, lr_multiplier=0.01, **kwargs):
        super().__init__(**kwargs)
        self.w_dim = check_int(w_dim, "w_dim", minimum=1)
        self.num_layers = check_int(num_layers, "num_layers", minimum=1)
        self.lr_multiplier = float(check_positive_number(lr_multiplier, "lr_multiplier"))
        self.dense = [
            EqualizedDense(
                self.w_dim, lr_multiplier=self.lr_multiplier, activation="lrelu", name=f"fc{i}"
            )
            for i in range(self.num_layers)
        ]
        track_for_checkpoint(self, "fc", self.dense)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense:
            layer.build(shape)
            shape = shape[:-1] + (self.w_dim,)

    def call(self, z):
        x = z * tf.math.rsqrt(tf.reduce_mean(tf.square(z), axis=-1, keepdims=True) + 1e-8)
        for layer in self.dense:
            x = layer(x)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "w_dim": self.w_dim,
            "num_layers": self.num_layers,
            "lr_multiplier": self.lr_multiplier,
        }


@keras.saving.register_keras_serializable("indep_seg")
class ModulatedConv2D(keras.layers.Layer):
    """Modulated convolution with demodulation (Karras et al. 2020b, StyleGAN2 eq. 1-3).

    With style `s = A(w)` (an affine layer, bias initialised to 1), the per-sample weight is
    `w'_ijk = s_i * w_ijk` (eq. 1) and, when `demodulate`, `w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2
    + eps)`
    (eq. 3), for input channel i, output channel j and kernel tap k. Computed without materialising
    the per-sample weights: `conv(x * s, w) * d` with `d_j = rsqrt(sum_i s_i^2 sum_k w_ijk^2 +
    eps)`.

    Call with `[x, w]`: `x` `[N, H, W, Cin]`, `w` `[N, w_dim]` -> `[N, H', W', filters]`.

    Args:
        filters: output channels.
        kernel_size: square kernel side (3, or 1 for toRGB).
        demodulate: apply eq. 3 (False for toRGB layers).
        up: up-sample the input x2 (bilinear) before the convolution.
    """

    def __init__(self, filters, kernel_size=3, demodulate=True, up=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int(filters, "filters", minimum=1)
        self.kernel_size = check_int(kernel_size, "kernel_size", minimum=1)
        self.demodulate = bool(demodulate)
        self.up = bool(up)

    def build(self, input_shape):
        x_shape, w_shape = input_shape
        cin = int(x_shape[-1])
        k = self.kernel_size
        self.affine = EqualizedDense(cin, bias_init=1.0, name="affine")
        self.affine.build(tuple(w_shape))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, cin, self.filters),
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
        )
        self.weight_gain = 1.0 / math.sqrt(cin * k * k)

    def styles(self, w):
        return self.affine(w)

    def call(self, inputs):
        x, w = inputs
        s = self.styles(w)  # [N, Cin]
        weight = self.kernel * self.weight_gain
        if self.up:
            h, wd = tf.shape(x)[1], tf.shape(x)[2]
            x = tf.image.resize(x, tf.stack([2 * h, 2 * wd]), method="bilinear")
        y = tf.nn.conv2d(x * s[:, tf.newaxis, tf.newaxis, :], weight, strides=1, padding="SAME")
        if self.demodulate:
            wsq = tf.reduce_sum(tf.square(weight), axis=[0, 1])  # [Cin, Cout]
            d = tf.math.rsqrt(tf.matmul(tf.square(s), wsq) + 1e-8)  # [N, Cout]
            y = y * d[:, tf.newaxis, tf.newaxis, :]
        return y

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "demodulate": self.demodulate,
            "up": self.up,
        }


def modulated_conv_reference(x, styles, kernel, demodulate=True):
    """NumPy-free reference of StyleGAN2 eq. 1-3 with explicit per-sample weights (for tests).

    Args:
        x: `[N, H, W, Cin]`; styles: `[N, Cin]`; kernel: `[k, k, Cin, Cout]` (already gain-scaled).
    """
    outs = []
    for i in range(int(x.shape[0])):
        w1 = kernel * styles[i][tf.newaxis, tf.newaxis, :, tf.newaxis]  # eq. 1
        if demodulate:
            w1 = w1 / tf.sqrt(
                tf.reduce_sum(tf.square(w1), axis=[0, 1, 2], keepdims=True) + 1e-8
            )  # eq. 3
        outs.append(tf.nn.conv2d(x[i : i + 1], w1, strides=1, padding="SAME"))
    return tf.concat(outs, axis=0)


@keras.saving.register_keras_serializable("indep_seg")
class NoiseInjection(keras.layers.Layer):
    """Adds `strength * n`, n ~ N(0, 1) per pixel (one channel broadcast over features).

    `strength` is a learned scalar initialised to 0 (StyleGAN2). Pass `noise` to fix it.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.strength = self.add_weight(name="strength", shape=(), initializer="zeros")

    def call(self, x, noise=None):
        if noise is None:
            shape = tf.concat([tf.shape(x)[:3], [1]], axis=0)
            noise = tf.random.normal(shape, dtype=x.dtype)
        return x + self.strength * noise


@keras.saving.register_keras_serializable("indep_seg")
class MinibatchStdDev(keras.layers.Layer):
    """StyleGAN2's minibatch standard deviation: appends `num_channels` feature maps holding the
    average over features and pixels of the standard deviation within groups of `group_size`
    samples.

    When the batch is not divisible by the group size the whole batch is one group.
    """

    def __init__(self, group_size=4, num_channels=1, **kwargs):
        super().__init__(**kwargs)
        self.group_size = check_int(group_size, "group_size", minimum=1)
        self.num_channels = check_int(num_channels, "num_channels", minimum=1)

    def call(self, x):
        shape = tf.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        c = x.shape[-1]
        if c % self.num_channels:
            raise ValueError(
                f"x: expected channels divisible by num_channels={self.num_channels}, got {c}"
            )
        g = tf.minimum(self.group_size, n)
        g = tf.where(tf.equal(n % g, 0), g, n)
        f = self.num_channels
        y = tf.reshape(x, tf.stack([g, n // g, h, w, f, c // f]))
        y = y - tf.reduce_mean(y, axis=0)
        y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + 1e-8)  # [n/g, h, w, f, c/f]
        y = tf.reduce_mean(y, axis=[1, 2, 4])  # [n/g, f]
        y = tf.tile(y[:, tf.newaxis, tf.newaxis, :], tf.stack([g, h, w, 1]))
        return tf.concat([x, tf.cast(y, x.dtype)], axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "group_size": self.group_size,
            "num_channels": self.num_channels,
        }
