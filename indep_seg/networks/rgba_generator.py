"""Deconvolutional RGBA instance generator and its InfoGAN Q head (Dai et al. 2019, Table 2).

Table 2 (generator, 64x64): z ``1x1x6`` -> 1x1 conv 8*8*256 (lReLU, BN) -> 4x4 conv 256 (stride 1)
-> 4x4 conv 256 (stride 1) -> 4x4 deconv 128 (stride 2) -> 4x4 deconv 64 (stride 2) -> 4x4 deconv 4,
sigmoid (stride 2). `RGBAGenerator.paper()` builds exactly that; the constructor arguments make
smaller versions (the 2-core preset) and an ``upsample`` mode (nearest upsampling + conv, which
avoids
the checkerboard masks of transposed convolutions, DESIGN.md section 7).

The InfoGAN information term (Dai et al. appendix: "an information regularization term like InfoGAN
for more diversity", weight beta) needs a network Q that recovers z from a generated instance:
`InfoGANQHead` maps an RGBA layer to an estimate of z.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from indep_seg import checks
from indep_seg.networks.fused_batch_norm import FusedBatchNormalization
from indep_seg.networks.gemm_conv_transpose import GemmConv2DTranspose
from indep_seg.networks.stylegan2_layers import track_for_checkpoint
from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D

__all__ = ["RGBAGenerator", "InfoGANQHead"]


@keras.saving.register_keras_serializable(package="indep_seg")
class RGBAGenerator(keras.Model):
    """Noise z -> RGBA instance (RGB appearance then alpha soft mask), all in [0, 1].

    Args:
        latent_dim: dim(z) (Table 4: 6 crowd, 5 fruit cluster, 2 seed cluster).
        resolution: output side; must equal ``initial_size * 2 ** (len(widths) - 2 + 1)``.
        initial_size: side of the first feature map (8 in Table 2).
        widths: channels: ``widths[0]`` of the projection (1x1 conv on z = dense), ``widths[1]`` of
            the two stride-1 4x4 convs, then one stride-2 block per remaining width, then the final
            stride-2 block to 4 channels. Table 2: ``(256, 256, 128, 64)``.
        upsample: ``"deconv"`` (Table 2: 4x4 transposed conv, stride 2) or ``"upsample"``
            (nearest x2 then 3x3 conv).
        bn_momentum: BatchNorm momentum (Keras' 0.99 lags early in training; 0.9 default).
        bn_synchronized: BatchNorm statistics over the global batch under tf.distribute
            (``synchronized=True``); needed for N replicas to train exactly as one device.
        bias_before_bn: give the layers that feed a BatchNorm a bias (Keras' default). Such a bias
            has a zero gradient in exact arithmetic (BN subtracts the batch mean), so Adam moves it
            by about +-lr per step on the sign of rounding noise; ``False`` (tiny presets) drops it,
            which changes nothing else (BN's beta is the bias).
        alpha_bias: initial bias of the alpha logit (e.g. ``logit(a)`` to start near area a).
        border_taper: if > 0, the alpha channel is multiplied by a fixed ramp that is 0 on the
            canvas' outermost pixels and reaches 1 after `border_taper` pixels, so an instance
            cannot
            be cut by its own canvas border (a layer must hold one complete instance; not in the
            paper, 0 in the paper preset).

    Example:
        >>> g = RGBAGenerator.paper(latent_dim=6)
        >>> g(keras.random.uniform((2, 6), -1, 1)).shape
        TensorShape([2, 64, 64, 4])

    Reference: Dai et al. 2019, "Learning Segmentation Masks with the Independence Prior", Table 2.
    """

    def __init__(
        self,
        latent_dim=6,
        resolution=64,
        initial_size=8,
        widths=(256, 256, 128, 64),
        upsample="deconv",
        bn_momentum=0.9,
        alpha_bias=0.0,
        border_taper=0,
        bn_synchronized=False,
        bias_before_bn=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = checks.check_int(latent_dim, "latent_dim", minimum=1)
        self.resolution = checks.check_int(resolution, "resolution", minimum=2)
        self.initial_size = checks.check_int(initial_size, "initial_size", minimum=1)
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths: expected at least 2 positive channel counts, got {widths}")
        self.widths = widths
        n_up = len(widths) - 1
        if self.initial_size * 2**n_up != self.resolution:
            raise ValueError(
                f"resolution: expected initial_size * 2 ** (len(widths) - 1) = "
                f"{self.initial_size * 2**n_up}, got {self.resolution}"
            )
        self.upsample = checks.check_choice(upsample, "upsample", ("deconv", "upsample"))
        self.bn_momentum = float(bn_momentum)
        self.bn_synchronized = bool(bn_synchronized)
        self.bias_before_bn = bool(bias_before_bn)
        self.alpha_bias = float(alpha_bias)
        self.border_taper = checks.check_int(
            border_taper, "border_taper", minimum=0, maximum=self.resolution // 2
        )
        if self.border_taper:
            idx = np.arange(self.resolution, dtype=np.float32)
            edge = np.minimum(idx, self.resolution - 1 - idx)  # 0 on the outermost pixels
            ramp = np.clip(edge / float(self.border_taper), 0.0, 1.0)
            self._taper = np.concatenate(
                [
                    np.ones((self.resolution, self.resolution, 3), np.float32),
                    np.minimum(ramp[:, None], ramp[None, :])[..., None],
                ],
                -1,
            )

        s, c0 = self.initial_size, widths[0]

        def bn(name):
            return FusedBatchNormalization(
                momentum=self.bn_momentum, synchronized=self.bn_synchronized, name=name
            )

        bias = self.bias_before_bn
        self.project = layers.Dense(
            s * s * c0, use_bias=bias, name="project"
        )  # 1x1 conv on a 1x1 z
        self.project_bn = bn("project_bn")
        self.reshape = layers.Reshape((s, s, c0))
        blocks = []
        for i in range(2):
            blocks.append(
                (
                    UnfusedBiasConv2D(widths[1], 4, padding="same", use_bias=bias, name=f"conv{i}"),
                    bn(f"conv{i}_bn"),
                )
            )
        for i, w in enumerate(widths[2:]):
            blocks.append((self._up(w, f"up{i}", use_bias=bias), bn(f"up{i}_bn")))
        self.block_convs = [c for c, _ in blocks]
        self.block_bns = [b for _, b in blocks]
        # tf.train.Checkpoint does not follow layers held in Python lists (Keras 3 on TF):
        # register each one as its own attribute, or resumed runs lose the BN statistics.
        track_for_checkpoint(self, "block_conv", self.block_convs)
        track_for_checkpoint(self, "block_bn", self.block_bns)
        self.to_rgba = self._up(4, "to_rgba")
        self.act = layers.LeakyReLU(0.2)

    def _up(self, filters, name, use_bias=True):
        if self.upsample == "deconv":
            return GemmConv2DTranspose(
                filters, 4, strides=2, padding="same", use_bias=use_bias, name=name
            )
        return keras.Sequential(
            [
                layers.UpSampling2D(2, interpolation="nearest"),
                UnfusedBiasConv2D(filters, 3, padding="same", use_bias=use_bias),
            ],
            name=name,
        )

    @property
    def blocks(self):
        """``[(conv, batch_norm), ...]`` in call order."""
        return list(zip(self.block_convs, self.block_bns))

    def build(self, input_shape):
        # Build every sub-layer so that weights exist before the first call (checkpoints, counts).
        super().build(input_shape)
        self(keras.ops.zeros((1, self.latent_dim)))
        bias_layer = self.to_rgba if self.upsample == "deconv" else self.to_rgba.layers[-1]
        b = keras.ops.convert_to_numpy(bias_layer.bias)
        b[3] = self.alpha_bias
        bias_layer.bias.assign(b)

    def call(self, z, training=False):
        x = self.act(self.project_bn(self.project(z), training=training))
        x = self.reshape(x)
        for conv, bn in self.blocks:
            x = self.act(bn(conv(x), training=training))
        rgba = keras.ops.sigmoid(self.to_rgba(x))
        if self.border_taper:
            rgba = rgba * keras.ops.convert_to_tensor(self._taper[None], dtype=rgba.dtype)
        return rgba

    @classmethod
    def paper(cls, latent_dim=6, **kwargs):
        """Table 2 exactly: 64x64, 8x8x256 projection, 256-256 convs, 128-64-4 deconvs."""
        return cls(
            latent_dim=latent_dim,
            resolution=64,
            initial_size=8,
            widths=(256, 256, 128, 64),
            upsample="deconv",
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            latent_dim=self.latent_dim,
            resolution=self.resolution,
            initial_size=self.initial_size,
            widths=list(self.widths),
            upsample=self.upsample,
            bn_momentum=self.bn_momentum,
            alpha_bias=self.alpha_bias,
            border_taper=self.border_taper,
            bn_synchronized=self.bn_synchronized,
            bias_before_bn=self.bias_before_bn,
        )
        return config


@keras.saving.register_keras_serializable(package="indep_seg")
class InfoGANQHead(keras.Model):
    """InfoGAN's Q: an RGBA instance -> an estimate of its latent z (for the information term).

    A small strided conv net (lReLU) on the generated RGBA layer, then a dense layer to
    `latent_dim`, tanh-free (z is uniform in [-1, 1]; the information term is the Gaussian
    log-likelihood with fixed variance, i.e. a squared error).

    Args:
        latent_dim: dim(z).
        widths: channels of the stride-2 3x3 convs.
    """

    def __init__(self, latent_dim=6, widths=(32, 64, 128), **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = checks.check_int(latent_dim, "latent_dim", minimum=1)
        self.widths = tuple(int(w) for w in widths)
        self.convs = [
            UnfusedBiasConv2D(w, 3, strides=2, padding="same", name=f"q_conv{i}")
            for i, w in enumerate(self.widths)
        ]
        track_for_checkpoint(self, "conv", self.convs)
        self.act = layers.LeakyReLU(0.2)
        self.pool = layers.Flatten()
        self.out = layers.Dense(self.latent_dim, name="q_z")

    def call(self, rgba, training=False):
        x = rgba
        for conv in self.convs:
            x = self.act(conv(x))
        return self.out(self.pool(x))

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, widths=list(self.widths))
        return config
