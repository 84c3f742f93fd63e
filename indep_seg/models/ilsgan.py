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

Losses are averaged per example and scaled for tf.distribute once (sum over the replica's examples
divided by the global batch), so a single replica computes plain means.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from indep_seg.distribute import global_batch_draw

from indep_seg import checks
from indep_seg.augment import AdaptiveAugment, augment

__all__ = [
    "ILSGAN",
    "random_shift_perturbation",
    "perturbed_composite",
    "mask_hinge_loss",
    "binarization_loss",
    "ils_mi_loss",
    "ils_l1_loss",
    "separate_regions",
]




# ----------------------------------------------------------------------------- paper's functions
def random_shift_perturbation(foreground, mask, max_fraction=0.125, seed=None):
    """ILSGAN's T (eq. 3): shift foreground and mask together by random integers (dx, dy), each
    uniform in [-s, s] with s = floor(max_fraction * width), filling with zeros.

    Returns `(T(f), T(m), shifts)` with `shifts` int32 `[N, 2]` = (dx, dy): output pixel (y, x) holds
    input pixel (y - dy, x - dx).
    """
    checks.check_rank(foreground, "foreground", 4, "[N, H, W, C]")
    checks.check_rank(mask, "mask", 4, "[N, H, W, 1]")
    checks.check_fraction(max_fraction, "max_fraction", 0.0, 1.0)
    foreground = tf.convert_to_tensor(foreground)
    mask = tf.convert_to_tensor(mask)
    width = foreground.shape[2] if foreground.shape[2] is not None else tf.shape(foreground)[2]
    h = tf.shape(foreground)[1]
    w = tf.shape(foreground)[2]
    n = tf.shape(foreground)[0]
    if isinstance(width, int):
        s = int(np.floor(max_fraction * width))
    else:
        s = tf.cast(tf.floor(max_fraction * tf.cast(width, tf.float32)), tf.int32)
    if seed is None:
        shifts = tf.random.uniform([n, 2], -s, s + 1, dtype=tf.int32) if isinstance(s, int) else \
            tf.random.uniform([n, 2], -s, s + 1, dtype=tf.int32)
    else:
        u = global_batch_draw(lambda k: keras.random.uniform([k, 2], seed=seed), n)
        shifts = tf.cast(tf.floor(u * tf.cast(2 * s + 1, tf.float32)), tf.int32) - s
        shifts = tf.clip_by_value(shifts, -s, s)
    both = tf.concat([foreground, tf.cast(mask, foreground.dtype)], axis=-1)
    padded = tf.pad(both, [[0, 0], [s, s], [s, s], [0, 0]])
    rows = tf.range(h)[tf.newaxis] + s - shifts[:, 1:2]  # [N, H]
    cols = tf.range(w)[tf.newaxis] + s - shifts[:, 0:1]  # [N, W]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    c = foreground.shape[-1]
    return out[..., :c], out[..., c:], shifts


def perturbed_composite(foreground, mask, background, max_fraction=0.125, seed=None):
    """Eq. (3): `x = T(m) * T(f) + (1 - T(m)) * b`. Returns `(x, shifts)`."""
    tf_, tm, shifts = random_shift_perturbation(foreground, mask, max_fraction, seed)
    return tm * tf_ + (1.0 - tm) * background, shifts


def mask_hinge_loss(mask, eta=0.25):
    """Eq. (4), L_m per example: `max(0, eta - |m|_1 / HW)`. Returns `[N]`."""
    return tf.nn.relu(eta - tf.reduce_mean(mask, axis=[1, 2, 3]))


def mask_max_area_loss(mask, eta_max):
    """Not in the paper (an option of the small preset): `max(0, |m|_1 / HW - eta_max)` per example,
    the upper twin of L_m, which keeps the mask from covering the whole image (all-1 collapse)."""
    return tf.nn.relu(tf.reduce_mean(mask, axis=[1, 2, 3]) - eta_max)


def binarization_loss(mask):
    """Eq. (4), L_b per example: `(1/HW) sum_u min(m_u, 1 - m_u)`. Returns `[N]`."""
    return tf.reduce_mean(tf.minimum(mask, 1.0 - mask), axis=[1, 2, 3])


def separate_regions(foreground, background, mask, opt_visible=True, opt_mask=True):
    """Eq. (10): f_vis = f m, f_inv = f (1 - m), b_vis = b (1 - m), b_inv = b m.

    `opt_visible=False` stops the gradient to f_vis and b_vis; `opt_mask=False` stops the gradient to
    the mask (Table 3, rows C and D).
    """
    m = mask if opt_mask else tf.stop_gradient(mask)
    f_vis, f_inv = foreground * m, foreground * (1.0 - m)
    b_vis, b_inv = background * (1.0 - m), background * m
    if not opt_visible:
        f_vis, b_vis = tf.stop_gradient(f_vis), tf.stop_gradient(b_vis)
    return f_vis, f_inv, b_vis, b_inv


def _neg_log_q(b, f, distribution):
    """-log q(b|f) up to a constant, per example, averaged over elements: Laplace `|b - f|` (the
    paper's choice) or Gaussian `(b - f)^2 / 2` (Table 3 row F)."""
    d = b - f
    if distribution == "laplace":
        e = tf.abs(d)
    else:
        e = 0.5 * tf.square(d)
    return tf.reduce_mean(e, axis=[1, 2, 3])


def club_estimate(b, f, shuffle_index, distribution="laplace"):
    """Eq. (9) per example: `-|b_i - f_i| + |b_{k_i} - f_i|` (Laplace q; per-element mean)."""
    return -_neg_log_q(b, f, distribution) + _neg_log_q(tf.gather(b, shuffle_index), f, distribution)


def ils_mi_loss(foreground, background, mask, shuffle_index, separate=True, opt_visible=True,
                opt_mask=True, distribution="laplace"):
    """ILS-MI, eq. (12), per example `[N]`:
    `I_VC(b_inv; f_vis) + I_VC(b_vis; f_inv)`, each by the CLUB N-sample estimate of eq. (9) with
    `k_i = shuffle_index[i]` uniform in {0..N-1}. With `separate=False`: `I_VC(b; f)` (Table 3 row E).
    The L1 norms are averaged over elements (a fixed rescaling of the Laplace q)."""
    checks.check_choice(distribution, "distribution", ("laplace", "gaussian"))
    if not separate:
        return club_estimate(background, foreground, shuffle_index, distribution)
    f_vis, f_inv, b_vis, b_inv = separate_regions(foreground, background, mask, opt_visible, opt_mask)
    return (club_estimate(b_inv, f_vis, shuffle_index, distribution)
            + club_estimate(b_vis, f_inv, shuffle_index, distribution))


def ils_l1_loss(foreground, background, mask, opt_visible=True, opt_mask=True):
    """ILS-L1, eq. (13), per example: `-|b_inv - f_vis|_1 - |b_vis - f_inv|_1` (element means)."""
    f_vis, f_inv, b_vis, b_inv = separate_regions(foreground, background, mask, opt_visible, opt_mask)
    return -(tf.reduce_mean(tf.abs(b_inv - f_vis), axis=[1, 2, 3])
             + tf.reduce_mean(tf.abs(b_vis - f_inv), axis=[1, 2, 3]))


def r1_penalty_per_example(discriminator, images, augment_fn=None):
    """R1 (Mescheder et al. 2018): `|grad_x D(x)|^2` per real example `[N]` (through ADA if given)."""
    images = tf.identity(images)  # a tensor of this graph (the caller may be inside tf.cond)
    with tf.GradientTape() as tape:
        tape.watch(images)
        x = augment_fn(images) if augment_fn is not None else images
        total = tf.reduce_sum(discriminator(x, training=True))
    g = tape.gradient(total, images)
    return tf.reduce_sum(tf.square(g), axis=[1, 2, 3])


# ----------------------------------------------------------------------------- model
@keras.saving.register_keras_serializable("indep_seg")
class ILSGAN(keras.Model):
    """ILSGAN: layered generator + discriminator with a custom `train_step` (Zou et al. 2023, eq. 1-5, 12).

    Args:
        generator: `indep_seg.networks.stylegan2.LayeredGenerator` (or any model z -> dict with
            `foreground`, `mask`, `background`), exposing `z_dim` and `resolution`.
        discriminator: images `[N, R, R, 3]` in [0, 1] -> logits `[N, 1]`.
        shift_fraction: max shift of T as a fraction of the width (0.125).
        eta, lambda_m: hinge threshold and weight (0.25, 2).
        eta_max: None (paper) or an upper bound on the mean mask, penalised with weight lambda_m
            (`mask_max_area_loss`; a small-preset option against all-1 collapse).
        lambda_b: binarisation weight (2).
        ils: "mi" (eq. 12), "l1" (eq. 13) or "none".
        lambda_ils: ILS weight after the warm-up (1).
        lambda_ils_warmup, ils_warmup_images: weight 0.2 for the first 400k images shown.
        ils_separate, ils_opt_visible, ils_opt_mask, ils_distribution: Table 3 switches.
        r1_gamma: R1 weight; None -> 0.0002 * res^2 / global batch.
        r1_interval: lazy regularisation interval (16).
        ada: enable adaptive discriminator augmentation; ada_target (0.6), ada_interval (4),
            ada_kimg (500).
        global_batch_size: used for loss scaling and the R1 heuristic (None: the batch seen).
        seed: int seed of the model's SeedGenerator.

    Example:
        >>> model = ILSGAN(LayeredGenerator(16, 8, 8, 1, 64, 16), StyleGAN2Discriminator(16, 64, 16))  # doctest: +SKIP
        >>> model.compile(d_optimizer=keras.optimizers.Adam(2.5e-3, 0.0, 0.99),
        ...               g_optimizer=keras.optimizers.Adam(2.5e-3, 0.0, 0.99))  # doctest: +SKIP
        >>> model.fit(dataset_of_images, steps_per_epoch=100)  # doctest: +SKIP
    """

    def __init__(self, generator, discriminator, shift_fraction=0.125, eta=0.25, eta_max=None, lambda_m=2.0,
                 lambda_b=2.0, ils="mi", lambda_ils=1.0, lambda_ils_warmup=0.2,
                 ils_warmup_images=400_000, ils_separate=True, ils_opt_visible=True, ils_opt_mask=True,
                 ils_distribution="laplace", r1_gamma=None, r1_interval=16, ada=True, ada_target=0.6,
                 ada_interval=4, ada_kimg=500.0, global_batch_size=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.shift_fraction = float(checks.check_fraction(shift_fraction, "shift_fraction"))
        self.eta = float(checks.check_fraction(eta, "eta"))
        self.eta_max = None if eta_max is None else float(checks.check_fraction(eta_max, "eta_max", eta, 1.0))
        self.lambda_m = float(checks.check_positive_number(lambda_m, "lambda_m", allow_zero=True))
        self.lambda_b = float(checks.check_positive_number(lambda_b, "lambda_b", allow_zero=True))
        self.ils = checks.check_choice(ils, "ils", ("mi", "l1", "none"))
        self.lambda_ils = float(checks.check_positive_number(lambda_ils, "lambda_ils", allow_zero=True))
        self.lambda_ils_warmup = float(checks.check_positive_number(lambda_ils_warmup, "lambda_ils_warmup",
                                                                    allow_zero=True))
        self.ils_warmup_images = checks.check_int(int(ils_warmup_images), "ils_warmup_images", minimum=0)
        self.ils_separate = checks.check_bool(ils_separate, "ils_separate")
        self.ils_opt_visible = checks.check_bool(ils_opt_visible, "ils_opt_visible")
        self.ils_opt_mask = checks.check_bool(ils_opt_mask, "ils_opt_mask")
        self.ils_distribution = checks.check_choice(ils_distribution, "ils_distribution",
                                                    ("laplace", "gaussian"))
        if r1_gamma is not None:
            checks.check_positive_number(r1_gamma, "r1_gamma", allow_zero=True)
        self.r1_gamma = r1_gamma
        self.r1_interval = checks.check_int(r1_interval, "r1_interval", minimum=0)
        self.use_ada = checks.check_bool(ada, "ada")
        self.ada = AdaptiveAugment(ada_target, ada_interval, ada_kimg)
        self.global_batch_size = global_batch_size
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.grid_z = keras.random.normal([8, generator.z_dim], seed=self.seed + 1)
        self.step_counter = tf.Variable(0, trainable=False, dtype=tf.int64, name="step")
        self.images_seen = tf.Variable(0, trainable=False, dtype=tf.int64, name="images_seen")
        self._tracker_names = ["d_loss", "g_loss", "g_adv", "mask_hinge", "binarization", "ils",
                               "ils_weight", "r1", "ada_p", "r_t", "mask_mean", "real_logit", "fake_logit"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in self._tracker_names}
        self.built = True

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
        return {"generator": self.generator, "discriminator": self.discriminator,
                "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer,
                "seed_generator": self.seed_generator, "ada_p": self.ada.p,
                "ada_sign_sum": self.ada.sign_sum, "ada_count": self.ada.count, "ada_steps": self.ada.steps,
                "train_step": self.step_counter, "images_seen": self.images_seen}

    # ------------------------------------------------------------------ generation
    def sample_z(self, n):
        return keras.random.normal([n, self.generator.z_dim], seed=self.seed_generator)

    def generate(self, z):
        """Layers and the *unperturbed* composite (eq. 1) for latents `z`."""
        out = dict(self.generator(z, training=True))
        out["composite"] = out["mask"] * out["foreground"] + (1.0 - out["mask"]) * out["background"]
        return out

    def image_grid(self, batch=None, n=8):
        """uint8 grid, rows background / foreground / composite / mask (paper Fig. 3), fixed z."""
        out = self.generate(self.grid_z[:n])
        rows = [out["background"], out["foreground"], out["composite"], tf.tile(out["mask"], [1, 1, 1, 3])]
        rows = [tf.concat(tf.unstack(tf.clip_by_value(r, 0.0, 1.0)), axis=1) for r in rows]
        grid = tf.concat(rows, axis=0).numpy()
        return (grid * 255.0 + 0.5).astype(np.uint8)

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
        f, b, m = layers["foreground"], layers["background"], layers["mask"]
        if self.ils == "mi":
            return ils_mi_loss(f, b, m, shuffle_index, self.ils_separate, self.ils_opt_visible,
                               self.ils_opt_mask, self.ils_distribution)
        if self.ils == "l1":
            return ils_l1_loss(f, b, m, self.ils_opt_visible, self.ils_opt_mask)
        return tf.zeros([tf.shape(f)[0]])

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(real, dict):
            real = real["image"]
        real = tf.convert_to_tensor(real, tf.float32)
        n = tf.shape(real)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        global_batch = tf.cast(self.global_batch_size or n * replicas, tf.float32)
        res = float(real.shape[1] or self.generator.resolution)
        gamma = self.r1_gamma if self.r1_gamma is not None else 0.0002 * res * res / global_batch

        # ---- generator step: eq. (5), second line
        z = global_batch_draw(self.sample_z, n)
        shuffle_index = keras.random.randint([n], 0, n, seed=self.seed_generator)
        w_ils = self.ils_weight()
        with tf.GradientTape() as g_tape:
            layers = self.generator(z, training=True)
            x_fake, _ = perturbed_composite(layers["foreground"], layers["mask"], layers["background"],
                                            self.shift_fraction, seed=self.seed_generator)
            fake_logits = self.discriminator(self._augment(x_fake), training=True)
            adv = tf.nn.softplus(-fake_logits[:, 0])
            l_m = mask_hinge_loss(layers["mask"], self.eta)
            if self.eta_max is not None:
                l_m = l_m + mask_max_area_loss(layers["mask"], self.eta_max)
            l_b = binarization_loss(layers["mask"])
            l_ils = self.ils_loss(layers, shuffle_index)
            per_example = adv + self.lambda_m * l_m + self.lambda_b * l_b + w_ils * l_ils
            g_loss = self._scale(per_example, global_batch)
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))

        # ---- discriminator step: eq. (5), first line, lazy R1
        x_fake = tf.stop_gradient(x_fake)
        d_vars = self.discriminator.trainable_variables
        do_r1 = tf.logical_and(self.r1_interval > 0,
                               tf.equal(self.step_counter % max(self.r1_interval, 1), 0))
        with tf.GradientTape() as d_tape:
            fake_d = self.discriminator(self._augment(x_fake), training=True)[:, 0]
            real_d = self.discriminator(self._augment(real), training=True)[:, 0]
            d_per_example = tf.nn.softplus(fake_d) + tf.nn.softplus(-real_d)
            d_loss = self._scale(d_per_example, global_batch)
        d_grads = d_tape.gradient(d_loss, d_vars)

        def r1_grads():
            with tf.GradientTape() as r_tape:
                pen = r1_penalty_per_example(self.discriminator, real, self._augment)
                r1_loss = self._scale(pen * (gamma / 2.0) * float(max(self.r1_interval, 1)), global_batch)
            grads = r_tape.gradient(r1_loss, d_vars)
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, d_vars)]
            return [tf.reduce_mean(pen)] + grads

        def no_r1():
            return [tf.constant(0.0)] + [tf.zeros_like(v) for v in d_vars]

        r1_out = tf.cond(do_r1, r1_grads, no_r1)
        r1_value, r1_g = r1_out[0], r1_out[1:]
        d_grads = [g + rg for g, rg in zip(d_grads, r1_g)]
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))

        r_t = self.ada.update(real_d) if self.use_ada else tf.reduce_mean(tf.sign(real_d))
        self.step_counter.assign_add(1)
        self.images_seen.assign_add(tf.cast(n * replicas, tf.int64))

        values = {"d_loss": d_loss, "g_loss": g_loss, "g_adv": tf.reduce_mean(adv),
                  "mask_hinge": tf.reduce_mean(l_m), "binarization": tf.reduce_mean(l_b),
                  "ils": tf.reduce_mean(l_ils), "ils_weight": w_ils, "r1": r1_value, "ada_p": self.ada.p,
                  "r_t": r_t, "mask_mean": tf.reduce_mean(layers["mask"]),
                  "real_logit": tf.reduce_mean(real_d), "fake_logit": tf.reduce_mean(fake_d)}
        for k, v in values.items():
            self.trackers[k].update_state(v)
        # shape-[1] values: fit under MultiWorkerMirroredStrategy cannot reduce scalars (DESIGN.md 4)
        return {k: tf.reshape(self.trackers[k].result(), [1]) for k in self._tracker_names}

    def get_config(self):
        raise NotImplementedError("ILSGAN is saved through checkpoint_items(), not get_config()")
