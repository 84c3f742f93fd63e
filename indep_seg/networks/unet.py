"""UNet segmentation network: the foreground provider of Dai et al. 2019 (Table 1).

The `paper` preset is Table 1 of the appendix exactly: a 128x128x3 input, an encoder of
4x4 convolutions with stride 2, BatchNorm and leaky ReLU (64-128-256-512-512) closed by a 2x2
stride-2 convolution with 512 filters, a mirrored decoder of transposed convolutions (2x2 512,
then 4x4 512-256-128-64) with skip connections to the encoder features of the same size, and a
4x4 transposed convolution to one channel with a sigmoid (the soft mask).

Configurable: resolution, widths, kernels (hence depth), BatchNorm momentum, and the upsampling
of the decoder (`"transpose"` as in the paper, or `"bilinear"`: bilinear upsampling then a
convolution, which avoids the checkerboard masks a transposed-convolution decoder gave on the
horse photos, DESIGN.md section 7).

The BatchNorms are `FusedBatchNormalization`, the transposed convolutions
`GemmConv2DTranspose` and the convolutions `UnfusedBiasConv2D` (`GemmConv2D` for a 1-channel
mask layer): Keras' layers (same weights and results) with faster training kernels on CPU (fused
batch norm; one GEMM on 4x4 maps and for 1-channel outputs; oneDNN's plain filter gradient),
docs/performance.md.
"""

from __future__ import annotations

import keras

from indep_seg import checks
from indep_seg.networks.fused_batch_norm import FusedBatchNormalization
from indep_seg.networks.gemm_conv import GemmConv2D
from indep_seg.networks.gemm_conv_transpose import GemmConv2DTranspose
from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D

__all__ = ["UNet", "unet_preset", "UNET_PRESETS"]

UNET_PRESETS = {
    # Dai et al. 2019, appendix Table 1.
    "paper": dict(
        resolution=128,
        encoder_filters=(64, 128, 256, 512, 512, 512),
        encoder_kernels=(4, 4, 4, 4, 4, 2),
        upsampling="transpose",
        bn_momentum=0.9,
    ),
    # The small preset of the `box_seg` experiment (2 CPU cores).
    "small": dict(
        resolution=64,
        encoder_filters=(32, 64, 128, 256, 256),
        encoder_kernels=(4, 4, 4, 4, 4),
        upsampling="conv_bilinear",
        bn_momentum=0.9,
    ),
    # Tests.
    "tiny": dict(
        resolution=16,
        encoder_filters=(4, 8, 8),
        encoder_kernels=(4, 4, 2),
        upsampling="bilinear",
        bn_momentum=0.9,
    ),
}


def unet_preset(name: str, **overrides) -> "UNet":
    """A `UNet` built from one of `UNET_PRESETS` ("paper", "small", "tiny") plus overrides."""
    checks.check_choice(name, "name", tuple(UNET_PRESETS))
    return UNet(**{**UNET_PRESETS[name], **overrides})


@keras.saving.register_keras_serializable(package="indep_seg")
class UNet(keras.Model):
    """Encoder-decoder with skip connections mapping an image to a soft mask.

    Dai et al. 2019, appendix Table 1 ("UNet" column). Each encoder layer halves the size
    (`kernel x kernel` conv, stride 2, BatchNorm, leaky ReLU 0.2); each decoder layer doubles it
    and is concatenated with the encoder output of the same size; the last layer doubles to the
    input size with one filter and a sigmoid.

    Args:
        resolution: input side R (R must be divisible by 2 ** len(encoder_filters)).
        encoder_filters: filters of the encoder layers, outermost first.
        encoder_kernels: kernel size of each encoder layer; the decoder mirrors them.
        upsampling: `"transpose"` (transposed convolutions, the paper), `"bilinear"`
            (bilinear upsampling followed by a 3x3 convolution) or `"conv_bilinear"` (the 3x3
            convolution at the lower size, then bilinear upsampling: ~4x cheaper decoder, also
            free of checkerboards; the last layer upsamples first so the mask keeps full detail).
        bn_momentum: BatchNorm moving-average momentum (Keras' default 0.99 left inference
            masks far behind training masks early in training; DESIGN.md section 7).
        leaky_slope: negative slope of the leaky ReLUs.
        bn_synchronized: BatchNorm statistics over the global batch under tf.distribute
            (``synchronized=True``); needed for N replicas to train exactly as one device.
        bias_before_bn: give the convolutions that feed a BatchNorm a bias (Keras' default). Such
            a bias has a zero gradient in exact arithmetic (BN subtracts the batch mean), so Adam
            moves it by about +-lr per step on the sign of rounding noise; ``False`` (tiny presets)
            drops it, which changes nothing else (BN's beta is the bias).
        in_channels: channels of the input (3: RGB; 4: RGB and a box plane, the context student).
        name: model name.

    Example:
        >>> net = unet_preset("tiny")
        >>> net(np.zeros((2, 16, 16, 3), "float32")).shape
        TensorShape([2, 16, 16, 1])

    Reference: Dai, Xie, Zhang, Zhang. "Learning Segmentation Masks with the Independence
    Prior", AAAI 2019.
    """

    def __init__(
        self,
        resolution=128,
        encoder_filters=(64, 128, 256, 512, 512, 512),
        encoder_kernels=(4, 4, 4, 4, 4, 2),
        upsampling="transpose",
        bn_momentum=0.9,
        leaky_slope=0.2,
        bn_synchronized=False,
        bias_before_bn=True,
        in_channels=3,
        name="unet",
        **kwargs,
    ):
        resolution = checks.check_int(resolution, "resolution", minimum=2)
        encoder_filters = tuple(int(f) for f in encoder_filters)
        encoder_kernels = tuple(int(k) for k in encoder_kernels)
        if not encoder_filters or min(encoder_filters) < 1:
            raise ValueError(
                f"encoder_filters: expected a non-empty list of positive ints, "
                f"got {encoder_filters}"
            )
        if len(encoder_kernels) != len(encoder_filters) or min(encoder_kernels) < 1:
            raise ValueError(
                f"encoder_kernels: expected {len(encoder_filters)} positive ints "
                f"(one per encoder layer), got {encoder_kernels}"
            )
        if resolution % (2 ** len(encoder_filters)):
            raise ValueError(
                f"resolution: expected a multiple of 2**{len(encoder_filters)} = "
                f"{2 ** len(encoder_filters)} for {len(encoder_filters)} encoder "
                f"layers, got {resolution}"
            )
        checks.check_choice(upsampling, "upsampling", ("transpose", "bilinear", "conv_bilinear"))
        checks.check_fraction(bn_momentum, "bn_momentum")

        def bn(tag):
            return FusedBatchNormalization(
                momentum=bn_momentum, synchronized=bool(bn_synchronized), name=tag
            )

        def act(tag):
            return keras.layers.LeakyReLU(negative_slope=leaky_slope, name=tag)

        def up(x, filters, kernel, tag, last=False):
            use_bias = last or bool(bias_before_bn)  # every decoder layer but the last feeds a BN
            if upsampling == "transpose":
                return GemmConv2DTranspose(
                    filters, kernel, strides=2, padding="same", use_bias=use_bias, name=tag
                )(x)
            if upsampling == "conv_bilinear" and not last:
                x = UnfusedBiasConv2D(filters, 3, padding="same", use_bias=use_bias, name=tag)(x)
                return keras.layers.UpSampling2D(2, interpolation="bilinear", name=tag + "_up")(x)
            x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=tag + "_up")(x)
            return GemmConv2D(filters, 3, padding="same", use_bias=use_bias, name=tag)(
                x
            )  # GEMM for the mask

        in_channels = checks.check_int(in_channels, "in_channels", minimum=1)
        inputs = keras.Input((resolution, resolution, in_channels), name="image")
        x = inputs
        skips = []
        for i, (f, k) in enumerate(zip(encoder_filters, encoder_kernels)):
            x = UnfusedBiasConv2D(
                f, k, strides=2, padding="same", use_bias=bool(bias_before_bn), name=f"enc{i}_conv"
            )(x)
            x = act(f"enc{i}_act")(bn(f"enc{i}_bn")(x))
            skips.append(x)
        n = len(encoder_filters)
        for i in range(n - 2, -1, -1):  # decoder layer back to the size of encoder layer i
            x = up(x, encoder_filters[i], encoder_kernels[i + 1], f"dec{i}_conv")
            x = act(f"dec{i}_act")(bn(f"dec{i}_bn")(x))
            x = keras.layers.Concatenate(name=f"dec{i}_skip")([x, skips[i]])
        x = up(x, 1, encoder_kernels[0], "mask_conv", last=True)
        mask = keras.layers.Activation("sigmoid", dtype="float32", name="mask")(x)
        super().__init__(inputs=inputs, outputs=mask, name=name, **kwargs)
        self.resolution = resolution
        self.encoder_filters = encoder_filters
        self.encoder_kernels = encoder_kernels
        self.upsampling = upsampling
        self.bn_momentum = float(bn_momentum)
        self.leaky_slope = float(leaky_slope)
        self.bn_synchronized = bool(bn_synchronized)
        self.bias_before_bn = bool(bias_before_bn)
        self.in_channels = in_channels

    def get_config(self):
        return {
            "resolution": self.resolution,
            "encoder_filters": list(self.encoder_filters),
            "encoder_kernels": list(self.encoder_kernels),
            "upsampling": self.upsampling,
            "bn_momentum": self.bn_momentum,
            "leaky_slope": self.leaky_slope,
            "bn_synchronized": self.bn_synchronized,
            "bias_before_bn": self.bias_before_bn,
            "in_channels": self.in_channels,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def as_functional(self) -> keras.Model:
        """A plain functional `keras.Model` sharing these layers (loads without this class)."""
        return keras.Model(self.inputs, self.outputs, name=self.name)
