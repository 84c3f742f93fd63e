"""ILSGAN (Zou et al. 2023): a layered GAN trained with perturbed composition and the ILS loss.

Generator step (eq. 5, second line):
    min_G  V(G, D) + lambda_m L_m + lambda_b L_b + lambda_ils L_ILS
with the non-saturating form of V, the mask-area hinge L_m and binarisation L_b (eq. 4) on the mask,
and L_ILS (eq. 12 ILS-MI, or eq. 13 ILS-L1) on the *unperturbed* layers. The discriminator sees only
perturbed composites (eq. 3): `x = T(m) T(f) + (1 - T(m)) b`, T a random integer shift of up to
`shift_fraction` of the width (zero fill), the same for foreground and mask.

Discriminator step (eq. 5, first line): `min_D -V(G, D) + gamma R1(D)`, R1 applied lazily every
`r1_interval` steps and scaled by the interval (StyleGAN2), with `gamma = 0.0002 res^2 / batch` by
default (StyleGAN2-ADA's heuristic). Both D inputs go through ADA (`indep_seg.augment`).

The generator and discriminator steps share one batch of generated layers per iteration (the D step
uses the G step's fakes, detached), which halves generator forward passes on CPU.

StyleGAN2 parts (Karras et al. 2020b; the authors' code builds on stylegan2-ada), each an option:
- EMA generator weights (`ema_kimg`, `ema_rampup`): `G_ema = G + beta (G_ema - G)` after every G
  step, `beta = 0.5 ** (global_batch / max(ema_nimg, 1e-8))`, `ema_nimg = min(1000 ema_kimg,
  images_seen ema_rampup)` (images before this step); non-trainable weights are copied. `generate`
  (sampling, KID, the post-hoc pairs, the grids) uses the EMA copy when it is on.
- Style mixing (`style_mixing_prob`): with that probability per step and per generator (G_f and G_b
  separately, the authors' `mixing='orig'`), the per-layer latents from the crossover layer
  `cutoff ~ U{1 .. num_ws - 1}` on come from a second z.
- Lazy path-length regularisation (`pl_weight`, every `pl_interval` steps, scaled by the interval)
on
  half the batch (`pl_batch_shrink`): `a = || J_w^T y ||_2` per example with `y ~ N(0, I) /
  sqrt(HW)`
  on the composite in StyleGAN2's [-1, 1] units, the gradient taken with respect to the per-layer
  latents of both generators (concatenated over layers, squared, summed over channels, averaged
  over layers), penalty `(a - a_mean)^2` with `a_mean` a running mean (decay `pl_decay`). The
  authors' code disables it (their loss.py raises NotImplementedError: "when Gpl is enabled, the
  layers fail to emerge").

The paper's equations live in one place each: T and eq. (3) in `indep_seg.layout`, L_m, L_b, eq.
(10),
ILS-MI, ILS-L1 and R1 in `indep_seg.losses`.

Losses are averaged per example and scaled for tf.distribute once (sum over the replica's examples
divided by the global batch), so a single replica computes plain means.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from indep_seg import checks, losses
from indep_seg.augment import AdaptiveAugment, augment
from indep_seg.composition import composite
from indep_seg.distribute import global_batch_draw, step_outputs
from indep_seg.gallery import tile_rows
from indep_seg.layout import perturbed_composite, shifts_from_uniform
from indep_seg.networks.stylegan2 import LayeredGenerator, StyleGAN2Discriminator
from indep_seg.optimizers import FusedAdam
from indep_seg.presets import PresetMixin

__all__ = ["ILSGAN", "mask_max_area_loss", "ema_beta", "mix_at_cutoff", "path_length_penalty"]


#: The running means `ILSGAN.train_step` reports (with ``pl_penalty`` and ``pl_mean`` where the
#: path length penalty is on).
TRACKERS = (
    "d_loss",
    "g_loss",
    "g_adv",
    "mask_hinge",
    "binarization",
    "ils",
    "ils_weight",
    "r1",
    "ada_p",
    "r_t",
    "mask_mean",
    "real_logit",
    "fake_logit",
)


def _exact_copy(generator):
    """A built copy of `generator` (its config, its weights' values): the EMA generator."""
    copy = generator.__class__.from_config(generator.get_config())
    copy.build((None, generator.z_dim))
    src, dst = generator.weights, copy.weights
    if [tuple(v.shape) for v in src] != [tuple(v.shape) for v in dst]:
        raise ValueError(
            "generator: its copy from get_config() has other weights; EMA needs an exact copy"
        )
    for d, v in zip(dst, src):
        d.assign(v)
    return copy


def mask_max_area_loss(mask, eta_max):
    """Not in the paper (an option of the small preset): `max(0, |m|_1 / HW - eta_max)` per example,
    the upper twin of L_m, which keeps the mask from covering the whole image (all-1 collapse)."""
    return tf.nn.relu(tf.reduce_mean(mask, axis=[1, 2, 3]) - eta_max)


def ema_beta(batch, images_seen, ema_kimg, ema_rampup=None):
    """StyleGAN2-ADA's EMA decay for one step: `0.5 ** (batch / max(ema_nimg, 1e-8))` with
    `ema_nimg = 1000 ema_kimg`, or `min(ema_nimg, images_seen * ema_rampup)` with a ramp-up."""
    ema_nimg = tf.cast(ema_kimg * 1000.0, tf.float32)
    if ema_rampup is not None:
        ema_nimg = tf.minimum(ema_nimg, tf.cast(images_seen, tf.float32) * float(ema_rampup))
    return tf.pow(0.5, tf.cast(batch, tf.float32) / tf.maximum(ema_nimg, 1e-8))


def mix_at_cutoff(ws, ws_mix, cutoff):
    """StyleGAN2's style mixing: per-layer latents `[N, L, w_dim]` equal to `ws` before layer
    `cutoff` and to `ws_mix` from it on (`cutoff = L`: no mixing)."""
    layer = tf.range(tf.shape(ws)[1])[tf.newaxis, :, tf.newaxis]
    return tf.where(layer < tf.cast(cutoff, tf.int32), ws, ws_mix)


def path_length_penalty(synthesis, ws, noise, pl_mean, pl_decay=0.01):
    """StyleGAN2's path-length regulariser (Karras et al. 2020b, eq. 4; stylegan2-ada loss.py).

    `synthesis(ws) -> image [N, H, W, C]` in StyleGAN2's [-1, 1] units; `ws` a dict (or one tensor)
    of per-layer latents `[N, L, w_dim]`; `noise` `[N, H, W, C]` ~ N(0, 1) / sqrt(H W).
    Returns `(penalty [N], lengths [N], new_pl_mean)`: lengths
    `a = sqrt(mean_layers(sum_channels(g^2)))`, `g = d sum(image * noise) / d ws` (the layers of
    every entry of `ws` concatenated), new mean `pl_mean + pl_decay (mean(a) - pl_mean)`, penalty
    `(a - new_mean)^2` (as in stylegan2-ada, the gradient also flows through `new_mean`).
    """
    items = ws if isinstance(ws, dict) else {"w": ws}
    keys = sorted(items)
    with tf.GradientTape() as tape:
        for k in keys:
            tape.watch(items[k])
        img = synthesis(ws)
        total = tf.reduce_sum(img * noise)
    grads = tape.gradient(total, [items[k] for k in keys])
    g = tf.concat(grads, axis=1)
    lengths = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(g), axis=2), axis=1))
    new_mean = pl_mean + pl_decay * (tf.reduce_mean(lengths) - pl_mean)
    penalty = tf.square(lengths - new_mean)
    return penalty, lengths, new_mean


# ----------------------------------------------------------------------------- model
@keras.saving.register_keras_serializable("indep_seg")
class ILSGAN(PresetMixin, keras.Model):
    """ILSGAN: layered generator + discriminator with a custom `train_step` (Zou et al. 2023, eq.
    1-5, 12).

    Presets: `ILSGAN.presets`, `ILSGAN.from_preset("ilsgan" | "ilsgan_tiny" | "ilsgan_paper")`
    (`indep_seg.presets.ILSGAN_PRESETS`), compiled with the preset's optimizers; then keras `fit`
    on a `tf.data.Dataset` of image batches `[B, R, R, 3]` in [0, 1] (or dicts with "image").

    Args:
        generator: `indep_seg.networks.stylegan2.LayeredGenerator` (or any model z -> dict with
            `foreground`, `mask`, `background`), exposing `z_dim` and `resolution`.
        discriminator: images `[N, R, R, 3]` in [0, 1] -> logits `[N, 1]`.
        shift_fraction: max shift of T as a fraction of the width (0.125).
        eta, lambda_m: hinge threshold and weight (0.25, 2).
        eta_max: None (paper) or an upper bound on the mean mask, penalised with weight lambda_m
            (`mask_max_area_loss`; a small-preset option against all-1 collapse).
        lambda_b: binarisation weight (2).
        mask_losses_on: "mask" (L_m and L_b on m, eq. 4 as printed) or "shifted" (on T(m), the
            mask that is composited, as the authors' training/loss.py computes them).
        ils: "mi" (eq. 12), "l1" (eq. 13) or "none".
        lambda_ils: ILS weight after the warm-up (1).
        lambda_ils_warmup, ils_warmup_images: weight 0.2 for the first 400k images shown.
        ils_separate, ils_opt_visible, ils_opt_mask, ils_distribution: Table 3 switches.
        r1_gamma: R1 weight; None -> 0.0002 * res^2 / global batch.
        r1_interval: lazy regularisation interval (16).
        ada: enable adaptive discriminator augmentation; ada_target (0.6), ada_interval (4),
            ada_kimg (500).
        ema_kimg: EMA half-life in thousands of images (None or 0: no EMA copy); ema_rampup: None or
            the ramp-up factor (stylegan2-ada: 0.05).
        style_mixing_prob: probability of style mixing per step and generator (0: off; StyleGAN2
        0.9).
        pl_weight: path-length weight (0: off; StyleGAN2 2); pl_interval (4), pl_batch_shrink (2),
            pl_decay (0.01).
        global_batch_size: used for loss scaling and the R1 heuristic (None: the batch seen).
        seed: int seed of the model's SeedGenerator.

    Example:
        >>> model = ILSGAN(LayeredGenerator(16, 8, 8, 1, 64, 16),  # doctest: +SKIP
        ...                StyleGAN2Discriminator(16, 64, 16))
        >>> model.compile(d_optimizer=keras.optimizers.Adam(2.5e-3, 0.0, 0.99),
        ...               g_optimizer=keras.optimizers.Adam(2.5e-3, 0.0, 0.99))  # doctest: +SKIP
        >>> model.fit(dataset_of_images, steps_per_epoch=100)  # doctest: +SKIP
    """

    def __init__(
        self,
        generator,
        discriminator,
        shift_fraction=0.125,
        eta=0.25,
        eta_max=None,
        lambda_m=2.0,
        lambda_b=2.0,
        mask_losses_on="mask",
        ils="mi",
        lambda_ils=1.0,
        lambda_ils_warmup=0.2,
        ils_warmup_images=400_000,
        ils_separate=True,
        ils_opt_visible=True,
        ils_opt_mask=True,
        ils_distribution="laplace",
        r1_gamma=None,
        r1_interval=16,
        ada=True,
        ada_target=0.6,
        ada_interval=4,
        ada_kimg=500.0,
        ema_kimg=None,
        ema_rampup=None,
        style_mixing_prob=0.0,
        pl_weight=0.0,
        pl_interval=4,
        pl_batch_shrink=2,
        pl_decay=0.01,
        global_batch_size=None,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.shift_fraction = float(checks.check_fraction(shift_fraction, "shift_fraction"))
        self.eta = float(checks.check_fraction(eta, "eta"))
        self.eta_max = (
            None if eta_max is None else float(checks.check_fraction(eta_max, "eta_max", eta, 1.0))
        )
        self.lambda_m = float(checks.check_positive_number(lambda_m, "lambda_m", allow_zero=True))
        self.lambda_b = float(checks.check_positive_number(lambda_b, "lambda_b", allow_zero=True))
        self.mask_losses_on = checks.check_choice(
            mask_losses_on, "mask_losses_on", ("mask", "shifted")
        )
        self.ils = checks.check_choice(ils, "ils", ("mi", "l1", "none"))
        self.lambda_ils = float(
            checks.check_positive_number(lambda_ils, "lambda_ils", allow_zero=True)
        )
        self.lambda_ils_warmup = float(
            checks.check_positive_number(lambda_ils_warmup, "lambda_ils_warmup", allow_zero=True)
        )
        self.ils_warmup_images = checks.check_int(
            int(ils_warmup_images), "ils_warmup_images", minimum=0
        )
        self.ils_separate = checks.check_bool(ils_separate, "ils_separate")
        self.ils_opt_visible = checks.check_bool(ils_opt_visible, "ils_opt_visible")
        self.ils_opt_mask = checks.check_bool(ils_opt_mask, "ils_opt_mask")
        self.ils_distribution = checks.check_choice(
            ils_distribution, "ils_distribution", ("laplace", "gaussian")
        )
        if r1_gamma is not None:
            checks.check_positive_number(r1_gamma, "r1_gamma", allow_zero=True)
        self.r1_gamma = r1_gamma
        self.r1_interval = checks.check_int(r1_interval, "r1_interval", minimum=0)
        self.use_ada = checks.check_bool(ada, "ada")
        self.ada = AdaptiveAugment(ada_target, ada_interval, ada_kimg)
        self.ema_kimg = float(
            checks.check_positive_number(ema_kimg or 0.0, "ema_kimg", allow_zero=True)
        )
        self.ema_rampup = (
            None
            if ema_rampup is None
            else float(checks.check_positive_number(ema_rampup, "ema_rampup"))
        )
        self.style_mixing_prob = float(
            checks.check_fraction(style_mixing_prob, "style_mixing_prob")
        )
        self.pl_weight = float(
            checks.check_positive_number(pl_weight, "pl_weight", allow_zero=True)
        )
        self.pl_interval = checks.check_int(pl_interval, "pl_interval", minimum=1)
        self.pl_batch_shrink = checks.check_int(pl_batch_shrink, "pl_batch_shrink", minimum=1)
        self.pl_decay = float(checks.check_fraction(pl_decay, "pl_decay"))
        self.pl_mean = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="pl_mean")
        self.generator_ema = _exact_copy(generator) if self.ema_kimg > 0 else None
        self.global_batch_size = global_batch_size
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.grid_z = keras.random.normal([8, generator.z_dim], seed=self.seed + 1)
        self.step_counter = tf.Variable(0, trainable=False, dtype=tf.int64, name="step")
        self.images_seen = tf.Variable(0, trainable=False, dtype=tf.int64, name="images_seen")
        self._tracker_names = list(TRACKERS) + (
            ["pl_penalty", "pl_mean"] if self.pl_weight > 0 else []
        )
        self.trackers = {n: keras.metrics.Mean(name=n) for n in self._tracker_names}
        self.built = True

    @classmethod
    def from_options(cls, options, seed=0, global_batch_size=None, **kwargs):
        """The model of ILSGAN options (a preset's, `indep_seg.presets.ILSGAN_PRESETS`, or the
        training layer's `ILSGANConfig` as a dict), compiled: the builder of `from_preset` and of
        `indep-seg train --experiment ilsgan*`.

        global_batch_size: the global batch of the loss scaling and of the R1 heuristic (the
        trainer: its batch size; None: the batch each step sees, right for any batch size).
        """
        o = options
        generator = LayeredGenerator(
            o["resolution"],
            o["z_dim"],
            o["w_dim"],
            o["mapping_layers"],
            o["g_channel_base"],
            o["g_channel_max"],
            use_noise=o["use_noise"],
            mask_bias=o["mask_bias"],
            mask_center_prior=o["mask_center_prior"],
            name="layered_generator",
        )
        discriminator = StyleGAN2Discriminator(
            o["resolution"],
            o["d_channel_base"],
            o["d_channel_max"],
            mbstd_group_size=o["mbstd_group_size"],
            name="discriminator",
        )
        model = cls(
            generator,
            discriminator,
            shift_fraction=o["shift_fraction"],
            eta=o["eta"],
            eta_max=None if o["eta_max"] < 0 else o["eta_max"],
            lambda_m=o["lambda_m"],
            lambda_b=o["lambda_b"],
            mask_losses_on=o["mask_losses_on"],
            ils=o["ils"],
            lambda_ils=o["lambda_ils"],
            lambda_ils_warmup=o["lambda_ils_warmup"],
            ils_warmup_images=o["ils_warmup_images"],
            ils_separate=o["ils_separate"],
            ils_opt_visible=o["ils_opt_visible"],
            ils_opt_mask=o["ils_opt_mask"],
            ils_distribution=o["ils_distribution"],
            r1_gamma=None if o["r1_gamma"] < 0 else o["r1_gamma"],
            r1_interval=o["r1_interval"],
            ada=o["ada"],
            ada_target=o["ada_target"],
            ada_interval=o["ada_interval"],
            ada_kimg=o["ada_kimg"],
            ema_kimg=o["ema_kimg"],
            ema_rampup=None if o["ema_rampup"] < 0 else o["ema_rampup"],
            style_mixing_prob=o["style_mixing_prob"],
            pl_weight=o["pl_weight"],
            pl_interval=o["pl_interval"],
            global_batch_size=global_batch_size,
            seed=seed,
            **kwargs,
        )
        # StyleGAN2 lazy regularisation: an optimizer's lr and betas are adjusted by c = k / (k + 1)
        k_d, k_g = o["r1_interval"], o["pl_interval"]
        c = k_d / (k_d + 1.0) if k_d > 0 else 1.0
        cg = k_g / (k_g + 1.0) if o["pl_weight"] > 0 else 1.0
        lr, b1, b2 = o["learning_rate"], o["beta_1"], o["beta_2"]
        model.compile(
            d_optimizer=FusedAdam(lr * c, beta_1=b1**c, beta_2=b2**c, epsilon=1e-8),
            g_optimizer=FusedAdam(lr * cg, beta_1=b1**cg, beta_2=b2**cg, epsilon=1e-8),
        )
        return model

    _from_preset_options = from_options

    # ------------------------------------------------------------------ keras plumbing
    def compile(self, d_optimizer, g_optimizer, **kwargs):
        """Two optimizers (paper: Adam lr 0.0025, betas (0, 0.99)); built on their variables now."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, z, training=None):
        return self.generate(z)

    def checkpoint_items(self):
        """Everything a resumed run needs (for `tf.train.Checkpoint(**items)`)."""
        items = {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
            "seed_generator": self.seed_generator,
            "ada_p": self.ada.p,
            "ada_sign_sum": self.ada.sign_sum,
            "ada_count": self.ada.count,
            "ada_steps": self.ada.steps,
            "train_step": self.step_counter,
            "images_seen": self.images_seen,
        }
        if self.generator_ema is not None:
            items["generator_ema"] = self.generator_ema
        if self.pl_weight > 0:
            items["pl_mean"] = self.pl_mean
        return items

    @property
    def sampling_generator(self):
        """The generator that samples (KID, grids, post-hoc pairs): the EMA copy when EMA is on."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    # ------------------------------------------------------------------ generation
    def sample_z(self, n):
        return keras.random.normal([n, self.generator.z_dim], seed=self.seed_generator)

    def generate(self, z):
        """Layers and the *unperturbed* composite (eq. 1) for latents `z`, from
        `sampling_generator`."""
        out = dict(self.sampling_generator(z, training=True))
        out["composite"] = composite(
            out["foreground"], out["mask"], out["background"], unit_range=False
        )
        return out

    def image_grid(self, batch=None, n=8):
        """uint8 grid, rows background / foreground / composite / mask (paper Fig. 3), fixed z,
        each row titled at its left."""
        out = self.generate(self.grid_z[:n])
        rows = [out["background"], out["foreground"], out["composite"], out["mask"]]
        return tile_rows(
            [tf.clip_by_value(r, 0.0, 1.0).numpy() for r in rows],
            min_cell=64,
            titles=["background", "foreground", "composite", "mask"],
        )

    # ------------------------------------------------------------------ training
    def _augment(self, x):
        if not self.use_ada:
            return x
        return augment(x, self.ada.p, seed=self.seed_generator)

    def _scale(self, per_example, global_batch):
        return tf.reduce_sum(per_example) / global_batch

    def ils_weight(self):
        if self.ils == "none":
            return tf.constant(0.0)
        warm = tf.cast(self.images_seen < self.ils_warmup_images, tf.float32)
        return warm * self.lambda_ils_warmup + (1.0 - warm) * self.lambda_ils

    def ils_loss(self, layers, shuffle_index):
        """L_ILS per example `[N]` on the unperturbed layers: eq. (12) or (13)
        (`indep_seg.losses`)."""
        f, b, m = layers["foreground"], layers["background"], layers["mask"]
        if self.ils == "mi":
            return losses.ils_mi_loss(
                f,
                b,
                m,
                separate=self.ils_separate,
                optimize_visible=self.ils_opt_visible,
                optimize_mask=self.ils_opt_mask,
                distribution=self.ils_distribution,
                permutation=shuffle_index,
                reduction="none",
            )
        if self.ils == "l1":
            return losses.ils_l1_loss(
                f,
                b,
                m,
                optimize_visible=self.ils_opt_visible,
                optimize_mask=self.ils_opt_mask,
                reduction="none",
            )
        return tf.zeros([tf.shape(f)[0]])

    def generator_losses(self, layers, shifts, shuffle_index, ils_weight):
        """Eq. (5), second line, per example, for generated `layers`, T's `shifts` `[N, 2]` and the
        CLUB
        negatives `shuffle_index` `[N]`: returns `(x_fake, terms)`, `terms` with `adv`, `l_m`,
        `l_b`,
        `l_ils` and `total = adv + lambda_m L_m + lambda_b L_b + w_ils L_ILS`, each `[N]`."""
        x_fake, _, shifted_mask = perturbed_composite(
            layers["foreground"],
            layers["mask"],
            layers["background"],
            self.shift_fraction,
            shifts=shifts,
            unit_range=False,
            return_layers=True,
        )
        fake_logits = self.discriminator(self._augment(x_fake), training=True)
        adv = losses.generator_loss_ns(fake_logits[:, 0], reduction="none")
        m = shifted_mask if self.mask_losses_on == "shifted" else layers["mask"]
        l_m = losses.mask_hinge_loss(m, self.eta, reduction="none")
        if self.eta_max is not None:
            l_m = l_m + mask_max_area_loss(m, self.eta_max)
        l_b = losses.binarization_loss(m, reduction="none")
        l_ils = self.ils_loss(layers, shuffle_index)
        total = adv + self.lambda_m * l_m + self.lambda_b * l_b + ils_weight * l_ils
        return x_fake, {"adv": adv, "l_m": l_m, "l_b": l_b, "l_ils": l_ils, "total": total}

    def discriminator_losses(self, real, x_fake):
        """Eq. (5), first line (without R1), per example: `(d_loss [N], real_logits [N], fake_logits
        [N])`."""
        fake_d = self.discriminator(self._augment(x_fake), training=True)[:, 0]
        real_d = self.discriminator(self._augment(real), training=True)[:, 0]
        d_per_example = losses.discriminator_loss(real_d, fake_d, reduction="none")
        return d_per_example, real_d, fake_d

    def r1_per_example(self, real):
        """`|grad_x D(A(x))|^2` per real example `[N]` (`indep_seg.losses.r1_penalty`, through
        ADA)."""
        real = tf.identity(real)  # a tensor of this graph (the caller may be inside tf.cond)
        return losses.r1_penalty(
            lambda x, training=True: self.discriminator(self._augment(x), training=training),
            real,
            reduction="none",
        )

    def draw_shifts(self, n, height, width):
        """T's integer shifts `[n, 2]`, drawn for the global batch (the same under any number of
        replicas)."""
        u = global_batch_draw(lambda k: keras.random.uniform([k, 2], seed=self.seed_generator), n)
        return shifts_from_uniform(u, height, width, self.shift_fraction)

    def mixed_latents(self, z, z_mix=None):
        """Per-layer latents of both generators for `z`; with style mixing on, each generator's
        layers
        from a random crossover layer on take the latents of `z_mix` (with probability
        `style_mixing_prob`, one cutoff per generator and step, as the authors' `mixing='orig'`)."""
        ws = self.generator.mapping(z)
        if self.style_mixing_prob <= 0 or z_mix is None:
            return ws
        ws_mix = self.generator.mapping(z_mix)
        out = {}
        for key in sorted(ws):
            num_ws = ws[key].shape[1]
            cutoff = keras.random.randint([], 1, num_ws, seed=self.seed_generator)
            use = keras.random.uniform([], seed=self.seed_generator) < self.style_mixing_prob
            out[key] = mix_at_cutoff(ws[key], ws_mix[key], tf.where(use, cutoff, num_ws))
        return out

    def _generate_for_training(self, z, n):
        if self.style_mixing_prob > 0:
            z_mix = global_batch_draw(self.sample_z, n)
            return self.generator.synthesis(self.mixed_latents(z, z_mix))
        return self.generator(z, training=True)

    def _update_ema(self, global_batch):
        beta = ema_beta(global_batch, self.images_seen, self.ema_kimg, self.ema_rampup)
        for e, p in zip(self.generator_ema.trainable_variables, self.generator.trainable_variables):
            e.assign(p + (e - p) * beta)
        for e, p in zip(
            self.generator_ema.non_trainable_variables, self.generator.non_trainable_variables
        ):
            e.assign(p)

    def _path_length_grads(self, z, n, global_batch, g_vars):
        """Lazy path-length step: `[penalty mean, new pl_mean] + grads` (scaled by the interval)."""
        nb = tf.maximum(n // self.pl_batch_shrink, 1)
        z_pl = z[:nb]
        z_mix = global_batch_draw(self.sample_z, n)[:nb] if self.style_mixing_prob > 0 else None
        with tf.GradientTape() as tape:
            ws = self.mixed_latents(z_pl, z_mix)
            res = self.generator.resolution

            def synth(w):
                lay = self.generator.synthesis(w)
                return (
                    2.0
                    * composite(lay["foreground"], lay["mask"], lay["background"], unit_range=False)
                    - 1.0
                )

            noise = keras.random.normal([nb, res, res, 3], seed=self.seed_generator) / float(res)
            pen, _, new_mean = path_length_penalty(synth, ws, noise, self.pl_mean, self.pl_decay)
            loss = (
                tf.reduce_sum(pen)
                * self.pl_weight
                * float(self.pl_interval)
                / (global_batch / float(self.pl_batch_shrink))
            )
        grads = tape.gradient(loss, g_vars)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, g_vars)]
        return [tf.reduce_mean(pen), new_mean] + grads

    def _generator_step(self, n, global_batch):
        """One generator update, eq. (5) second line (with the lazy path length penalty where
        ``pl_weight`` > 0). Returns `(layers, composite, terms, g_loss, ILS weight, PL value)`."""
        z = global_batch_draw(self.sample_z, n)
        shuffle_index = keras.random.randint([n], 0, n, seed=self.seed_generator)
        w_ils = self.ils_weight()
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as g_tape:
            layers = self._generate_for_training(z, n)
            shifts = self.draw_shifts(n, tf.shape(layers["mask"])[1], tf.shape(layers["mask"])[2])
            x_fake, terms = self.generator_losses(layers, shifts, shuffle_index, w_ils)
            g_loss = self._scale(terms["total"], global_batch)
        g_grads = g_tape.gradient(g_loss, g_vars)
        pl_value = None
        if self.pl_weight > 0:
            do_pl = tf.equal(self.step_counter % self.pl_interval, 0)
            pl_out = tf.cond(
                do_pl,
                lambda: self._path_length_grads(z, n, global_batch, g_vars),
                lambda: (
                    [tf.constant(0.0), tf.identity(self.pl_mean)]
                    + [tf.zeros_like(v) for v in g_vars]
                ),
            )
            pl_value, new_pl_mean, pl_g = pl_out[0], pl_out[1], pl_out[2:]
            g_grads = [g + pg for g, pg in zip(g_grads, pl_g)]
            self.pl_mean.assign(new_pl_mean)
        self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
        if self.generator_ema is not None:
            self._update_ema(global_batch)
        return layers, x_fake, terms, g_loss, w_ils, pl_value

    def _discriminator_step(self, real, x_fake, gamma, global_batch):
        """One discriminator update, eq. (5) first line, with StyleGAN2's lazy R1 every
        ``r1_interval`` steps. Returns `(d_loss, real logits, fake logits, R1 value)`."""
        d_vars = self.discriminator.trainable_variables
        do_r1 = tf.logical_and(
            self.r1_interval > 0, tf.equal(self.step_counter % max(self.r1_interval, 1), 0)
        )
        with tf.GradientTape() as d_tape:
            d_per_example, real_d, fake_d = self.discriminator_losses(real, x_fake)
            d_loss = self._scale(d_per_example, global_batch)
        d_grads = d_tape.gradient(d_loss, d_vars)

        def r1_grads():
            with tf.GradientTape() as r_tape:
                pen = self.r1_per_example(real)
                r1_loss = self._scale(
                    pen * (gamma / 2.0) * float(max(self.r1_interval, 1)), global_batch
                )
            grads = r_tape.gradient(r1_loss, d_vars)
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, d_vars)]
            return [tf.reduce_mean(pen)] + grads

        def no_r1():
            return [tf.constant(0.0)] + [tf.zeros_like(v) for v in d_vars]

        r1_out = tf.cond(do_r1, r1_grads, no_r1)
        r1_value, r1_g = r1_out[0], r1_out[1:]
        d_grads = [g + rg for g, rg in zip(d_grads, r1_g)]
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        return d_loss, real_d, fake_d, r1_value

    def train_step(self, data):
        """One step of eq. (5): the generator's update, then the discriminator's on the same
        (stopped) composites; ADA's p follows the real logits."""
        real = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(real, dict):
            real = real["image"]
        real = tf.convert_to_tensor(real, tf.float32)
        n = tf.shape(real)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        global_batch = tf.cast(self.global_batch_size or n * replicas, tf.float32)
        res = float(real.shape[1] or self.generator.resolution)
        gamma = self.r1_gamma if self.r1_gamma is not None else 0.0002 * res * res / global_batch

        layers, x_fake, terms, g_loss, w_ils, pl_value = self._generator_step(n, global_batch)
        d_loss, real_d, fake_d, r1_value = self._discriminator_step(
            real, tf.stop_gradient(x_fake), gamma, global_batch
        )
        r_t = self.ada.update(real_d) if self.use_ada else tf.reduce_mean(tf.sign(real_d))
        self.step_counter.assign_add(1)
        self.images_seen.assign_add(tf.cast(n * replicas, tf.int64))

        values = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "g_adv": tf.reduce_mean(terms["adv"]),
            "mask_hinge": tf.reduce_mean(terms["l_m"]),
            "binarization": tf.reduce_mean(terms["l_b"]),
            "ils": tf.reduce_mean(terms["l_ils"]),
            "ils_weight": w_ils,
            "r1": r1_value,
            "ada_p": self.ada.p,
            "r_t": r_t,
            "mask_mean": tf.reduce_mean(layers["mask"]),
            "real_logit": tf.reduce_mean(real_d),
            "fake_logit": tf.reduce_mean(fake_d),
        }
        if self.pl_weight > 0:
            values.update(pl_penalty=pl_value, pl_mean=self.pl_mean)
        for k, v in values.items():
            self.trackers[k].update_state(v)
        return step_outputs({k: self.trackers[k].result() for k in self._tracker_names})

    def get_config(self):
        raise NotImplementedError("ILSGAN is saved through checkpoint_items(), not get_config()")
