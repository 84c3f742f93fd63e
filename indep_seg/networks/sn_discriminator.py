"""Spectrally normalised discriminator of Dai et al. 2019 (appendix Table 1, left column).

Table 1: 3x3 convolutions with spectral normalisation and leaky ReLU, 64-128-256-512 filters with
stride 2, then 256 filters with stride 1, then a 1x1 convolution to one channel. The paper's last
layer is "lRELU+sigmoid"; here the network returns the LOGIT (the sigmoid lives in the
binary cross-entropy of eq. 6-7, which is numerically safer) averaged over positions
(`head="conv"`). `head="dense"` replaces the averaged 1x1 conv by a spectrally normalised
dense layer on the flattened features: DESIGN.md section 7 found the averaged 1x1 output gave the
discriminator almost no signal.

`keras.layers.SpectralNormalization` normalises only when called with `training=True`: call
the discriminator with `training=True` in every train step (DESIGN.md section 4). The
convolutions are `UnfusedBiasConv2D` and the 1x1 logit convolution `GemmConv2D` (Keras' Conv2D
with faster training kernels on CPU).
"""

from __future__ import annotations

import keras

from indep_seg import checks
from indep_seg.networks.gemm_conv import GemmConv2D
from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D

__all__ = ["SNDiscriminator", "sn_discriminator_preset", "SN_DISCRIMINATOR_PRESETS"]

SN_DISCRIMINATOR_PRESETS = {
    "paper": dict(resolution=128, filters=(64, 128, 256, 512), last_filters=256, head="conv"),
    "small": dict(resolution=64, filters=(32, 64, 128, 256), last_filters=128, head="dense"),
    "tiny": dict(resolution=16, filters=(4, 8), last_filters=8, head="dense"),
}


def sn_discriminator_preset(name: str, **overrides) -> "SNDiscriminator":
    """An `SNDiscriminator` from one of `SN_DISCRIMINATOR_PRESETS` plus overrides."""
    checks.check_choice(name, "name", tuple(SN_DISCRIMINATOR_PRESETS))
    return SNDiscriminator(**{**SN_DISCRIMINATOR_PRESETS[name], **overrides})


@keras.saving.register_keras_serializable(package="indep_seg")
class SNDiscriminator(keras.Model):
    """Image -> realism logit, every weight layer spectrally normalised.

    Dai et al. 2019, appendix Table 1 ("Discriminator" column).

    Args:
        resolution: input side.
        filters: filters of the 3x3 stride-2 convolutions.
        last_filters: filters of the final 3x3 stride-1 convolution (256 in Table 1).
        head: `"conv"` (1x1 conv to one channel averaged over positions, Table 1) or
            `"dense"` (dense layer on the flattened features).
        power_iterations: power iterations of the spectral normalisation per call.
        leaky_slope: negative slope of the leaky ReLUs.
        name: model name.

    Example:
        >>> d = sn_discriminator_preset("tiny")
        >>> d(np.zeros((2, 16, 16, 3), "float32"), training=True).shape
        TensorShape([2, 1])

    Reference: Dai et al., "Learning Segmentation Masks with the Independence Prior", AAAI 2019;
    Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018.
    """

    def __init__(
        self,
        resolution=128,
        filters=(64, 128, 256, 512),
        last_filters=256,
        head="conv",
        power_iterations=1,
        leaky_slope=0.2,
        name="sn_discriminator",
        **kwargs,
    ):
        resolution = checks.check_int(resolution, "resolution", minimum=2)
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"filters: expected a non-empty list of positive ints, got {filters}")
        last_filters = checks.check_int(last_filters, "last_filters", minimum=1)
        checks.check_choice(head, "head", ("conv", "dense"))
        power_iterations = checks.check_int(power_iterations, "power_iterations", minimum=1)

        def sn(layer):
            return keras.layers.SpectralNormalization(
                layer, power_iterations=power_iterations, name="sn_" + layer.name
            )

        inputs = keras.Input((resolution, resolution, 3), name="image")
        x = inputs
        for i, f in enumerate(filters):
            x = sn(UnfusedBiasConv2D(f, 3, strides=2, padding="same", name=f"conv{i}"))(x)
            x = keras.layers.LeakyReLU(negative_slope=leaky_slope, name=f"act{i}")(x)
        x = sn(UnfusedBiasConv2D(last_filters, 3, strides=1, padding="same", name="conv_last"))(x)
        x = keras.layers.LeakyReLU(negative_slope=leaky_slope, name="act_last")(x)
        if head == "conv":
            x = sn(GemmConv2D(1, 1, name="logit_conv"))(x)
            logit = keras.layers.GlobalAveragePooling2D(name="logit")(x)
        else:
            x = keras.layers.Flatten(name="flatten")(x)
            logit = sn(keras.layers.Dense(1, name="logit"))(x)
        super().__init__(inputs=inputs, outputs=logit, name=name, **kwargs)
        self.resolution = resolution
        self.filters = filters
        self.last_filters = last_filters
        self.head = head
        self.power_iterations = power_iterations
        self.leaky_slope = float(leaky_slope)

    def get_config(self):
        return {
            "resolution": self.resolution,
            "filters": list(self.filters),
            "last_filters": self.last_filters,
            "head": self.head,
            "power_iterations": self.power_iterations,
            "leaky_slope": self.leaky_slope,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
