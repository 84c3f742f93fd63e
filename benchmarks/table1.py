"""A stand-alone box-level training step built from Table 1 of Dai et al. 2019.

Used by `bench_train_step.py` as the reference step (and as the fallback while the
application's own networks are not importable). It is the "straightforward" Keras 3
implementation: UNet generator of masks (Table 1 right: 4x4 stride-2 convs 64-128-256-512-
512, 2x2 conv 512, BN + leaky ReLU; 2x2 deconv 512 then 4x4 deconvs 512-256-128-64 with
skip concatenations, 4x4 deconv 1 + sigmoid) and spectrally normalised discriminator
(Table 1 left: 3x3 stride-2 convs 64-128-256-512, 3x3 conv 256, 1x1 conv 1).

The step (Dai eq. (1)-(3)): masks m = U(x) of the box crops x, composites
x' = m x + (1 - m) b on background patches b, non-saturating GAN loss for U and D,
area penalty lambda * max(0, a - mean(m)) with lambda = 1000, a = 0.25 (Table 3).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def _width(c, width_mult):
    return max(1, int(round(c * width_mult)))


def table1_unet(
    resolution=128,
    width_mult=1.0,
    data_format="channels_last",
    name="unet",
    bn="keras",
    deconv="keras",
):
    """Dai et al. 2019, Table 1 (right): the UNet mask generator.

    `bn="fused"` builds the BatchNorms as
    `indep_seg.networks.fused_batch_norm.FusedBatchNormalization`,
    `deconv="gemm"` the transposed convolutions as `indep_seg.networks.gemm_conv_transpose.
    GemmConv2DTranspose` (same weights and results; "keras" is plain Keras).
    """
    if bn not in ("keras", "fused") or deconv not in ("keras", "gemm"):
        raise ValueError(
            f"bn / deconv: expected 'keras'/'fused' and 'keras'/'gemm', got {bn!r}, {deconv!r}"
        )
    if bn == "fused":
        from indep_seg.networks.fused_batch_norm import FusedBatchNormalization as BatchNorm
    else:
        BatchNorm = keras.layers.BatchNormalization  # noqa: N806
    if deconv == "gemm":
        from indep_seg.networks.gemm_conv_transpose import GemmConv2DTranspose as Deconv
    else:
        Deconv = keras.layers.Conv2DTranspose  # noqa: N806
    if resolution % 64:
        raise ValueError(f"resolution: expected a multiple of 64, got {resolution}")
    cf = data_format == "channels_first"
    axis = 1 if cf else -1
    shape = (3, resolution, resolution) if cf else (resolution, resolution, 3)
    inp = keras.Input(shape, name="image")
    x = inp
    skips = []
    enc = [(64, 4), (128, 4), (256, 4), (512, 4), (512, 4), (512, 2)]
    for i, (c, k) in enumerate(enc):
        x = keras.layers.Conv2D(
            _width(c, width_mult),
            k,
            strides=2,
            padding="same",
            use_bias=False,
            data_format=data_format,
            name=f"enc{i}",
        )(x)
        x = BatchNorm(axis=axis, name=f"enc{i}_bn")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
        skips.append(x)
    dec = [(512, 2), (512, 4), (256, 4), (128, 4), (64, 4)]
    for i, (c, k) in enumerate(dec):
        if i > 0:
            x = keras.layers.Concatenate(axis=axis)([x, skips[-1 - i]])
        x = Deconv(
            _width(c, width_mult),
            k,
            strides=2,
            padding="same",
            use_bias=False,
            data_format=data_format,
            name=f"dec{i}",
        )(x)
        x = BatchNorm(axis=axis, name=f"dec{i}_bn")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Concatenate(axis=axis)([x, skips[0]])
    x = Deconv(1, 4, strides=2, padding="same", data_format=data_format, name="mask")(x)
    out = keras.layers.Activation("sigmoid", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


def table1_discriminator(
    resolution=128, width_mult=1.0, data_format="channels_last", name="discriminator", conv="keras"
):
    """Dai et al. 2019, Table 1 (left): the spectrally normalised discriminator (logits out).

    `conv="unfused_bias"` builds the convolutions as `indep_seg.networks.unfused_bias_conv.
    UnfusedBiasConv2D` (same weights and results; "keras" is plain Keras).
    """
    if conv not in ("keras", "unfused_bias"):
        raise ValueError(f"conv: expected 'keras' or 'unfused_bias', got {conv!r}")
    if conv == "unfused_bias":
        from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D as Conv
    else:
        Conv = keras.layers.Conv2D  # noqa: N806
    cf = data_format == "channels_first"
    shape = (3, resolution, resolution) if cf else (resolution, resolution, 3)
    inp = keras.Input(shape, name="image")
    x = inp
    for i, (c, s) in enumerate([(64, 2), (128, 2), (256, 2), (512, 2), (256, 1)]):
        x = keras.layers.SpectralNormalization(
            Conv(_width(c, width_mult), 3, strides=s, padding="same", data_format=data_format),
            name=f"sn_conv{i}",
        )(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.SpectralNormalization(Conv(1, 1, data_format=data_format), name="sn_out")(x)
    out = keras.layers.Activation("linear", dtype="float32")(x)
    return keras.Model(inp, out, name=name)


class Table1Step:
    """Builds the networks, both Adam optimizers and the compiled step for one preset.

    Args:
        resolution, width_mult, batch_size: the preset.
        fused: compute the composites once per step and take both gradients from one
            forward (3U + 9D model FLOP per image) instead of the textbook D step then G step
            (4U + 9D: the D step runs U forward again).
        jit_compile: XLA-compile the step.
        data_format: "channels_last" (NHWC) or "channels_first" (NCHW).
        split: with `fused`, run the step as this many independent sub-batches in one graph
            (each its own forward and backward, the gradients averaged before one update), so
            that TensorFlow's inter-op pool can run them side by side: with one intra-op thread
            and `split` inter-op threads each core works on its own sub-batch, like replicas of
            a data-parallel strategy (BatchNorm statistics per sub-batch, as unsynchronised
            replicas have them).
        adam: "keras" (`keras.optimizers.Adam`, the straightforward step) or "fused"
            (`indep_seg.optimizers.FusedAdam`: the same update as one fused kernel per variable).
        bn, deconv: the UNet's BatchNorm ("keras" / "fused") and transposed convolutions
            ("keras" / "gemm"), see `table1_unet`.
        conv: the discriminator's convolutions ("keras" / "unfused_bias"), see
            `table1_discriminator`.
    """

    def __init__(
        self,
        resolution=128,
        width_mult=1.0,
        batch_size=16,
        fused=False,
        jit_compile=False,
        data_format="channels_last",
        lam=1000.0,
        area=0.25,
        split=1,
        adam="keras",
        bn="keras",
        deconv="keras",
        conv="keras",
    ):
        self.resolution = resolution
        self.batch_size = batch_size
        self.fused = fused
        self.data_format = data_format
        self.lam = lam
        self.area = area
        self.unet = table1_unet(resolution, width_mult, data_format, bn=bn, deconv=deconv)
        self.disc = table1_discriminator(resolution, width_mult, data_format, conv=conv)
        if adam not in ("keras", "fused"):
            raise ValueError(f"adam: expected 'keras' or 'fused', got {adam!r}")
        if adam == "fused":
            from indep_seg.optimizers import FusedAdam as Adam
        else:
            Adam = keras.optimizers.Adam  # noqa: N806
        self.g_opt = Adam(2e-4, beta_1=0.5)
        self.d_opt = Adam(2e-4, beta_1=0.5)
        self.g_opt.build(self.unet.trainable_variables)
        self.d_opt.build(self.disc.trainable_variables)
        if split > 1 and (not fused or batch_size % split):
            raise ValueError(
                f"split: {split} needs fused=True and a batch size divisible by it "
                f"(batch_size {batch_size})"
            )
        self.split = split
        step = (
            self._split_fused_step if split > 1 else self._fused_step if fused else self._two_step
        )
        self.step = tf.function(step, jit_compile=jit_compile)

    def batch(self, seed=0):
        r = self.resolution
        shape = (
            (self.batch_size, 3, r, r)
            if self.data_format == "channels_first"
            else (self.batch_size, r, r, 3)
        )
        g = tf.random.Generator.from_seed(seed)
        return g.uniform(shape), g.uniform(shape), g.uniform(shape)

    def _losses_d(self, d_real, d_fake):
        return tf.reduce_mean(tf.nn.softplus(-d_real)) + tf.reduce_mean(tf.nn.softplus(d_fake))

    def _loss_g(self, d_fake, m):
        area_pen = tf.nn.relu(self.area - tf.reduce_mean(m))
        return tf.reduce_mean(tf.nn.softplus(-d_fake)) + self.lam * area_pen

    def _two_step(self, crops, backgrounds, reals):
        m = self.unet(crops, training=True)
        fake = tf.stop_gradient(m * crops + (1.0 - m) * backgrounds)
        with tf.GradientTape() as tape:
            d_loss = self._losses_d(self.disc(reals, training=True), self.disc(fake, training=True))
        self.d_opt.apply_gradients(
            zip(tape.gradient(d_loss, self.disc.trainable_variables), self.disc.trainable_variables)
        )
        with tf.GradientTape() as tape:
            m = self.unet(crops, training=True)
            fake = m * crops + (1.0 - m) * backgrounds
            g_loss = self._loss_g(self.disc(fake, training=True), m)
        self.g_opt.apply_gradients(
            zip(tape.gradient(g_loss, self.unet.trainable_variables), self.unet.trainable_variables)
        )
        return d_loss, g_loss

    def _fused_step(self, crops, backgrounds, reals):
        with tf.GradientTape(persistent=True) as tape:
            m = self.unet(crops, training=True)
            fake = m * crops + (1.0 - m) * backgrounds
            d_fake = self.disc(fake, training=True)
            d_real = self.disc(reals, training=True)
            d_loss = self._losses_d(d_real, d_fake)
            g_loss = self._loss_g(d_fake, m)
        d_grads = tape.gradient(d_loss, self.disc.trainable_variables)
        g_grads = tape.gradient(g_loss, self.unet.trainable_variables)
        del tape
        self.d_opt.apply_gradients(zip(d_grads, self.disc.trainable_variables))
        self.g_opt.apply_gradients(zip(g_grads, self.unet.trainable_variables))
        return d_loss, g_loss

    def _split_fused_step(self, crops, backgrounds, reals):
        parts = [tf.split(t, self.split) for t in (crops, backgrounds, reals)]
        d_grads, g_grads, d_losses, g_losses = [], [], [], []
        for c, b, r in zip(*parts):
            with tf.GradientTape(persistent=True) as tape:
                m = self.unet(c, training=True)
                fake = m * c + (1.0 - m) * b
                d_out = self.disc(tf.concat([fake, r], 0), training=True)
                d_fake, d_real = tf.split(d_out, 2)
                d_loss = self._losses_d(d_real, d_fake)
                g_loss = self._loss_g(d_fake, m)
            d_grads.append(tape.gradient(d_loss, self.disc.trainable_variables))
            g_grads.append(tape.gradient(g_loss, self.unet.trainable_variables))
            d_losses.append(d_loss)
            g_losses.append(g_loss)
            del tape
        mean = lambda gs: [tf.add_n(list(g)) / float(self.split) for g in zip(*gs)]  # noqa: E731
        self.d_opt.apply_gradients(zip(mean(d_grads), self.disc.trainable_variables))
        self.g_opt.apply_gradients(zip(mean(g_grads), self.unet.trainable_variables))
        return tf.add_n(d_losses) / float(self.split), tf.add_n(g_losses) / float(self.split)

    def model_flops(self):
        """Model FLOP of one step by the 3x rule (see benchmarks/flops.py)."""
        from benchmarks.flops import analytic_forward_flops

        r = self.resolution
        shape = (1, 3, r, r) if self.data_format == "channels_first" else (1, r, r, 3)
        x = tf.zeros(shape)
        u = analytic_forward_flops(self.unet, x)
        d = analytic_forward_flops(self.disc, x)
        per_image = (3 * u + 9 * d) if self.fused else (4 * u + 9 * d)
        return {
            "unet_forward_per_image": u,
            "disc_forward_per_image": d,
            "rule": "3U+9D" if self.fused else "4U+9D",
            "per_step": int(per_image * self.batch_size),
        }
