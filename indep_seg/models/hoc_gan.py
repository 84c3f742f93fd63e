"""HocGAN: instances and masks from one image of a dense homogeneous object cluster.

Dai et al. 2019, application 2 ("Learning Instance Appearances and Masks From One Image of HOC"):
N foreground providers share ONE RGBA generator (Table 2) fed with independent z; each layer is
laid out by padding and random cropping (`layout.pad_and_random_crop`), the layers are composited
over a background by eq. (5) (`composition.composite_layers`), and an SN discriminator (Table 2)
judges the composite against real patches of the image. Losses:

- D: eq. (6), ``-E log D(x) - E log(1 - D(x_g))`` (`losses.discriminator_loss`);
- G: eq. (7), non-saturating ``-E log D(x_g) + lambda L_area`` with
  ``L_area = E[1/N sum_i (||m_i||_1 / A - a)^2]`` (`losses.area_penalty`, lambda = 1000), plus the
  InfoGAN information term ``beta E||z - Q(G(z))||^2`` (appendix, beta = 50; Q is trained with G),
  plus an optional mask binarisation term (ILSGAN's L_b, weight 0 in the paper presets) that rules
  out the uniform translucent mask, which satisfies the area penalty exactly (DESIGN.md section 7).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from indep_seg import _random, checks, losses
from indep_seg.composition import composite_layers
from indep_seg.distribute import global_batch_draw, scale_loss, step_outputs
from indep_seg.gallery import tile_rows
from indep_seg.layout import integer_translate
from indep_seg.networks.hoc_discriminator import HocDiscriminator
from indep_seg.networks.rgba_generator import InfoGANQHead, RGBAGenerator
from indep_seg.optimizers import FusedAdam
from indep_seg.presets import PresetMixin, hoc_model_options
from indep_seg.providers import GeneratorProvider

__all__ = ["HocGAN"]


class HocGAN(PresetMixin, keras.Model):
    """N-layer composition GAN of Dai et al. 2019 (application 2) with a custom `train_step`.

    Presets: `HocGAN.presets`, `HocGAN.from_preset("hoc" | "hoc_tiny" | "hoc_paper")`
    (`indep_seg.presets.HOC_PRESETS`), compiled with the preset's optimizers. The options the
    trainer estimates from the image (`indep_seg.presets.HOC_ESTIMATED`) come from the Table-4
    `setting` or a fallback; `hoc` needs `num_layers`, `padding` and `a` given.

    Args:
        generator: the shared RGBA generator (`networks.RGBAGenerator`), z -> ``[n, R, R, 4]``.
        discriminator: image ``[B, R, R, 3]`` -> logit (`networks.HocDiscriminator`).
        q_head: InfoGAN Q, RGBA -> z estimate (`networks.InfoGANQHead`), or None when beta = 0.
        latent_dim: dim(z) (Table 4: 6, 5, 2).
        num_layers: N composition layers (Table 4: 8, 10, 12; estimated from the image otherwise).
        padding: layout padding in pixels (paper: 30, 32, 26 at 64x64).
        a: area target of eq. (7) (Table 4: 0.1, 0.25, 0.25).
        area_weight: lambda (1000).
        info_weight: beta (50).
        binarization_weight: weight of ``mean(min(m, 1 - m))`` on the layer masks (0 = paper).
        grayscale: the image is gray: each layer's RGB is replaced by its channel mean, so the
            generator spends nothing on colours the image does not have (not in the paper, whose
            images are colour).
        seed: int seed of the model's `keras.random.SeedGenerator`s.

    `train_step(batch)` takes ``{"real": [B, R, R, 3], "background": [B, R, R, 3]}``.
    """

    def __init__(
        self,
        generator,
        discriminator,
        q_head=None,
        latent_dim=6,
        num_layers=8,
        padding=30,
        a=0.1,
        area_weight=1000.0,
        info_weight=50.0,
        binarization_weight=0.0,
        grayscale=False,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.grayscale = bool(grayscale)
        self.generator = generator
        self.discriminator = discriminator
        self.q_head = q_head
        self.latent_dim = checks.check_int(latent_dim, "latent_dim", minimum=1)
        self.num_layers = checks.check_int(num_layers, "num_layers", minimum=1)
        self.padding = checks.check_int(padding, "padding", minimum=0)
        checks.check_fraction(a, "a")
        self.a = float(a)
        self.area_weight = float(
            checks.check_positive_number(area_weight, "area_weight", allow_zero=True)
        )
        self.info_weight = float(
            checks.check_positive_number(info_weight, "info_weight", allow_zero=True)
        )
        if self.info_weight > 0 and q_head is None:
            raise ValueError("q_head: required when info_weight (beta) > 0")
        self.binarization_weight = float(
            checks.check_positive_number(
                binarization_weight, "binarization_weight", allow_zero=True
            )
        )
        self.provider = GeneratorProvider(
            generator, latent_dim=self.latent_dim, num_layers=self.num_layers, seed=seed
        )
        self.layout_seed = keras.random.SeedGenerator(seed + 1)
        self.trackers = {
            k: keras.metrics.Mean(name=k)
            for k in (
                "d_loss",
                "g_loss",
                "g_adv",
                "area",
                "info",
                "binarization",
                "mask_mean",
                "d_real",
                "d_fake",
            )
        }
        self.built = True  # no call(): DESIGN.md section 4 (MirroredStrategy)

    @classmethod
    def from_options(cls, options, seed=0, **kwargs):
        """The model of resolved HoC options (no `None`: a preset's after
        `indep_seg.presets.hoc_model_options`, or the training layer's resolved `HocConfig`),
        with every weight created, compiled: the builder of `from_preset` and of
        `indep-seg train --experiment hoc*`."""
        o = options
        a = float(o["a"])
        generator = RGBAGenerator(
            latent_dim=o["latent_dim"],
            resolution=o["resolution"],
            initial_size=o["g_initial_size"],
            widths=tuple(o["g_widths"]),
            upsample=o["g_upsample"],
            bn_momentum=o["g_bn_momentum"],
            bn_synchronized=bool(o["g_bn_synchronized"]),
            bias_before_bn=bool(o["g_bias_before_bn"]),
            alpha_bias=float(math.log(a / (1 - a))),  # layer masks start at area a
            border_taper=o["g_border_taper"],
            name="generator",
        )
        discriminator = HocDiscriminator(
            widths=tuple(o["d_widths"]),
            final_width=o["d_final_width"],
            head=o["d_head"],
            name="discriminator",
        )
        q_head = (
            InfoGANQHead(o["latent_dim"], widths=tuple(o["q_widths"]), name="q_head")
            if o["info_weight"] > 0
            else None
        )
        model = cls(
            generator,
            discriminator,
            q_head,
            latent_dim=o["latent_dim"],
            num_layers=o["num_layers"],
            padding=o["padding"],
            a=a,
            area_weight=o["area_weight"],
            info_weight=o["info_weight"],
            binarization_weight=o["binarization_weight"],
            grayscale=bool(o["grayscale"]),
            seed=seed,
            **kwargs,
        )
        model.build_networks(o["resolution"])
        model.compile(
            d_optimizer=FusedAdam(o["d_lr"], beta_1=0.5, beta_2=0.999),
            g_optimizer=FusedAdam(o["g_lr"], beta_1=0.5, beta_2=0.999),
            jit_compile=bool(o["jit_compile"]),
        )
        return model

    @classmethod
    def _from_preset_options(cls, options, seed=0, **kwargs):
        """`from_options` of a preset's options, its `None`s filled (`hoc_model_options`); the
        filled values are written back into `options` (the model's `preset_options`)."""
        options.update(hoc_model_options(options))
        return cls.from_options(options, seed=seed, **kwargs)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, d_optimizer=None, g_optimizer=None, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer or FusedAdam(2e-4, beta_1=0.5, beta_2=0.999)
        self.g_optimizer = g_optimizer or FusedAdam(4e-4, beta_1=0.5, beta_2=0.999)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self._g_variables())

    def _g_variables(self):
        v = list(self.generator.trainable_variables)
        if self.q_head is not None:
            v += list(self.q_head.trainable_variables)
        return v

    def build_networks(self, resolution):
        """Create every weight (generator, D, Q) so checkpoints and optimizers can see them."""
        z = tf.zeros((1, self.latent_dim))
        rgba = self.generator(z)
        self.discriminator(tf.zeros((1, resolution, resolution, 3)), training=True)
        if self.q_head is not None:
            self.q_head(rgba)

    def generate(self, batch_size, background=None, training=False, return_all=False):
        """Sample composites: N independent layers -> layout -> eq. (5).

        Returns the composite ``[B, R, R, 3]``, or with `return_all` a dict with ``z [B, N, d]``,
        ``layers [B, N, R, R, 4]`` (before layout), ``warped`` (after layout), ``shifts [B, N, 2]``
        (dx, dy), ``composite`` and eq. (5)'s ``partial`` / ``carved`` / ``visibility``.
        """
        # = provider.generate + layout.pad_and_random_crop, with the draws made for the global batch
        z = global_batch_draw(lambda n: self.provider.sample_latents(n), batch_size)
        layers = self.provider(z, training=training)
        if self.grayscale:  # a gray image: the layers' appearance is luminance only
            gray = tf.reduce_mean(layers[..., :3], axis=-1, keepdims=True)
            layers = tf.concat([tf.repeat(gray, 3, axis=-1), layers[..., 3:]], axis=-1)
        r = self.generator.resolution
        layers = tf.reshape(layers, [-1, self.num_layers, r, r, 4])
        z = tf.reshape(z, [-1, self.num_layers, self.latent_dim])
        shifts = global_batch_draw(
            lambda n: _random.randint(
                tf.stack([tf.cast(n, tf.int32), self.num_layers, 2]),
                -self.padding,
                self.padding,
                seed=self.layout_seed,
            ),
            batch_size,
        )
        warped = integer_translate(layers, shifts)
        composite, extras = composite_layers(warped, background=background, return_layers=True)
        if not return_all:
            return composite
        return dict(z=z, layers=layers, warped=warped, shifts=shifts, composite=composite, **extras)

    def train_step(self, batch):
        real = batch["real"]
        background = batch["background"]
        b = tf.shape(real)[0]

        # Discriminator step, eq. (6).
        fake = self.generate(b, background=background, training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(tf.stop_gradient(fake), training=True)
            d_loss = losses.discriminator_loss(real_logits, fake_logits)
            d_scaled = scale_loss(d_loss)
        grads = tape.gradient(d_scaled, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))

        # Generator (+ Q) step, eq. (7) + beta * information term.
        g_vars = self._g_variables()
        with tf.GradientTape() as tape:
            out = self.generate(b, background=background, training=True, return_all=True)
            fake_logits = self.discriminator(out["composite"], training=True)
            g_adv = losses.generator_loss_ns(fake_logits)
            masks = out["layers"][..., 3:]
            area = losses.area_penalty(masks, self.a)
            g_loss = g_adv + self.area_weight * area
            info = tf.constant(0.0)
            if self.q_head is not None and self.info_weight > 0:
                r = self.generator.resolution
                flat = tf.reshape(out["layers"], [-1, r, r, 4])
                z_pred = self.q_head(flat, training=True)
                info = losses.infogan_information_loss(
                    tf.reshape(out["z"], [-1, self.latent_dim]), z_pred
                )
                g_loss += self.info_weight * info
            binar = losses.binarization_loss(masks)
            if self.binarization_weight > 0:
                g_loss += self.binarization_weight * binar
            g_scaled = scale_loss(g_loss)
        grads = tape.gradient(g_scaled, g_vars)
        self.g_optimizer.apply_gradients(zip(grads, g_vars))

        values = dict(
            d_loss=d_loss,
            g_loss=g_loss,
            g_adv=g_adv,
            area=area,
            info=info,
            binarization=binar,
            mask_mean=tf.reduce_mean(masks),
            d_real=tf.reduce_mean(tf.sigmoid(real_logits)),
            d_fake=tf.reduce_mean(tf.sigmoid(fake_logits)),
        )
        for k, v in values.items():
            self.trackers[k].update_state(v)
        return step_outputs({k: t.result() for k, t in self.trackers.items()})

    def checkpoint_items(self):
        items = dict(
            generator=self.generator,
            discriminator=self.discriminator,
            d_optimizer=self.d_optimizer,
            g_optimizer=self.g_optimizer,
            provider_seed=self.provider.seed_generator.state,
            layout_seed=self.layout_seed.state,
        )
        if self.q_head is not None:
            items["q_head"] = self.q_head
        return items

    def image_grid(self, batch, num=8):
        """uint8 ``[H, W, 3]``: rows = real patches, composites, learned instances (RGB), soft
        masks,
        carved instances ``I m`` (Dai Figs. 8-11), then the carved (laid-out) top layers."""
        real = batch["real"][:num]
        background = batch["background"][:num]
        n = int(real.shape[0])
        out = self.generate(n, background=background, training=False, return_all=True)
        layers = out["layers"][:, 0]  # one instance per example
        rows = [
            real,
            out["composite"],
            layers[..., :3],
            tf.tile(layers[..., 3:], [1, 1, 1, 3]),
            layers[..., :3] * layers[..., 3:],
        ]
        titles = ["real patch", "composite", "instance", "its mask", "carved"]
        for i in range(min(self.num_layers, 4)):
            rows.append(out["carved"][:, self.num_layers - 1 - i])
            titles.append(f"layer {self.num_layers - i}")
        return tile_rows(rows, min_cell=64, titles=titles)
