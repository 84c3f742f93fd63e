"""Box-level foreground segmentation with the independence prior (Dai et al. 2019, application 1).

Two instance providers: the foreground provider is a segmentation network whose soft mask carves
the input crop (Fig. 4, first case); the background provider gives natural patches with no
foreground (Fig. 4, third case). Their composite (eq. 5 with two layers, ``m x + (1 - m) bg``) is
judged by a discriminator. Losses: eq. (6) for D and eq. (7) for the segmentation network,
adversarial + lambda * area penalty.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from indep_seg import checks
from indep_seg.box_batches import prepare_box_seg_batch
from indep_seg.distribute import scale_loss, step_outputs
from indep_seg.gallery import tile_rows
from indep_seg.losses import area_penalty, discriminator_loss, generator_loss_ns
from indep_seg.optimizers import FusedAdam
from indep_seg.presets import (
    PresetMixin,
    build_box_seg_discriminator,
    build_box_seg_unet,
    effective_area_a,
)

__all__ = [
    "ForegroundSegGAN",
    "box_projection_loss",
    "pairwise_colour_loss",
    "prior_consistency_loss",
]

to_grid = tile_rows  # the former name (benchmarks); the tiler's home is indep_seg.gallery


# --- the box-level priors this trainer adds (not in Dai et al.; eqs. 6-7 are indep_seg.losses') ---
def box_projection_loss(mask, margin=0.0):
    """Box tightness prior (NOT in Dai et al.; BoxInst, Tian et al. 2021, eq. 3 in squared form).

    A tight box touches the object on every row and column it spans, so the mask's maximum over
    each row (and column) of the box should be 1, and 0 outside the box (crops with a margin).
    Only the box is used, no pixel label: mean squared error of both max-projections.
    """
    r = tf.shape(mask)[1]
    pos = (tf.cast(tf.range(r), tf.float32) + 0.5) / tf.cast(r, tf.float32)
    lo = margin / (1.0 + 2.0 * margin)
    target = tf.cast((pos >= lo) & (pos <= 1.0 - lo), mask.dtype)[None, :]
    px = tf.reduce_max(mask[..., 0], axis=1)  # [B, W]: max over rows, per column
    py = tf.reduce_max(mask[..., 0], axis=2)  # [B, H]: max over columns, per row
    return tf.reduce_mean(tf.square(px - target)) + tf.reduce_mean(tf.square(py - target))


def pairwise_colour_loss(mask, image, threshold=0.1, dilation=2):
    """Colour-affinity smoothness prior (NOT in Dai et al.; BoxInst's pairwise term, simplified).

    Neighbouring pixels (right and down, at distances 1 and `dilation`) whose RGB colours differ
    by less than `threshold` (Euclidean, [0, 1] units) should get the same label:
    -log(m_i m_j + (1 - m_i)(1 - m_j)), averaged over those pairs.
    """
    terms, counts = [], []
    for d in sorted({1, int(dilation)}):
        for axis in (1, 2):
            n = tf.shape(mask)[axis]
            a_m, b_m = _shifted(mask, axis, d, n)
            a_x, b_x = _shifted(image, axis, d, n)
            similar = tf.cast(tf.norm(a_x - b_x, axis=-1, keepdims=True) < threshold, mask.dtype)
            same = a_m * b_m + (1.0 - a_m) * (1.0 - b_m)
            terms.append(tf.reduce_sum(-tf.math.log(same + 1e-5) * similar))
            counts.append(tf.reduce_sum(similar))
    return tf.add_n(terms) / tf.maximum(tf.add_n(counts), 1.0)


def _shifted(x, axis, d, n):
    if axis == 1:
        return x[:, d:], x[:, : n - d]
    return x[:, :, d:], x[:, :, : n - d]


def prior_consistency_loss(mask, prior, weight=None):
    """Per-image box prior term (NOT in Dai et al.): binary cross-entropy between the mask and
    a per-image prior mask from the box alone (`indep_seg.box_prior.box_prior`: GrabCut from the
    box, the ellipse where it degenerates). It anchors which side of the carving is the object,
    which the adversarial term cannot tell from a crop equal to the box (a frame of background
    composites as well as the object does).

    With `weight` `[B]`, the images' mean cross-entropies are averaged with these weights
    (`sum(w_i l_i) / sum(w_i)`; 0 when every weight is 0): a prior of weight 0 does not anchor
    its image, as ILSGAN's top-k filtering (Zou et al. 2023) and "Simple Does It" (Khoreva et
    al. 2017) leave out the labels they trust least."""
    m = tf.clip_by_value(mask, 1e-4, 1.0 - 1e-4)
    bce = -(prior * tf.math.log(m) + (1.0 - prior) * tf.math.log(1.0 - m))
    if weight is None:
        return tf.reduce_mean(bce)
    per_image = tf.reduce_mean(bce, axis=[1, 2, 3])
    w = tf.cast(weight, per_image.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(w * per_image), tf.reduce_sum(w))


class ForegroundSegGAN(PresetMixin, keras.Model):
    """Adversarial training of a segmentation network with the independence prior.

    Dai et al. 2019, "Foreground Segmentation on Category-specific Images": crops x (the box)
    are carved by the UNet's mask m and pasted on a background patch bg,
    ``x_g = m x + (1 - m) bg`` (eq. 5, two layers), and
        L_D = -E[log D(x)] - E[log(1 - D(x_g))]                 (eq. 6)
        L_G = -E[log D(x_g)] + lambda * L_area,  L_area = E[(||m||_1/A - a)^2]   (eq. 7).

    Batches are dicts ``{"image": [B, R, R, 3], "background": [B, R, R, 3]}`` in [0, 1] (the
    background provider runs in the input pipeline, see `indep_seg.data.backgrounds`), or photos
    with boxes ``{"image": [B, H, W, 3], "box": [B, 4]}`` cropped in the step; optional
    ``"prior"``, ``"area"``: `indep_seg.box_batches`. Presets: `ForegroundSegGAN.presets`,
    `ForegroundSegGAN.from_preset("box_seg")` (`indep_seg.presets`).

    Args:
        segmenter: the foreground provider, image -> mask `[B, R, R, 1]` (a `UNet`).
        discriminator: image -> logit `[B, 1]` (an `SNDiscriminator`), at R / d_downsample.
        area_lambda: lambda of eq. (7) (1000 in Table 3).
        area_a: a of eq. (7) (0.25 in Table 3, for crops equal to the box).
        area_mode: "two_sided" (eq. 7) or "above" (only masks larger than a are penalised).
        d_downsample: average-pool factor applied to real and fake before D (1 = none).
        box_prior_weight: weight of `box_projection_loss` added to eq. (7) (0 = the paper).
        box_margin: the crop margin (where the box lies in the crop) for that prior.
        pairwise_weight: weight of `pairwise_colour_loss` added to eq. (7) (0 = the paper).
        adversarial_weight: weight of the adversarial term of eq. (7) (1 = the paper; 0 is an
            ablation: the priors alone).
        prior_weight: weight of `prior_consistency_loss` (0 = the paper). Batches then carry
            `"prior"` `[B, R, R, 1]`; a batch's `"area"` `[B]`, when present, replaces `area_a`
            with a per-image target, and its `"prior_weight"` `[B]` weighs each image's prior.
        seed: seed of the model's `SeedGenerator`.

    Example:
        >>> gan = ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"))
        >>> gan.compile(d_optimizer=keras.optimizers.Adam(2e-4, 0.5, 0.999),
        ...             g_optimizer=keras.optimizers.Adam(4e-4, 0.5, 0.999))
        >>> gan.fit(dataset, steps_per_epoch=10)   # doctest: +SKIP
    """

    def __init__(
        self,
        segmenter,
        discriminator,
        area_lambda=1000.0,
        area_a=0.25,
        area_mode="two_sided",
        d_downsample=1,
        box_prior_weight=0.0,
        box_margin=0.0,
        pairwise_weight=0.0,
        adversarial_weight=1.0,
        prior_weight=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_positive_number(area_lambda, "area_lambda", allow_zero=True)
        checks.check_fraction(area_a, "area_a")
        checks.check_choice(area_mode, "area_mode", ("two_sided", "above"))
        self.d_downsample = checks.check_int(d_downsample, "d_downsample", minimum=1)
        self.segmenter = segmenter
        self.discriminator = discriminator
        self.area_lambda = float(area_lambda)
        self.area_a = float(area_a)
        self.area_mode = area_mode
        checks.check_positive_number(box_prior_weight, "box_prior_weight", allow_zero=True)
        checks.check_positive_number(box_margin, "box_margin", allow_zero=True)
        self.box_prior_weight = float(box_prior_weight)
        self.box_margin = float(box_margin)
        checks.check_positive_number(pairwise_weight, "pairwise_weight", allow_zero=True)
        self.pairwise_weight = float(pairwise_weight)
        checks.check_positive_number(adversarial_weight, "adversarial_weight", allow_zero=True)
        self.adversarial_weight = float(adversarial_weight)
        checks.check_positive_number(prior_weight, "prior_weight", allow_zero=True)
        self.prior_weight = float(prior_weight)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_adv_tracker = keras.metrics.Mean(name="g_adv")
        self.area_tracker = keras.metrics.Mean(name="area_loss")
        self.mask_mean_tracker = keras.metrics.Mean(name="mask_mean")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.built = True  # DESIGN.md section 4: no call(); needed under tf.distribute

    @property
    def metrics(self):
        return [
            self.d_loss_tracker,
            self.g_adv_tracker,
            self.area_tracker,
            self.mask_mean_tracker,
            self.d_real_tracker,
            self.d_fake_tracker,
        ]

    def compile(self, d_optimizer=None, g_optimizer=None, **kwargs):
        """Adam(beta1 0.5, beta2 0.999), lr 2e-4 for D and 4e-4 for G (Dai et al.) by default."""
        # no `model.optimizer`: Keras' default would be a stray RMSprop that fit builds (slots for
        # every
        # variable) and save_weights / BackupAndRestore store; the two optimizers below do the
        # training
        kwargs.setdefault("optimizer", None)
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer or FusedAdam(2e-4, beta_1=0.5, beta_2=0.999)
        self.g_optimizer = g_optimizer or FusedAdam(4e-4, beta_1=0.5, beta_2=0.999)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.segmenter.trainable_variables)

    def checkpoint_items(self):
        return {
            "segmenter": self.segmenter,
            "discriminator": self.discriminator,
            "d_optimizer": self.d_optimizer,
            "g_optimizer": self.g_optimizer,
            "seed_generator": self.seed_generator,
        }

    # ------------------------------------------------------------------ pieces
    def _d_input(self, x):
        if self.d_downsample > 1:
            x = tf.nn.avg_pool2d(x, self.d_downsample, self.d_downsample, "VALID")
        return x

    def compose(self, image, background, training=False):
        """(mask, composite x_g = m x + (1 - m) bg) for a batch."""
        mask = self.segmenter(image, training=training)
        return mask, mask * image + (1.0 - mask) * background

    @classmethod
    def _from_preset_options(cls, options, seed=0, **kwargs):
        """The model of one preset's options (`indep_seg.presets.BOX_SEG_PRESETS`), compiled."""
        prior_on = options["prior"] != "none"
        model = cls(
            build_box_seg_unet(options),
            build_box_seg_discriminator(options),
            area_lambda=options["area_lambda"],
            area_a=effective_area_a(options),
            area_mode=options["area_mode"],
            d_downsample=options["d_downsample"],
            box_prior_weight=options["box_prior_weight"],
            box_margin=options["margin"],
            pairwise_weight=options["pairwise_weight"],
            adversarial_weight=options["adversarial_weight"],
            prior_weight=options["prior_weight"] if prior_on else 0.0,
            seed=seed,
            **kwargs,
        )
        model.compile(
            d_optimizer=FusedAdam(options["d_learning_rate"], beta_1=0.5, beta_2=0.999),
            g_optimizer=FusedAdam(options["g_learning_rate"], beta_1=0.5, beta_2=0.999),
        )
        return model

    def train_step(self, data):
        data = prepare_box_seg_batch(
            data,
            getattr(self.segmenter, "resolution", None),
            self.box_margin,
            self.seed_generator,
            needs_prior=self.prior_weight > 0,
        )
        image, background = data["image"], data["background"]

        # One forward pass of the segmentation network serves both updates.
        with tf.GradientTape() as g_tape:
            mask, fake = self.compose(image, background, training=True)
            with g_tape.stop_recording():
                # Discriminator, eq. (6), on the detached composite.
                with tf.GradientTape() as d_tape:
                    both = self.discriminator(
                        self._d_input(tf.concat([image, tf.stop_gradient(fake)], 0)), training=True
                    )
                    real_logits, fake_logits = tf.split(both, 2, axis=0)
                    d_loss = discriminator_loss(real_logits, fake_logits)
                    d_scaled = scale_loss(d_loss)
                grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
                self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
            # Segmentation network, eq. (7), against the updated discriminator.
            fake_logits_g = self.discriminator(self._d_input(fake), training=True)
            g_adv = generator_loss_ns(fake_logits_g)
            area_a = tf.cast(data["area"], tf.float32) if "area" in data else self.area_a
            area = area_penalty(mask, area_a, mode=self.area_mode)
            g_loss = self.adversarial_weight * g_adv + self.area_lambda * area
            if self.box_prior_weight > 0:
                g_loss += self.box_prior_weight * box_projection_loss(mask, self.box_margin)
            if self.pairwise_weight > 0:
                g_loss += self.pairwise_weight * pairwise_colour_loss(mask, image)
            if self.prior_weight > 0:
                g_loss += self.prior_weight * prior_consistency_loss(
                    mask, tf.cast(data["prior"], tf.float32), data.get("prior_weight")
                )
            g_scaled = scale_loss(g_loss)
        grads = g_tape.gradient(g_scaled, self.segmenter.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, self.segmenter.trainable_variables))

        self.d_loss_tracker.update_state(d_loss)
        self.g_adv_tracker.update_state(g_adv)
        self.area_tracker.update_state(area)
        self.mask_mean_tracker.update_state(tf.reduce_mean(mask))
        self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        self.d_fake_tracker.update_state(tf.reduce_mean(tf.sigmoid(fake_logits)))
        return step_outputs({m.name: m.result() for m in self.metrics})

    def image_grid(self, batch, max_images=8):
        """uint8 grid, rows: inputs | masks | backgrounds | composites (Dai et al. Figs 6-7)."""
        image = np.asarray(batch["image"], np.float32)[:max_images]
        background = np.asarray(batch["background"], np.float32)[:max_images]
        mask, fake = self.compose(image, background, training=False)
        return tile_rows(
            [image, mask.numpy(), background, fake.numpy()],
            titles=["crop", "mask", "background", "composite"],
        )
