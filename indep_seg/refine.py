"""Boundary refinement of a mask given without a box: GrabCut started from the network's own
confidence.

A box-free segmenter (ILSGAN's post-hoc UNet, Zou et al. 2023 §3.4) answers soft masks whose
outline is as coarse as the generator that taught it (32-64 px). Refinement at inference is not
in the paper; it is the boundary refinement that mask-from-box methods apply (GrabCut, Rother et
al. 2004; dense CRF), here without a box: the pixels the network is sure of hold GrabCut's colour
models fixed, and GrabCut decides the uncertain band between them on the image's colour edges.
Boxed masks are refined by `indep_seg.box_prior.refine_full_mask`; `refine_mask` chooses between
the two for `indep-seg segment --refine grabcut` and `Segmenter.predict(refine="grabcut")`.
"""

from __future__ import annotations

import numpy as np

from indep_seg.box_prior import (
    PRIOR_COLOUR,
    grabcut_image,
    refine_full_mask,
    stretch_low_range,
)

__all__ = ["CONFIDENT", "REFINE_MAX_SIDE", "confidence_trimap", "refine_unboxed", "refine_mask"]

#: A soft mask is taken as certain where it is within CONFIDENT of 0 or 1 (GrabCut's definite
#: background / foreground); elsewhere probable, split at 0.5. Chosen on the tuning half
#: horse001-164 among 0.02, 0.05, 0.1 and 0.2 (0.700 / 0.702 / 0.684 / 0.651 against 0.591
#: unrefined, session 12's 60-minute ILSGAN; `benchmarks/study_ilsgan_refine.py`, README ILSGAN).
CONFIDENT = 0.05
#: GrabCut runs on the image shrunk to at most this many pixels a side (and the mask scaled back):
#: seconds become tens of milliseconds on photos of a few megapixels.
REFINE_MAX_SIDE = 256


def confidence_trimap(mask, confident=CONFIDENT):
    """GrabCut's start (OpenCV's `GC_*` labels, uint8 `[H, W]`) from a soft mask in [0, 1]:
    definite foreground where `mask > 1 - confident`, definite background where
    `mask < confident`, probable foreground / background where the rest is above / below 0.5."""
    import cv2

    m = np.asarray(mask, np.float32)
    if not 0.0 < confident < 0.5:
        raise ValueError(f"confident: expected a value in (0, 0.5), got {confident!r}")
    trimap = np.where(m > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    trimap[m < confident] = cv2.GC_BGD
    trimap[m > 1.0 - confident] = cv2.GC_FGD
    return trimap


def refine_unboxed(
    image,
    mask,
    confident=CONFIDENT,
    iterations=5,
    colour=PRIOR_COLOUR,
    max_side=REFINE_MAX_SIDE,
):
    """A soft mask of a whole image refined on the image's colour edges: GrabCut (colour models
    in `colour`, a low-range image stretched: both as the box prior's, `stretch_low_range`) from
    `confidence_trimap(mask, confident)`.

    The answer is the network's mask unchanged where GrabCut has nothing to decide (no uncertain
    pixel, or no certain pixel of one side) or cannot run, and where its mask is empty or covers
    the whole image (under 0.5 % or over 99.5 % of it); otherwise the refined binary mask (soft
    only along its outline when the image was shrunk to `max_side`). Returns float32 `[H, W]`.

    Args:
        image: `[H, W, 3]` uint8, or float in [0, 1].
        mask: `[H, W]` soft mask in [0, 1] of the same image.
    """
    import cv2

    image = np.asarray(image)
    m = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != m.shape:
        raise ValueError(
            f"refine_unboxed: expected an [H, W, 3] image and an [H, W] mask, got "
            f"{image.shape} and {m.shape}"
        )
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h, w = m.shape
    scale = min(1.0, max_side / max(h, w))
    small = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))
    img, ms = image, m
    if scale < 1.0:
        img = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        ms = cv2.resize(m, small, interpolation=cv2.INTER_AREA)
    img = stretch_low_range(img)  # a dark or hazy photo, as the box prior's window
    trimap = confidence_trimap(ms, confident)
    fg = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
    certain = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_BGD)
    if certain.all() or fg.all() or not fg.any():
        return m
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means start: same image, same mask
    try:
        cv2.grabCut(
            grabcut_image(img, colour), trimap, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK
        )
    except cv2.error:
        return m
    out = ((trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)).astype(np.float32)
    if not 0.005 <= out.mean() <= 0.995:
        return m
    if scale < 1.0:
        out = np.clip(cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    return out


def refine_mask(image, mask, box=None):
    """The refinement of `indep-seg segment --refine grabcut` (and `Segmenter.predict`'s): a mask
    of a boxed photo in its box (`indep_seg.box_prior.refine_full_mask`), of a photo given without a
    box from the network's confidence (`refine_unboxed`). Float32 `[H, W]`."""
    return refine_unboxed(image, mask) if box is None else refine_full_mask(image, mask, box)
