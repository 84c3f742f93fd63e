"""StyleGAN2-style generators and discriminator for ILSGAN (Zou et al. 2023, "Implementation
Details").

- `StyleGAN2Generator`: mapping network + synthesis network (learned 4x4 constant, modulated 3x3
  convolutions with noise inputs, skip architecture with toRGB at every resolution).
- `LayeredGenerator`: ILSGAN's layer synthesis (eq. 1): G_f, a 4-channel generator (foreground RGB +
  mask logit; "G_m shares backbone networks with G_f and has a separate head"), and G_b, a 3-channel
  background generator; each has its own mapping network and both read the same latent z.
- `StyleGAN2Discriminator`: residual discriminator with minibatch standard deviation.

Channel widths follow StyleGAN2-ADA: `min(channel_base // res, channel_max)`; the paper preset uses
`channel_base=32768, channel_max=512` (512 channels at every resolution up to 64).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from indep_seg.checks import check_int
from indep_seg.networks.stylegan2_layers import (
    EqualizedConv2D,
    EqualizedDense,
    MappingNetwork,
    MinibatchStdDev,
    ModulatedConv2D,
    NoiseInjection,
    lrelu_gain,
    track_for_checkpoint,
)

__all__ = [
    "StyleGAN2Generator",
    "LayeredGenerator",
    "StyleGAN2Discriminator",
    "channels_per_resolution",
]


def channels_per_resolution(resolution, channel_base, channel_max):
    """{res: channels} for res = 4, 8, ..., resolution (StyleGAN2-ADA's rule)."""
    resolution = check_int(resolution, "resolution", minimum=4)
    if resolution & (resolution - 1):
        raise ValueError(f"resolution: expected a power of two >= 4, got {resolution}")
    check_int(channel_base, "channel_base", minimum=1)
    check_int(channel_max, "channel_max", minimum=1)
    out, res = {}, 4
    while res <= resolution:
        out[res] = max(1, min(channel_base // res, channel_max))
        res *= 2
    return out


class _SynthesisLayer(keras.layers.Layer):
    """Modulated conv + noise + bias + lrelu (StyleGAN2's SynthesisLayer)."""

    def __init__(self, filters, up=False, use_noise=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.up = up
        self.use_noise = use_noise
        self.conv = ModulatedConv2D(filters, 3, demodulate=True, up=up, name="conv")
        self.noise = NoiseInjection(name="noise")

    def build(self, input_shape):
        x_shape, w_shape = input_shape
        self.conv.build((x_shape, w_shape))
        self.noise.build(None)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, inputs):
        x, w = inputs
        y = self.conv([x, w])
        if self.use_noise:
            y = self.noise(y)
        return lrelu_gain(y + self.bias)


class _ToRGB(keras.layers.Layer):
    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.conv = ModulatedConv2D(channels, 1, demodulate=False, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")

    def call(self, inputs):
        return self.conv(inputs) + self.bias


@keras.saving.register_keras_serializable("indep_seg")
class StyleGAN2Generator(keras.Model):
    """StyleGAN2 generator (Karras et al. 2020b): z -> w -> image with `out_channels` linear
    channels.

    Args:
        resolution: output side (power of two >= 4).
        z_dim, w_dim: latent and intermediate latent sizes (512 in ILSGAN).
        out_channels: 3 (background) or 4 (foreground RGB + mask logit).
        mapping_layers: dense layers of the mapping network (8 in StyleGAN2).
        channel_base, channel_max: widths, `min(channel_base // res, channel_max)`.
        use_noise: per-pixel noise inputs.

    Example:
        >>> g = StyleGAN2Generator(16, z_dim=8, w_dim=8, channel_base=64, channel_max=16)
        >>> g(tf.zeros([2, 8])).shape
        TensorShape([2, 16, 16, 3])
    """

    def __init__(
        self,
        resolution=64,
        z_dim=512,
        w_dim=512,
        out_channels=3,
        mapping_layers=8,
        channel_base=32768,
        channel_max=512,
        use_noise=True,
        mapping_lr_multiplier=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.resolution = check_int(resolution, "resolution", minimum=4)
        self.z_dim = check_int(z_dim, "z_dim", minimum=1)
        self.w_dim = check_int(w_dim, "w_dim", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.mapping_layers = check_int(mapping_layers, "mapping_layers", minimum=1)
        self.channel_base = channel_base
        self.channel_max = channel_max
        self.use_noise = bool(use_noise)
        self.mapping_lr_multiplier = float(mapping_lr_multiplier)
        self.channels = channels_per_resolution(self.resolution, channel_base, channel_max)
        self.mapping = MappingNetwork(
            self.w_dim, self.mapping_layers, self.mapping_lr_multiplier, name="mapping"
        )
        # flat lists of layers (layers nested in tuples are invisible to tf.train.Checkpoint)
        self.synthesis_layers = []
        self.torgb_layers = []
        self.layers_per_block = []
        for res, ch in self.channels.items():
            if res > 4:
                self.synthesis_layers.append(
                    _SynthesisLayer(ch, up=True, use_noise=self.use_noise, name=f"b{res}_conv0")
                )
            self.synthesis_layers.append(
                _SynthesisLayer(ch, up=False, use_noise=self.use_noise, name=f"b{res}_conv1")
            )
            self.layers_per_block.append(1 if res == 4 else 2)
            self.torgb_layers.append(_ToRGB(self.out_channels, name=f"b{res}_torgb"))
        track_for_checkpoint(self, "synthesis", self.synthesis_layers)
        track_for_checkpoint(self, "torgb", self.torgb_layers)
        self.build((None, self.z_dim))

    def _blocks(self):
        i = 0
        for n, torgb in zip(self.layers_per_block, self.torgb_layers):
            yield self.synthesis_layers[i : i + n], torgb
            i += n

    def build(self, input_shape):
        c4 = self.channels[4]
        self.const = self.add_weight(
            name="const", shape=(4, 4, c4), initializer=keras.initializers.RandomNormal(0.0, 1.0)
        )
        self.mapping.build((None, self.z_dim))
        cin = c4
        wshape = (None, self.w_dim)
        for layers, torgb in self._blocks():
            for layer in layers:
                layer.build(((None, None, None, cin), wshape))
                cin = layer.filters
            torgb.build(((None, None, None, cin), wshape))
        self.built = True

    @property
    def num_ws(self):
        """Number of per-layer latents of `synthesis` (StyleGAN2: one per conv, plus the last
        toRGB)."""
        return len(self.synthesis_layers) + 1

    def synthesis(self, w):
        """Image from `w` `[N, w_dim]` (every layer the same w) or per-layer `ws` `[N, num_ws,
        w_dim]`.

        With per-layer ws (StyleGAN2's indexing): conv layer i takes ws[:, i] and each block's toRGB
        takes the w of the next block's first conv (the last toRGB takes ws[:, num_ws - 1])."""
        per_layer = w.shape.rank == 3
        n = tf.shape(w)[0]
        x = tf.tile(self.const[tf.newaxis], tf.stack([n, 1, 1, 1]))
        img = None
        i = 0
        for layers, torgb in self._blocks():
            for layer in layers:
                x = layer([x, w[:, i] if per_layer else w])
                i += 1
            y = torgb([x, w[:, i] if per_layer else w])
            if img is None:
                img = y
            else:
                img = tf.image.resize(img, tf.shape(y)[1:3], method="bilinear") + y
        return img

    def call(self, z, training=None):
        return self.synthesis(self.mapping(z))

    def get_config(self):
        return {
            "name": self.name,
            "resolution": self.resolution,
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "out_channels": self.out_channels,
            "mapping_layers": self.mapping_layers,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "use_noise": self.use_noise,
            "mapping_lr_multiplier": self.mapping_lr_multiplier,
        }


@keras.saving.register_keras_serializable("indep_seg")
class LayeredGenerator(keras.Model):
    """ILSGAN layer synthesis (Zou et al. 2023, eq. 1): `f, m = G_f(z)`, `b = G_b(z)`.

    G_f outputs 4 channels: foreground RGB and the mask logit (mask = sigmoid); G_b outputs the
    background RGB. Each has its own mapping network; both take the same z. RGB outputs are linear,
    mapped to the [0, 1] convention as `0.5 + 0.5 * y` (not clipped, so gradients always flow).

    Call with z `[N, z_dim]` -> dict `foreground [N,R,R,3]`, `mask [N,R,R,1]`, `background
    [N,R,R,3]`.

    Args: as `StyleGAN2Generator` (shared by both generators), plus
        mask_bias: constant offset added to the mask logit.
        mask_center_prior: 0 (paper) or a, adding the fixed logit map `a (1 - (d / 0.62)^2)` (d:
        distance
            from the centre in half-widths; > 0 on a centred disc of 30 % of the image). Not in the
            paper:
            an option of the small preset (object-centred photos), which the networks can override.
    """

    def __init__(
        self,
        resolution=64,
        z_dim=512,
        w_dim=512,
        mapping_layers=8,
        channel_base=32768,
        channel_max=512,
        use_noise=True,
        mapping_lr_multiplier=0.01,
        mask_bias=0.0,
        mask_center_prior=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        common = dict(
            resolution=resolution,
            z_dim=z_dim,
            w_dim=w_dim,
            mapping_layers=mapping_layers,
            channel_base=channel_base,
            channel_max=channel_max,
            use_noise=use_noise,
            mapping_lr_multiplier=mapping_lr_multiplier,
        )
        self.config_ = dict(
            common, mask_bias=float(mask_bias), mask_center_prior=float(mask_center_prior)
        )
        self.mask_center_prior = float(mask_center_prior)
        c = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
        d2 = c[None, :] ** 2 + c[:, None] ** 2
        prior = self.mask_center_prior * (1.0 - d2 / 0.62**2)
        self.mask_prior = tf.constant(prior[None, :, :, None].astype(np.float32))
        self.resolution = resolution
        self.z_dim = z_dim
        self.mask_bias = float(mask_bias)
        self.G_f = StyleGAN2Generator(out_channels=4, name="G_f", **common)
        self.G_b = StyleGAN2Generator(out_channels=3, name="G_b", **common)
        self.built = True

    def call(self, z, training=None):
        return self._output_layers(self.G_f(z), self.G_b(z))

    def _output_layers(self, fm, b):
        return {
            "foreground": 0.5 + 0.5 * fm[..., :3],
            "mask": tf.sigmoid(fm[..., 3:4] + self.mask_bias + self.mask_prior),
            "background": 0.5 + 0.5 * b,
        }

    def mapping(self, z):
        """Per-layer latents of both generators: `{"fg": [N, num_ws_f, w_dim], "bg": [N, num_ws_b,
        w_dim]}`
        (every layer the same w; `synthesis(mapping(z))` equals `call(z)`)."""
        out = {}
        for key, g in (("fg", self.G_f), ("bg", self.G_b)):
            w = g.mapping(z)
            out[key] = tf.tile(w[:, tf.newaxis], [1, g.num_ws, 1])
        return out

    def synthesis(self, ws):
        """Layers from the per-layer latents of `mapping` (style mixing and path-length use
        them)."""
        return self._output_layers(self.G_f.synthesis(ws["fg"]), self.G_b.synthesis(ws["bg"]))

    def get_config(self):
        return {"name": self.name, **self.config_}


@keras.saving.register_keras_serializable("indep_seg")
class StyleGAN2Discriminator(keras.Model):
    """StyleGAN2 residual discriminator with minibatch standard deviation; returns logits `[N, 1]`.

    Input images in [0, 1] are mapped to [-1, 1]. Blocks: fromRGB (1x1) at the top resolution, then
    per
    resolution `conv3x3 -> conv3x3 + down` with a 1x1 down-sampling skip, summed and scaled by
    `sqrt(1/2)`; epilogue at 4x4: minibatch std, conv3x3, dense, dense -> 1.

    Args:
        resolution, channel_base, channel_max: as the generator.
        mbstd_group_size, mbstd_num_channels: minibatch-std settings (4, 1).
    """

    def __init__(
        self,
        resolution=64,
        channel_base=32768,
        channel_max=512,
        mbstd_group_size=4,
        mbstd_num_channels=1,
        in_channels=3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.resolution = check_int(resolution, "resolution", minimum=4)
        self.channel_base = channel_base
        self.channel_max = channel_max
        self.mbstd_group_size = mbstd_group_size
        self.mbstd_num_channels = mbstd_num_channels
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        ch = channels_per_resolution(self.resolution, channel_base, channel_max)
        self.channels = ch
        self.from_rgb = EqualizedConv2D(ch[self.resolution], 1, activation="lrelu", name="fromrgb")
        self.conv0_layers, self.conv1_layers, self.skip_layers = [], [], []
        res = self.resolution
        while res > 4:
            self.conv0_layers.append(
                EqualizedConv2D(ch[res], 3, activation="lrelu", name=f"b{res}_conv0")
            )
            self.conv1_layers.append(
                EqualizedConv2D(
                    ch[res // 2], 3, down=True, activation="lrelu", name=f"b{res}_conv1"
                )
            )
            self.skip_layers.append(
                EqualizedConv2D(ch[res // 2], 1, down=True, use_bias=False, name=f"b{res}_skip")
            )
            res //= 2
        track_for_checkpoint(self, "conv0_", self.conv0_layers)
        track_for_checkpoint(self, "conv1_", self.conv1_layers)
        track_for_checkpoint(self, "skip", self.skip_layers)
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_channels, name="mbstd")
        self.conv4 = EqualizedConv2D(ch[4], 3, activation="lrelu", name="b4_conv")
        self.fc = EqualizedDense(ch[4], activation="lrelu", name="b4_fc")
        self.out = EqualizedDense(1, name="b4_out")
        self.build((None, self.resolution, self.resolution, self.in_channels))

    def build(self, input_shape):
        r = self.resolution
        self.from_rgb.build((None, r, r, self.in_channels))
        c = self.channels[r]
        for conv0, conv1, skip in zip(self.conv0_layers, self.conv1_layers, self.skip_layers):
            conv0.build((None, r, r, c))
            conv1.build((None, r, r, conv0.filters))
            skip.build((None, r, r, c))
            c = conv1.filters
            r //= 2
        self.conv4.build((None, 4, 4, c + self.mbstd_num_channels))
        self.fc.build((None, 16 * self.conv4.filters))
        self.out.build((None, self.fc.units))
        self.built = True

    def call(self, images, training=None):
        x = self.from_rgb(images * 2.0 - 1.0)
        for conv0, conv1, skip in zip(self.conv0_layers, self.conv1_layers, self.skip_layers):
            y = skip(x)
            x = conv1(conv0(x))
            x = (x + y) * math.sqrt(0.5)
        x = self.mbstd(x)
        x = self.conv4(x)
        x = tf.reshape(x, [-1, 16 * self.conv4.filters])
        return self.out(self.fc(x))

    def get_config(self):
        return {
            "name": self.name,
            "resolution": self.resolution,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "mbstd_group_size": self.mbstd_group_size,
            "mbstd_num_channels": self.mbstd_num_channels,
            "in_channels": self.in_channels,
        }
