"""Alpha composition of independent layers.

- `composite`: the two-layer composition of ILSGAN (Zou et al. 2023, eq. 1)
  ``x = m * f + (1 - m) * b``.
- `composite_layers`: the recursive N-layer composition of Dai et al. 2019, eq. (5)
  ``x_i = I_i * m_i + x_{i-1} * (1 - m_i)``, ``x_0`` a pure black image (or a given
  background), applied in stacking order: layer 0 is at the bottom, layer L-1 on top.

Layers are RGBA: the first C channels are the appearance ``I_i`` and the last channel is the
soft mask ``m_i`` (alpha). Images are float NHWC; values are expected in [0, 1]
(checked for eager inputs only).
"""

from __future__ import annotations

import tensorflow as tf

from indep_seg import checks

__all__ = ["composite", "composite_layers", "split_rgba"]


def composite(fg, mask, bg, unit_range: bool = True):
    """Two-layer alpha composition, ILSGAN (Zou et al. 2023) eq. (1): ``x = m f + (1 - m) b``.

    Args:
        fg: foreground appearance ``f``, float ``[B, H, W, C]`` (or ``[H, W, C]``) in [0, 1].
        mask: foreground mask ``m``, float ``[B, H, W, 1]`` (or ``[H, W, 1]``) in [0, 1];
            a mask with C channels is also accepted (per-channel alpha).
        bg: background ``b``, float with the same shape as `fg`.
        unit_range: check (eager inputs) that `fg` and `bg` lie in [0, 1]; False for generators
            whose linear RGB outputs may leave it (ILSGAN's StyleGAN2 layers are not clipped).

    Returns:
        The composite ``x``, same shape and dtype as `fg`.

    Raises:
        TypeError / ValueError naming the argument on a wrong dtype, rank, channel count,
        spatial size or (eager inputs) value range.
    """
    fg = checks.to_float_tensor(fg, "fg")
    mask = checks.to_float_tensor(mask, "mask", dtype=fg.dtype)
    bg = checks.to_float_tensor(bg, "bg", dtype=fg.dtype)
    checks.check_rank(fg, "fg", (3, 4), "[B, H, W, C] or [H, W, C]")
    checks.check_rank(mask, "mask", fg.shape.rank, f"rank {fg.shape.rank} like fg")
    checks.check_rank(bg, "bg", fg.shape.rank, f"rank {fg.shape.rank} like fg")
    checks.check_same_shape(fg, bg, "fg", "bg")
    checks.check_same_shape(fg, mask, "fg", "mask", axes=range(fg.shape.rank - 1))
    c = fg.shape[-1]
    checks.check_channels(
        mask,
        "mask",
        (1,) if c in (None, 1) else (1, c),
        what=f"1 (or {c}) channel(s) in the last dimension" if c else None,
    )
    checks.check_range(mask, "mask", 0.0, 1.0)
    if unit_range:
        checks.check_range(fg, "fg", 0.0, 1.0)
        checks.check_range(bg, "bg", 0.0, 1.0)
    return mask * fg + (1.0 - mask) * bg


def split_rgba(layers):
    """Split RGBA layers ``[..., C + 1]`` into appearance ``[..., C]`` and alpha ``[..., 1]``."""
    layers = checks.to_float_tensor(layers, "layers")
    checks.check_channels(
        layers,
        "layers",
        min_channels=2,
        what="at least 2 channels (appearance then alpha) in the last dimension",
    )
    return layers[..., :-1], layers[..., -1:]


def composite_layers(layers, background=None, return_layers: bool = False):
    """N-layer recursive alpha blending, Dai et al. 2019, eq. (5).

    ``x_i = I_i * m_i + x_{i-1} * (1 - m_i)`` for i = 1..L, with ``x_0`` pure black
    (Dai: "x_0 is set to be a pure black image") or `background` when given. Layer index 0
    of `layers` is composited first (bottom), index L-1 last (top).

    Args:
        layers: RGBA layers, float ``[B, L, H, W, C + 1]`` in [0, 1] (usually C = 3: RGB then
            alpha). These are the already warped layers ``(Î_i, m̂_i)`` of eq. (4).
        background: optional ``x_0``, float ``[B, H, W, C]`` (or ``[1, H, W, C]`` /
            ``[H, W, C]``, broadcast over the batch) in [0, 1]. Default: black.
        return_layers: also return a dict of per-layer tensors, useful for figures and counting:
            - ``"partial"``: ``[B, L, H, W, C]``, the partial composites ``x_1 .. x_L``;
            - ``"carved"``: ``[B, L, H, W, C]``, the carved instances ``I_i * m_i``;
            - ``"visibility"``: ``[B, L, H, W, 1]``, the weight of layer i in the final image,
              ``m_i * prod_{j > i} (1 - m_j)`` (what is left visible after occlusion by the
              layers above). By construction
              ``x_L = sum_i visibility_i * I_i + prod_i (1 - m_i) * x_0``.

    Returns:
        ``x_L``, float ``[B, H, W, C]``; with ``return_layers=True`` the tuple
        ``(x_L, dict)``.
    """
    layers = checks.to_float_tensor(layers, "layers")
    checks.check_rank(layers, "layers", 5, "[B, L, H, W, C + 1] (a stack of RGBA layers)")
    checks.check_channels(
        layers,
        "layers",
        min_channels=2,
        what="at least 2 channels (appearance then alpha) in the last dimension",
    )
    checks.check_range(layers, "layers", 0.0, 1.0)
    num_layers = layers.shape[1]
    if num_layers is None:
        raise ValueError(
            "layers: expected a static number of layers L in [B, L, H, W, C + 1], got None"
        )
    if num_layers < 1:
        raise ValueError("layers: expected at least one layer, got L = 0")
    appearance, alpha = layers[..., :-1], layers[..., -1:]
    if background is None:
        x = tf.zeros_like(appearance[:, 0])
    else:
        background = checks.to_float_tensor(background, "background", dtype=layers.dtype)
        checks.check_rank(background, "background", (3, 4), "[B, H, W, C] or [H, W, C]")
        if background.shape.rank == 3:
            background = background[None]
        checks.check_same_shape(
            appearance[:, 0],
            background,
            "layers (appearance of one layer)",
            "background",
            axes=(1, 2, 3),
        )
        checks.check_broadcastable_batch(layers, background, "layers", "background")
        checks.check_range(background, "background", 0.0, 1.0)
        x = background + tf.zeros_like(appearance[:, 0])
    partial, carved = [], []
    for i in range(num_layers):
        image_i, m_i = appearance[:, i], alpha[:, i]
        carved_i = image_i * m_i
        x = carved_i + x * (1.0 - m_i)  # Dai et al. 2019, eq. (5)
        partial.append(x)
        carved.append(carved_i)
    if not return_layers:
        return x
    # visibility_i = m_i * prod_{j>i} (1 - m_j), as a running product from the top layer down
    # (tf.math.cumprod's gradient divides by its input and is NaN where a mask is exactly 1).
    visibility = [None] * num_layers
    transmit = tf.ones_like(alpha[:, 0])
    for i in reversed(range(num_layers)):
        visibility[i] = alpha[:, i] * transmit
        transmit = transmit * (1.0 - alpha[:, i])
    extras = {
        "partial": tf.stack(partial, axis=1),
        "carved": tf.stack(carved, axis=1),
        "visibility": tf.stack(visibility, axis=1),
    }
    return x, extras
