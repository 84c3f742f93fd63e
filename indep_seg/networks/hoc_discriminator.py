"""Spectrally normalised discriminator of the HOC application (Dai et al. 2019, Table 2).

Table 2 (discriminator, 64x64x3): 3x3 conv 64 / 128 / 256 / 512, stride 2, lReLU, SN; 3x3 conv
1024, stride 1, lReLU, SN; 1x1 conv 1, SN. The paper's 1x1 head gives one score per position; here
``head="conv1x1"`` averages it over space (the paper preset). DESIGN.md section 7 measured that this
averaged head gave the discriminator almost no signal on the nuclei image, while a dense layer on
the
flattened features learned real-vs-fake within 60 steps: ``head="dense"`` (the small preset's
default).
The output is a logit (the sigmoid is in the loss).

Spectral normalisation is Keras' `SpectralNormalization`, which normalises only when called with
``training=True``: call the discriminator with ``training=True`` in every train step (DESIGN.md 4).
"""

from __future__ import annotations

import keras
from keras import layers

from indep_seg import checks
from indep_seg.networks.gemm_conv import GemmConv2D
from indep_seg.networks.stylegan2_layers import track_for_checkpoint
from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D

__all__ = ["HocDiscriminator"]


@keras.saving.register_keras_serializable(package="indep_seg")
class HocDiscriminator(keras.Model):
    """Image ``[B, R, R, 3]`` -> real/fake logit ``[B, 1]``.

    Args:
        widths: channels of the stride-2 3x3 SN convs (Table 2: 64, 128, 256, 512).
        final_width: channels of the last stride-1 3x3 SN conv (Table 2: 1024; 0 to skip it).
        head: ``"conv1x1"`` (Table 2: SN 1x1 conv to 1 channel, averaged over space) or ``"dense"``
            (SN dense layer on the flattened features).

    Reference: Dai et al. 2019, Table 2; Miyato et al. 2018 (SN-GAN).
    """

    def __init__(self, widths=(64, 128, 256, 512), final_width=1024, head="conv1x1", **kwargs):
        super().__init__(**kwargs)
        self.widths = tuple(int(w) for w in widths)
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths: expected positive channel counts, got {widths}")
        self.final_width = checks.check_int(final_width, "final_width", minimum=0)
        self.head = checks.check_choice(head, "head", ("conv1x1", "dense"))
        sn = layers.SpectralNormalization
        self.convs = [
            sn(UnfusedBiasConv2D(w, 3, strides=2, padding="same"), name=f"sn_conv{i}")
            for i, w in enumerate(self.widths)
        ]
        if self.final_width:
            self.convs.append(
                sn(
                    UnfusedBiasConv2D(self.final_width, 3, strides=1, padding="same"),
                    name="sn_conv_final",
                )
            )
        track_for_checkpoint(
            self, "conv", self.convs
        )  # lists are not followed by tf.train.Checkpoint
        self.act = layers.LeakyReLU(0.2)
        if self.head == "conv1x1":
            self.out = sn(GemmConv2D(1, 1), name="sn_head_1x1")
        else:
            self.flatten = layers.Flatten()
            self.out = sn(layers.Dense(1), name="sn_head_dense")

    def call(self, images, training=False):
        x = images
        for conv in self.convs:
            x = self.act(conv(x, training=training))
        if self.head == "conv1x1":
            return keras.ops.mean(self.out(x, training=training), axis=(1, 2))
        return self.out(self.flatten(x), training=training)

    @classmethod
    def paper(cls, **kwargs):
        """Table 2 exactly (64, 128, 256, 512 stride 2; 1024 stride 1; SN 1x1 head)."""
        kwargs.setdefault("head", "conv1x1")
        return cls(widths=(64, 128, 256, 512), final_width=1024, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(widths=list(self.widths), final_width=self.final_width, head=self.head)
        return config
