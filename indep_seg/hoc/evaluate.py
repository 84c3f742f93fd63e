"""Unsupervised checks of learned instance masks (used by training logs and the benchmark)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mask_statistics"]


def mask_statistics(masks, pixel_scale: float = 1.0, threshold: float = 0.5, dominant: float = 0.9):
    """Per-mask connected-component statistics of sampled layer masks.

    Args:
        masks: ``[K, R, R]`` or ``[K, R, R, 1]`` soft masks in [0, 1] (the generator's, before
        layout).
        pixel_scale: full-resolution pixels per mask pixel (``(window / resolution) ** 2``), so that
            areas compare with the image's instances.
        threshold: binarisation threshold.
        dominant: a mask "holds one object" when its largest 8-connected component has at least this
            fraction of its foreground pixels (and it is not empty).

    Returns dict: ``one_object_fraction``, ``empty_fraction``, ``median_area`` (largest component,
    full-resolution px, over non-empty masks), ``mean_soft_area`` (px), ``areas`` (list).
    """
    m = np.asarray(masks, np.float32)
    if m.ndim == 4:
        m = m[..., 0]
    if m.ndim != 3:
        raise ValueError(f"masks: expected [K, R, R] or [K, R, R, 1], got shape {np.shape(masks)}")
    one, empty, areas = 0, 0, []
    for mk in m:
        b = mk > threshold
        total = int(b.sum())
        if total == 0:
            empty += 1
            continue
        lab, k = ndimage.label(b, structure=np.ones((3, 3), bool))
        sizes = np.bincount(lab.ravel())[1:]
        big = int(sizes.max())
        areas.append(big * pixel_scale)
        if big >= dominant * total:
            one += 1
    k = len(m)
    return {
        "one_object_fraction": one / k if k else 0.0,
        "empty_fraction": empty / k if k else 0.0,
        "median_area": float(np.median(areas)) if areas else 0.0,
        "mean_soft_area": float(m.sum((1, 2)).mean() * pixel_scale) if k else 0.0,
        "areas": [float(x) for x in areas],
    }
