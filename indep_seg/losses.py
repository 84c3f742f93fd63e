"""Loss functions of Dai et al. 2019 and ILSGAN (Zou et al. 2023), each named as in the papers.

Reductions. Every per-example loss takes ``reduction="mean"`` (default: a scalar, the mean
over the batch) or ``reduction="none"`` (one value per example, ``[B]``, ready for
`indep_seg.distribute.scale_loss`). `ils_mi_loss` is a batch estimator (its negatives come
from the other examples of the batch): its ``"none"`` values are the per-sample terms of
eq. (9)/(12), whose mean is the estimate.

Masks are float ``[B, H, W, 1]`` (or ``[B, L, H, W, 1]`` for N-layer stacks) in [0, 1];
value checks run on eager inputs only.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from indep_seg import _random, checks

__all__ = [
    "generator_loss_ns",
    "discriminator_loss",
    "area_penalty",
    "mask_hinge_loss",
    "binarization_loss",
    "r1_penalty",
    "separate_regions",
    "ils_mi_loss",
    "ils_l1_loss",
    "infogan_information_loss",
    "smooth_l1",
    "smooth_l1_loss",
]

_EPS = 1e-7


def _reduce(per_example, reduction):
    checks.check_choice(reduction, "reduction", ("mean", "none"))
    return tf.reduce_mean(per_example) if reduction == "mean" else per_example


def _per_example_mean(x):
    """Mean over all non-batch axes: ``[B, ...] -> [B]`` (``[B]`` stays)."""
    if x.shape.rank is not None and x.shape.rank <= 1:
        return tf.reshape(x, [-1])
    return tf.reduce_mean(tf.reshape(x, tf.stack([tf.shape(x)[0], -1])), axis=1)


def _per_example_sum(x):
    if x.shape.rank is not None and x.shape.rank <= 1:
        return tf.reshape(x, [-1])
    return tf.reduce_sum(tf.reshape(x, tf.stack([tf.shape(x)[0], -1])), axis=1)


def _check_mask(mask, name="mask", ranks=(4, 5)):
    mask = checks.to_float_tensor(mask, name)
    checks.check_rank(
        mask, name, ranks, "[B, H, W, 1] or [B, L, H, W, 1]" if ranks == (4, 5) else "[B, H, W, 1]"
    )
    checks.check_channels(mask, name, 1, what="1 channel in the last dimension")
    checks.check_range(mask, name, 0.0, 1.0)
    return mask


def _check_scores(x, name, from_logits):
    x = checks.to_float_tensor(x, name)
    checks.check_rank(x, name, (1, 2, 3, 4), "[B] or [B, 1] (or patch scores [B, h, w, 1])")
    checks.check_finite(x, name)
    if not from_logits:
        checks.check_range(x, name, 0.0, 1.0)
    return x


def _neg_log_sigmoid(x, from_logits):
    """-log D where D = sigmoid(x) (from logits) or D = x (probabilities)."""
    if from_logits:
        return tf.nn.softplus(-x)
    return -tf.math.log(tf.clip_by_value(x, _EPS, 1.0))


def _neg_log_one_minus_sigmoid(x, from_logits):
    """-log(1 - D)."""
    if from_logits:
        return tf.nn.softplus(x)
    return -tf.math.log(tf.clip_by_value(1.0 - x, _EPS, 1.0))


def generator_loss_ns(fake_scores, from_logits: bool = True, reduction: str = "mean"):
    """Non-saturating generator loss ``E[-log D(G(z))]`` (Goodfellow et al. 2014).

    Dai et al. 2019 eq. (7) writes the generator objective as ``E log D(x_g)`` (maximised)
    plus ``λ L_area``; ILSGAN eq. (5) uses ``V(G, D̄)`` with the same non-saturating form in
    its code (``softplus(-logits)``). Add the regularisers (area penalty, ...) outside.

    Args:
        fake_scores: discriminator outputs on generated images, ``[B]``, ``[B, 1]`` or patch
            scores ``[B, h, w, 1]`` (averaged per example).
        from_logits: True (default) when the discriminator returns logits (numerically
            stable: ``softplus(-logit)``). Dai's Table 1/2 discriminators end with a
            sigmoid; pass ``from_logits=False`` for such probability outputs (clipped to
            [1e-7, 1] before the log). We recommend building the discriminator without the
            final sigmoid and using logits: identical loss, stable gradients.
        reduction: ``"mean"`` or ``"none"`` (``[B]``).
    """
    fake_scores = _check_scores(fake_scores, "fake_scores", from_logits)
    return _reduce(_per_example_mean(_neg_log_sigmoid(fake_scores, from_logits)), reduction)


def discriminator_loss(real_scores, fake_scores, from_logits: bool = True, reduction: str = "mean"):
    """Discriminator loss ``E[-log D(x)] + E[-log(1 - D(x_g))]`` (Dai eq. 6, ILSGAN eq. 2/5).

    Dai's eq. (6) states ``L_D = E[log D(x)] + E[log(1 - D(x_g))]`` as the quantity D
    maximises; this function returns its negative, to be minimised. R1 is separate
    (`r1_penalty`). See `generator_loss_ns` for `from_logits`.

    Args:
        real_scores: D outputs on real images, ``[B]`` / ``[B, 1]`` / ``[B, h, w, 1]``.
        fake_scores: D outputs on composites, same layout (the batch sizes may differ when
            ``reduction="mean"``; with ``"none"`` they must be equal).
    """
    real_scores = _check_scores(real_scores, "real_scores", from_logits)
    fake_scores = _check_scores(fake_scores, "fake_scores", from_logits)
    real_term = _per_example_mean(_neg_log_sigmoid(real_scores, from_logits))
    fake_term = _per_example_mean(_neg_log_one_minus_sigmoid(fake_scores, from_logits))
    checks.check_choice(reduction, "reduction", ("mean", "none"))
    if reduction == "mean":
        return tf.reduce_mean(real_term) + tf.reduce_mean(fake_term)
    checks.check_same_shape(real_scores, fake_scores, "real_scores", "fake_scores", axes=(0,))
    return real_term + fake_term


def area_penalty(masks, a, reduction: str = "mean", mode: str = "two_sided"):
    """Mask area penalty of Dai et al. 2019, eq. (7):
    ``L_area = E_m[ 1/N sum_i (||m_i||_1 / A - a)^2 ]``.

    Args:
        masks: soft masks, ``[B, H, W, 1]`` (N = 1) or ``[B, N, H, W, 1]`` (N layers), in [0, 1].
        a: the target area fraction (Dai Tables 3-4: 0.25, 0.1), a number in [0, 1], or one
            target per image, ``[B]`` (estimated per photo from its box without masks:
            `indep_seg.box_prior`).
        reduction: ``"mean"`` (scalar) or ``"none"`` (``[B]``, the inner mean over layers).
        mode: ``"two_sided"`` is eq. (7) as printed; ``"above"`` penalises only masks larger
            than ``a`` (Dai: "a is an empirical constant for the smallest mask area"):
            ``max(0, ||m||_1 / A - a)^2``.

    ``||m_i||_1 / A`` is the mean of the mask over its H x W pixels (A = H W).
    """
    masks = _check_mask(masks, "masks")
    checks.check_choice(mode, "mode", ("two_sided", "above"))
    if (a.shape.rank if tf.is_tensor(a) else np.ndim(a)) == 0:
        checks.check_fraction(a, "a", 0.0, 1.0)
        target = tf.cast(a, masks.dtype)
    else:
        target = tf.cast(a, masks.dtype)
        checks.check_rank(target, "a", 1, "[B] (one target per image) or a number")
        checks.check_same_shape(masks, target, "masks", "a", axes=(0,))
        if masks.shape.rank == 5:
            target = target[:, None]
    area = tf.reduce_mean(masks, axis=[-3, -2, -1])  # [B] or [B, N]: ||m_i||_1 / A
    diff = area - target
    if mode == "above":
        diff = tf.nn.relu(diff)
    per_layer = tf.square(diff)
    per_example = per_layer if per_layer.shape.rank == 1 else tf.reduce_mean(per_layer, axis=1)
    return _reduce(per_example, reduction)


def mask_hinge_loss(mask, eta, reduction: str = "mean"):
    """ILSGAN (Zou et al. 2023) eq. (4), L_m: ``E[max(0, eta - ||m||_1 / (H W))]``.

    Penalises masks smaller than the tolerable minimal area `eta` (the ILSGAN code's
    ``min_msize = 0.25``). Accepts ``[B, H, W, 1]`` or ``[B, L, H, W, 1]`` (mean over layers).
    """
    mask = _check_mask(mask, "mask")
    checks.check_fraction(eta, "eta", 0.0, 1.0)
    area = tf.reduce_mean(mask, axis=[-3, -2, -1])
    hinge = tf.nn.relu(tf.cast(eta, mask.dtype) - area)
    per_example = hinge if hinge.shape.rank == 1 else tf.reduce_mean(hinge, axis=1)
    return _reduce(per_example, reduction)


def binarization_loss(mask, reduction: str = "mean"):
    """ILSGAN (Zou et al. 2023) eq. (4), L_b: ``E[1/(H W) sum_u min(m_u, 1 - m_u)]``.

    Zero exactly for binary masks, largest (0.5) for m = 0.5 everywhere.
    """
    mask = _check_mask(mask, "mask")
    return _reduce(_per_example_mean(tf.minimum(mask, 1.0 - mask)), reduction)


def r1_penalty(discriminator, real_images, training: bool = True, reduction: str = "mean"):
    """R1 gradient penalty (Mescheder et al. 2018), ILSGAN eq. (5): ``E_x ||∇_x D(x)||^2``.

    Returns the plain expectation of the squared gradient norm of D's output (logit, summed
    over patch outputs) with respect to the real images. Mescheder's ``R1 = γ/2 E||∇D||^2``:
    the caller multiplies by ``γ / 2`` (as StyleGAN2-ADA / the ILSGAN code do with
    ``r1_gamma``). The gradient is computed with an inner `tf.GradientTape`, so an outer tape
    over D's weights gets the second-order gradient.

    Args:
        discriminator: callable ``D(images, training=...)`` returning logits (call it with
            ``training=True``: spectral normalisation only normalises then, DESIGN.md 4).
        real_images: float ``[B, H, W, C]``.
        training: forwarded to D.
        reduction: ``"mean"`` or ``"none"`` (``[B]``).
    """
    if not callable(discriminator):
        raise TypeError(
            f"discriminator: expected a callable model, got {type(discriminator).__name__}"
        )
    real_images = checks.to_float_tensor(real_images, "real_images")
    checks.check_rank(real_images, "real_images", 4, "[B, H, W, C]")
    with tf.GradientTape() as tape:
        tape.watch(real_images)
        scores = discriminator(real_images, training=training)
        total = tf.reduce_sum(scores)
    grads = tape.gradient(total, real_images)
    if grads is None:
        raise ValueError("discriminator: its output does not depend on real_images (no gradient)")
    return _reduce(_per_example_sum(tf.square(grads)), reduction)


def _club_terms(x, y, permutation, distribution, pixel_reduction):
    """Per-sample CLUB terms ``-d(x_i, y_i) + d(x_{k_i}, y_i)`` (ILSGAN eq. 9).

    x plays b (the variable whose conditional q(b|f) is modelled), y plays f (the condition);
    negatives pair the condition of sample i with x of sample k_i.
    Laplace q(b|f) = L(b; f, I): d = ||b - f||_1. Gaussian q = N(b; f, I): d = 1/2 ||b - f||^2.
    """
    if distribution == "laplace":
        dist = tf.abs
    else:

        def dist(t):
            return 0.5 * tf.square(t)

    x_neg = tf.gather(x, permutation, axis=0)
    reduce = _per_example_mean if pixel_reduction == "mean" else _per_example_sum
    positive = reduce(dist(x - y))
    negative = reduce(dist(x_neg - y))
    return -positive + negative


def _check_layers(fg, bg, mask):
    """Validated float tensors `fg, bg [B, H, W, C]` and `mask [B, H, W, 1]` in [0, 1]."""
    fg = checks.to_float_tensor(fg, "fg")
    bg = checks.to_float_tensor(bg, "bg", dtype=fg.dtype)
    mask = checks.to_float_tensor(mask, "mask", dtype=fg.dtype)
    checks.check_rank(fg, "fg", 4, "[B, H, W, C]")
    checks.check_rank(bg, "bg", 4, "[B, H, W, C]")
    checks.check_rank(mask, "mask", 4, "[B, H, W, 1]")
    checks.check_same_shape(fg, bg, "fg", "bg")
    checks.check_channels(mask, "mask", 1, what="1 channel in the last dimension")
    checks.check_same_shape(fg, mask, "fg", "mask", axes=(0, 1, 2))
    checks.check_range(mask, "mask", 0.0, 1.0)
    return fg, bg, mask


def separate_regions(fg, bg, mask, optimize_visible: bool = True, optimize_mask: bool = True):
    """ILSGAN (Zou et al. 2023) eq. (10): the visible and invisible regions of the two layers,
    ``f_vis = f m``, ``f_inv = f (1 - m)``, ``b_vis = b (1 - m)``, ``b_inv = b m``.

    Returns ``(f_vis, f_inv, b_vis, b_inv)``. Table 3 switches: ``optimize_mask=False`` stops
    the gradient to ``m`` (row D); ``optimize_visible=False`` stops it through ``f_vis`` and
    ``b_vis`` (row C).
    """
    m = mask if optimize_mask else tf.stop_gradient(mask)
    f_vis, f_inv = fg * m, fg * (1.0 - m)
    b_vis, b_inv = bg * (1.0 - m), bg * m
    if not optimize_visible:
        f_vis, b_vis = tf.stop_gradient(f_vis), tf.stop_gradient(b_vis)
    return f_vis, f_inv, b_vis, b_inv


def ils_mi_loss(
    fg,
    bg,
    mask,
    separate: bool = True,
    optimize_visible: bool = True,
    optimize_mask: bool = True,
    distribution: str = "laplace",
    seed=None,
    pixel_reduction: str = "mean",
    permutation=None,
    reduction: str = "mean",
    return_terms: bool = False,
):
    """ILS-MI loss of ILSGAN (Zou et al. 2023), eqs. (7)-(12).

    CLUB upper bound of mutual information (eq. 7) with a fixed Laplace variational
    distribution ``q(b|f) = L(b; f, I) ∝ exp(-||b - f||_1)`` (eq. 8) and its N-sample
    estimate (eq. 9)
    ``Î_VC(b, f) = 1/N sum_i [ -||b^(i) - f^(i)||_1 + ||b^(k_i) - f^(i)||_1 ]``,
    with the negatives ``k_i`` a random permutation of the batch (as the ILSGAN code's
    ``torch.randperm``; the paper says "uniformly sampled index").

    With ``separate=True`` (default, eqs. 10-12) the layers are split by visibility,
    ``f_vis = f m``, ``f_inv = f (1 - m)``, ``b_vis = b (1 - m)``, ``b_inv = b m``, and
    ``L = Î_VC(b_inv; f_vis) + Î_VC(b_vis; f_inv)`` (eq. 12). With ``separate=False`` it is
    ``Î_VC(b; f)`` of the whole layers (Table 3 row E).

    Ablation switches (Table 3):
        optimize_visible=False: stop gradients through ``f_vis`` and ``b_vis`` (row C).
        optimize_mask=False: stop gradients to ``m`` (row D).
        distribution="gaussian": ``q = N(b; f, I)``, i.e. ``1/2 ||b - f||_2^2`` (row F).

    Args:
        fg: foreground layer f, float ``[B, H, W, C]``.
        bg: background layer b, float ``[B, H, W, C]``.
        mask: m, float ``[B, H, W, 1]`` in [0, 1] (the unperturbed generator outputs: the
            ILSGAN code computes ILS on the layers before the perturbation T).
        separate, optimize_visible, optimize_mask, distribution: see above.
        seed: draws the permutation (None, int, shape-[2] tensor or SeedGenerator; an int
            gives the same permutation on every call, so models pass a SeedGenerator).
        pixel_reduction: ``"mean"`` (default, the ILSGAN code's ``scale='do_mean'``: the norm
            divided by the number of elements, which keeps ``λ_ils`` resolution independent)
            or ``"sum"`` (the paper's literal ``||.||_1``).
        permutation: optional explicit ``[B]`` int permutation (then `seed` is unused).
        reduction: ``"mean"`` (scalar estimate) or ``"none"`` (``[B]`` per-sample terms).
        return_terms: also return a dict with the two separate estimates
            (``"inv_vis"`` = Î(b_inv; f_vis), ``"vis_inv"`` = Î(b_vis; f_inv)) or ``"whole"``.

    Returns:
        The loss (to be minimised, weight λ_ils), and the terms dict if asked.

    Note: with ``separate=True`` the estimate is positive even for independent f and b when
    masks vary across the batch (the mask itself is shared by b_inv and f_vis, so it is a
    dependence the estimator sees); it is ~0 for independent layers with a common mask.
    """
    fg, bg, mask = _check_layers(fg, bg, mask)
    checks.check_finite(fg, "fg")
    checks.check_finite(bg, "bg")
    for flag, flag_name in (
        (separate, "separate"),
        (optimize_visible, "optimize_visible"),
        (optimize_mask, "optimize_mask"),
        (return_terms, "return_terms"),
    ):
        checks.check_bool(flag, flag_name)
    checks.check_choice(distribution, "distribution", ("laplace", "gaussian"))
    checks.check_choice(pixel_reduction, "pixel_reduction", ("mean", "sum"))
    checks.check_choice(reduction, "reduction", ("mean", "none"))
    batch = tf.shape(fg)[0]
    if permutation is None:
        _random.check_seed(seed)
        permutation = _random.permutation(batch, seed=seed)
    else:
        permutation = tf.convert_to_tensor(permutation)
        if permutation.dtype not in (tf.int32, tf.int64):
            raise TypeError(
                f"permutation: expected integer indices, got dtype {permutation.dtype.name}"
            )
        checks.check_rank(permutation, "permutation", 1, "[B]")
        checks.check_same_shape(fg, permutation, "fg", "permutation", axes=(0,))
    if separate:
        f_vis, f_inv, b_vis, b_inv = separate_regions(fg, bg, mask, optimize_visible, optimize_mask)
        inv_vis = _club_terms(b_inv, f_vis, permutation, distribution, pixel_reduction)
        vis_inv = _club_terms(b_vis, f_inv, permutation, distribution, pixel_reduction)
        # eq. (12) permutes the background part in both terms (b_inv^(k_i), b_vis^(k_j));
        # the ILSGAN code permutes f_inv in the second one. With a permutation k the sum
        # sum_i ||x^(k_i) - y^(i)|| equals sum_j ||x^(j) - y^(k^-1_j)||, so the two agree
        # exactly in the mean (k^-1 is as uniform as k); only the per-sample terms differ.
        per_sample = inv_vis + vis_inv
        terms = {"inv_vis": tf.reduce_mean(inv_vis), "vis_inv": tf.reduce_mean(vis_inv)}
    else:
        per_sample = _club_terms(bg, fg, permutation, distribution, pixel_reduction)
        terms = {"whole": tf.reduce_mean(per_sample)}
    loss = tf.reduce_mean(per_sample) if reduction == "mean" else per_sample
    return (loss, terms) if return_terms else loss


def ils_l1_loss(
    fg,
    bg,
    mask,
    pixel_reduction: str = "mean",
    optimize_visible: bool = True,
    reduction: str = "mean",
    optimize_mask=None,
):
    """ILS-L1 loss of ILSGAN (Zou et al. 2023), eq. (13):
    ``L = -||b_inv - f_vis||_1 - ||b_vis - f_inv||_1`` (with the regions of eq. 10).

    Maximises the visual difference between the two layers inside and outside the mask.
    ``pixel_reduction="mean"`` divides each norm by the number of elements (the ILSGAN code's
    ``.mean()``); ``"sum"`` is the literal norm.

    Note: for m in [0, 1], ``|m (b - f)| + |(1 - m)(b - f)| = |b - f|``, so eq. (13) does not
    depend on the mask at all: it pushes f and b apart everywhere and sends *no gradient to
    the mask* (unlike ILS-MI). ``optimize_visible=False`` is the ILSGAN code's
    ``estimator='l1_distance'`` variant: ``f_vis``, ``b_vis`` and the mask are constants, so only
    the invisible parts (``b`` under the mask, ``f`` outside it) are pushed away from what
    is visible there. ``optimize_mask`` (default: the value of ``optimize_visible``) stops the
    gradient to the mask on its own (the Table 3 switches of `separate_regions`).
    """
    fg, bg, mask = _check_layers(fg, bg, mask)
    checks.check_choice(pixel_reduction, "pixel_reduction", ("mean", "sum"))
    checks.check_bool(optimize_visible, "optimize_visible")
    optimize_mask = (
        optimize_visible
        if optimize_mask is None
        else checks.check_bool(optimize_mask, "optimize_mask")
    )
    f_vis, f_inv, b_vis, b_inv = separate_regions(fg, bg, mask, optimize_visible, optimize_mask)
    red = _per_example_mean if pixel_reduction == "mean" else _per_example_sum
    per_example = -red(tf.abs(b_inv - f_vis)) - red(tf.abs(b_vis - f_inv))
    return _reduce(per_example, reduction)


def infogan_information_loss(z, z_pred, reduction: str = "mean"):
    """InfoGAN information term for continuous codes (Chen et al. 2016), Dai's β term.

    With a factorised Gaussian ``Q(z|x) = N(z; z_pred, σ² I)`` of fixed σ, ``-log Q`` is
    ``||z - z_pred||² / (2σ²)`` plus a constant; we return the mean squared error
    ``mean_d (z_d - z_pred_d)²`` per example (σ² = 1/2 per dimension, averaged over the d
    dimensions so that β does not depend on dim(z)). Minimising it maximises the variational
    lower bound of I(z; G(z)). Dai et al. 2019 weight it by β = 50 (Table 4).

    Args:
        z: the codes fed to the generator, ``[B, d]`` or ``[B, L, d]`` (one code per layer).
        z_pred: Q's prediction, same shape.
        reduction: ``"mean"`` or ``"none"`` (``[B]``).
    """
    z = checks.to_float_tensor(z, "z")
    z_pred = checks.to_float_tensor(z_pred, "z_pred", dtype=z.dtype)
    checks.check_rank(z, "z", (2, 3), "[B, d] or [B, L, d]")
    checks.check_same_shape(z, z_pred, "z", "z_pred")
    checks.check_finite(z_pred, "z_pred")
    return _reduce(_per_example_mean(tf.square(z - z_pred)), reduction)


def smooth_l1(x):
    """Dai et al. 2019 (appendix) eq. (8): ``4 x^2`` if ``|x| < 0.25`` else ``|x|``, elementwise.

    Continuous at |x| = 0.25 (both branches give 0.25).
    """
    x = checks.to_float_tensor(x, "x")
    ax = tf.abs(x)
    return tf.where(ax < 0.25, 4.0 * tf.square(x), ax)


def smooth_l1_loss(target, pred, reduction: str = "mean"):
    """Distillation loss of Dai et al. 2019: mean over pixels of ``smooth_l1(pred - target)``.

    Args:
        target: the teacher's masks, ``[B, H, W, 1]``.
        pred: the student's masks, same shape.
    """
    target = checks.to_float_tensor(target, "target")
    pred = checks.to_float_tensor(pred, "pred", dtype=target.dtype)
    checks.check_rank(target, "target", (2, 3, 4), "[B, H, W, 1]")
    checks.check_same_shape(target, pred, "target", "pred")
    return _reduce(_per_example_mean(smooth_l1(pred - target)), reduction)
