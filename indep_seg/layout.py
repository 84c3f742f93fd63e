"""Layout module: geometric warps applied to RGBA layers before composition.

- `spatial_transformer`: Dai et al. 2019, eq. (4), ``Î_i = ST(I_i, Δr_i)``,
  ``m̂_i = ST(m_i, Δr_i)``: one affine warp per layer, shared by the appearance and the
  alpha channel (they are warped together as one RGBA tensor), bilinear, zero fill, built on
  `tf.raw_ops.ImageProjectiveTransformV3` (no tensorflow-addons).
- `pad_and_random_crop`: Dai's structure-free layout for one image of a dense homogeneous
  object cluster ("we firstly pad generated images and then randomly crop them into 64 x 64";
  padding 30 / 32 / 26 px): every layer independently.
- `random_shift_perturbation`: the perturbation T of ILSGAN (Zou et al. 2023, eq. 3, after
  Bielski & Favaro 2019): integer shifts of foreground and mask, the same shift for both,
  zero fill; `perturbed_composite` is eq. (3) itself, with the background untouched.
- `integer_translate`: exact, differentiable integer shifts with zero fill (used by the two
  above; gradients flow to every moved pixel).

Coordinates: x is the column, y the row, in pixels; pixel (row i, column j) has its centre at
(x=j, y=i), so the image centre is ((W-1)/2, (H-1)/2).
"""

from __future__ import annotations

import tensorflow as tf

from indep_seg import _random, checks
from indep_seg.composition import composite

__all__ = [
    "affine_to_projective",
    "spatial_transformer",
    "integer_translate",
    "pad_and_random_crop",
    "shifts_from_uniform",
    "random_shift_perturbation",
    "perturbed_composite",
]


def _flatten_layers(images, name):
    """[B, H, W, C] -> itself; [B, L, H, W, C] -> [B*L, H, W, C] plus a function to undo it."""
    checks.check_rank(images, name, (4, 5), "[B, H, W, C] or [B, L, H, W, C]")
    if images.shape.rank == 4:
        return images, (lambda t: t)
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))
    static = images.shape

    def unflatten(t):
        return tf.ensure_shape(tf.reshape(t, shape), static)

    return flat, unflatten


def affine_to_projective(
    theta, height, width, absolute: bool = False, translation_units: str = "pixels"
):
    """Layout parameters -> the 8-vector of `ImageProjectiveTransformV3` (output -> input map).

    `theta` is ``[N, 6]`` (or ``[N, 2, 3]``) ``(d0, d1, d2, d3, d4, d5)`` describing the
    *forward* warp of the layer's content about the image centre ``c``:
    ``p_out - c = A (p_in - c) + t`` with ``A = I + [[d0, d1], [d3, d4]]`` and
    ``t = (d2, d5)`` (x then y). So ``theta = 0`` is the identity (Dai's "Δr_i = 0") and
    ``(0, 0, tx, 0, 0, ty)`` moves the content right by tx and down by ty. With
    ``absolute=True`` theta is the full matrix ``[[a00, a01, tx], [a10, a11, ty]]``
    (identity ``(1, 0, 0, 0, 1, 0)``). ``translation_units="fraction"`` reads tx, ty as
    fractions of the width / height.
    """
    theta = tf.reshape(tf.cast(theta, tf.float32), [-1, 6])
    d0, d1, d2, d3, d4, d5 = tf.unstack(theta, axis=1)
    if absolute:
        a00, a01, a10, a11 = d0, d1, d3, d4
    else:
        a00, a01, a10, a11 = 1.0 + d0, d1, d3, 1.0 + d4
    w = tf.cast(width, tf.float32)
    h = tf.cast(height, tf.float32)
    tx, ty = d2, d5
    if translation_units == "fraction":
        tx, ty = tx * w, ty * h
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    # p_in = c + A^-1 (p_out - c - t)
    ux, uy = cx + tx, cy + ty
    b0 = cx - (i00 * ux + i01 * uy)
    b1 = cy - (i10 * ux + i11 * uy)
    zeros = tf.zeros_like(d0)
    return tf.stack([i00, i01, b0, i10, i11, b1, zeros, zeros], axis=1)


def spatial_transformer(
    layers,
    theta,
    interpolation: str = "bilinear",
    fill_value: float = 0.0,
    absolute: bool = False,
    translation_units: str = "pixels",
):
    """Affine spatial-transformer warp ``ST(I, Δr)`` of Dai et al. 2019, eq. (4).

    The same warp is applied to all channels of a layer (appearance and alpha together), so
    ``Î_i = ST(I_i, Δr_i)`` and ``m̂_i = ST(m_i, Δr_i)`` share Δr_i as the paper requires.

    Args:
        layers: float ``[B, H, W, C]`` (one warp per image) or ``[B, L, H, W, C]`` (one warp
            per layer), usually RGBA.
        theta: layout parameters Δr, float ``[B, 6]`` / ``[B, 2, 3]`` for 4-D `layers`,
            ``[B, L, 6]`` / ``[B, L, 2, 3]`` for 5-D ones. Meaning: see `affine_to_projective`
            (zero = identity; translations in pixels, +x right, +y down, rotation/scale
            about the image centre).
        interpolation: ``"bilinear"`` (default) or ``"nearest"``.
        fill_value: value of the pixels that come from outside the layer (default 0: a
            transparent, black border).
        absolute: read `theta` as the full affine matrix instead of a delta from identity.
        translation_units: ``"pixels"`` (default) or ``"fraction"`` of width / height.

    Returns:
        The warped layers, same shape and dtype as `layers`.

    Gradients flow to `layers` through TF's registered gradient of the op (a warp by the
    inverse transform: exact for translations, the usual approximation otherwise). There is
    no gradient with respect to `theta` (Dai samples Δr, it is not learned).
    """
    layers = checks.to_float_tensor(layers, "layers")
    checks.check_choice(interpolation, "interpolation", ("bilinear", "nearest"))
    checks.check_choice(translation_units, "translation_units", ("pixels", "fraction"))
    checks.check_rank(layers, "layers", (4, 5), "[B, H, W, C] or [B, L, H, W, C]")
    theta = checks.to_float_tensor(theta, "theta", dtype=tf.float32)
    lead = layers.shape.rank - 3  # 1 for [B,H,W,C], 2 for [B,L,H,W,C]
    checks.check_rank(
        theta,
        "theta",
        (lead + 1, lead + 2),
        "[B, 6] or [B, 2, 3]" if lead == 1 else "[B, L, 6] or [B, L, 2, 3]",
    )
    if theta.shape.rank == lead + 1:
        checks.check_channels(theta, "theta", 6, what="6 affine parameters in the last dimension")
    else:
        if theta.shape[-2:].as_list() not in ([2, 3], [None, 3], [2, None], [None, None]):
            raise ValueError(
                f"theta: expected [..., 2, 3] affine matrices, got shape {theta.shape}"
            )
    checks.check_same_shape(layers, theta, "layers", "theta", axes=range(lead))
    checks.check_finite(theta, "theta")
    if checks.is_eager(theta):
        mat = tf.reshape(theta, [-1, 6]).numpy()
        a00 = mat[:, 0] + (0.0 if absolute else 1.0)
        a11 = mat[:, 4] + (0.0 if absolute else 1.0)
        det = a00 * a11 - mat[:, 1] * mat[:, 3]
        if (abs(det) < 1e-6).any():
            raise ValueError(
                f"theta: expected invertible affine warps, got a determinant of "
                f"{float(det[abs(det) < 1e-6][0]):.3g}"
            )
    flat, unflatten = _flatten_layers(layers, "layers")
    shape = tf.shape(flat)
    h, w = shape[1], shape[2]
    transforms = affine_to_projective(
        theta, h, w, absolute=absolute, translation_units=translation_units
    )
    dtype = flat.dtype
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(flat, tf.float32) if dtype != tf.float32 else flat,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=tf.cast(fill_value, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode="CONSTANT",
    )
    warped = tf.ensure_shape(warped, flat.shape)
    if dtype != tf.float32:
        warped = tf.cast(warped, dtype)
    return unflatten(warped)


def integer_translate(images, shifts):
    """Shift every image by an integer ``(dx, dy)`` with zero fill, exactly and differentiably.

    ``out[n, y, x] = images[n, y - dy_n, x - dx_n]`` (zero where that leaves the image):
    positive dx moves the content right, positive dy moves it down.

    Args:
        images: float ``[N, H, W, C]`` or ``[N, L, H, W, C]`` (one shift per layer).
        shifts: integer ``[N, 2]`` (resp. ``[N, L, 2]``), ``(dx, dy)``.
    """
    images = checks.to_float_tensor(images, "images")
    checks.check_rank(images, "images", (4, 5), "[N, H, W, C] or [N, L, H, W, C]")
    shifts = tf.convert_to_tensor(shifts)
    if shifts.dtype not in (tf.int32, tf.int64):
        raise TypeError(
            f"shifts: expected an integer tensor of (dx, dy), got dtype {shifts.dtype.name}"
        )
    lead = images.shape.rank - 3
    checks.check_rank(shifts, "shifts", lead + 1, "[N, 2]" if lead == 1 else "[N, L, 2]")
    checks.check_channels(shifts, "shifts", 2, what="(dx, dy) in the last dimension")
    checks.check_same_shape(images, shifts, "images", "shifts", axes=range(lead))
    flat, unflatten = _flatten_layers(images, "images")
    shifts = tf.reshape(tf.cast(shifts, tf.int32), [-1, 2])
    shape = tf.shape(flat)
    h, w = shape[1], shape[2]
    dx, dy = shifts[:, 0], shifts[:, 1]
    ys = tf.range(h)[None, :] - dy[:, None]  # [N, H] source rows
    xs = tf.range(w)[None, :] - dx[:, None]  # [N, W] source columns
    valid_y = tf.logical_and(ys >= 0, ys < h)
    valid_x = tf.logical_and(xs >= 0, xs < w)
    out = tf.gather(flat, tf.clip_by_value(ys, 0, h - 1), axis=1, batch_dims=1)
    out = tf.gather(out, tf.clip_by_value(xs, 0, w - 1), axis=2, batch_dims=1)
    valid = tf.logical_and(valid_y[:, :, None], valid_x[:, None, :])[..., None]
    out = out * tf.cast(valid, out.dtype)
    out = tf.ensure_shape(out, flat.shape)
    return unflatten(out)


def pad_and_random_crop(layers, pad, seed=None, return_shifts: bool = False):
    """Dai et al. 2019 layout for DSF-HOC: zero-pad each layer by `pad` px, crop back at random.

    Cropping an ``(H, W)`` window at a uniformly random offset from the padded
    ``(H + 2 pad, W + 2 pad)`` layer is the same as shifting the layer by integers
    ``dx, dy`` uniform in ``[-pad, pad]`` with zero fill, which is how it is computed
    (exact, differentiable, one independent draw per layer).

    Args:
        layers: float ``[B, H, W, C]`` or ``[B, L, H, W, C]`` (each layer independently).
        pad: non-negative int, the padding in pixels (Dai: 30, 32, 26 px at 64 x 64).
        seed: None, int, shape-[2] tensor or `keras.random.SeedGenerator`.
        return_shifts: also return the integer shifts ``(dx, dy)``, ``[B, 2]`` / ``[B, L, 2]``.

    Returns:
        Layers of the same shape (and the shifts if asked).
    """
    layers = checks.to_float_tensor(layers, "layers")
    checks.check_rank(layers, "layers", (4, 5), "[B, H, W, C] or [B, L, H, W, C]")
    pad = checks.check_int(pad, "pad", minimum=0)
    _random.check_seed(seed)
    lead_shape = tf.shape(layers)[: layers.shape.rank - 3]
    shifts = _random.randint(tf.concat([lead_shape, [2]], axis=0), -pad, pad, seed=seed)
    out = integer_translate(layers, shifts)
    return (out, shifts) if return_shifts else out


def _max_shift(max_fraction, size):
    return tf.cast(
        tf.round(tf.cast(max_fraction, tf.float32) * tf.cast(size, tf.float32)), tf.int32
    )


def shifts_from_uniform(u, height, width, max_fraction: float = 0.125):
    """The integer shifts of ILSGAN's T (Zou et al. 2023, eq. 3) from uniform draws `u` in [0, 1).

    ``u`` is float ``[B, 2]``; returns int32 ``[B, 2]`` ``(dx, dy)`` with dx uniform in
    ``[-s_x, s_x]``, ``s_x = round(max_fraction W)`` (dy likewise with H). A model under
    `tf.distribute` draws `u` for the global batch (`indep_seg.distribute.global_batch_draw`)
    and passes its replica's rows here, so the shifts do not depend on the number of replicas.
    """
    sx, sy = _max_shift(max_fraction, width), _max_shift(max_fraction, height)
    span = tf.cast(tf.stack([2 * sx + 1, 2 * sy + 1]), tf.float32)
    k = tf.minimum(tf.floor(tf.cast(u, tf.float32) * span), span - 1.0)
    return tf.cast(k, tf.int32) - tf.stack([sx, sy])[None, :]


def random_shift_perturbation(
    fg, mask, max_fraction: float = 0.125, seed=None, return_shifts: bool = False, shifts=None
):
    """The perturbation T of ILSGAN (Zou et al. 2023, eq. 3; Bielski & Favaro 2019).

    Shifts foreground and mask by the same random integer ``(dx, dy)`` per example, dx uniform
    in ``[-round(max_fraction W), round(max_fraction W)]`` and dy likewise with H (the ILSGAN
    code uses ``xint_max = 0.125``), with zero fill: pixels shifted in from outside get
    ``f = 0`` and ``m = 0``, so the background shows there. The background is not an input:
    it is never moved.

    Args:
        fg: float ``[B, H, W, C]`` foreground appearance.
        mask: float ``[B, H, W, 1]`` foreground mask in [0, 1].
        max_fraction: the largest shift as a fraction of the size, in [0, 1].
        seed: None, int, shape-[2] tensor or `keras.random.SeedGenerator`.
        return_shifts: also return the ``[B, 2]`` int32 shifts ``(dx, dy)``.
        shifts: optional explicit ``[B, 2]`` integer shifts (then nothing is drawn).

    Returns:
        ``(T(fg), T(mask))`` (plus the shifts if asked).
    """
    fg = checks.to_float_tensor(fg, "fg")
    mask = checks.to_float_tensor(mask, "mask", dtype=fg.dtype)
    checks.check_rank(fg, "fg", 4, "[B, H, W, C]")
    checks.check_rank(mask, "mask", 4, "[B, H, W, 1]")
    checks.check_channels(mask, "mask", 1, what="1 channel in the last dimension")
    checks.check_same_shape(fg, mask, "fg", "mask", axes=(0, 1, 2))
    checks.check_range(mask, "mask", 0.0, 1.0)
    checks.check_fraction(max_fraction, "max_fraction", 0.0, 1.0)
    _random.check_seed(seed)
    b = tf.shape(fg)[0]
    h, w = tf.shape(fg)[1], tf.shape(fg)[2]
    if shifts is None:
        shifts = shifts_from_uniform(
            _random.uniform(tf.stack([b, 2]), seed=seed), h, w, max_fraction
        )
    both = integer_translate(tf.concat([fg, mask], axis=-1), shifts)
    fg_t, mask_t = both[..., :-1], both[..., -1:]
    if return_shifts:
        return fg_t, mask_t, tf.convert_to_tensor(shifts)
    return fg_t, mask_t


def perturbed_composite(
    fg,
    mask,
    bg,
    max_fraction: float = 0.125,
    seed=None,
    return_layers: bool = False,
    shifts=None,
    unit_range: bool = True,
):
    """ILSGAN (Zou et al. 2023) eq. (3): ``x = T(m) T(f) + (1 - T(m)) b``.

    `shifts` (optional int ``[B, 2]``) fixes T's shifts (see `random_shift_perturbation`);
    `unit_range` as in `indep_seg.composition.composite`.
    Returns ``x`` or, with ``return_layers=True``, ``(x, T(f), T(m))``.
    """
    bg = checks.to_float_tensor(bg, "bg")
    fg_t, mask_t = random_shift_perturbation(
        fg, mask, max_fraction=max_fraction, seed=seed, shifts=shifts
    )
    x = composite(fg_t, mask_t, bg, unit_range=unit_range)
    return (x, fg_t, mask_t) if return_layers else x
