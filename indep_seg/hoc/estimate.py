"""What the one image says about its instances: window, size, coverage, density, a, layers, padding.

Dai et al. 2019 ("Learning Instance Appearances and Masks From One Image of HOC") fix these by hand
for dense images (window ~1.5 x the widest instance, 64x64 patches, padding 26-32 px, N = 8-12, a
from
Table 4). Real images are often sparser (the DSB2018 nuclei image: ~1 nucleus per window, 20 %
coverage), so every quantity is estimated here from a classical segmentation (Otsu threshold on the
lightly smoothed gray image, a 3x3 opening, connected components) and each can be overridden.
Only the image is used, never labels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from indep_seg import checks

__all__ = [
    "ImageEstimate",
    "otsu_threshold",
    "foreground_components",
    "significant_foreground",
    "instance_contrast_range",
    "half_maximum_areas",
    "estimate_from_image",
    "layers_and_padding",
]


def otsu_threshold(gray) -> float:
    """Otsu's threshold of a gray image with values in [0, 1] (256 bins); returns a value in [0,
    1]."""
    g = np.asarray(gray, dtype=np.float64).ravel()
    if g.size == 0:
        raise ValueError("gray: expected a non-empty image")
    hist, edges = np.histogram(np.clip(g, 0, 1), bins=256, range=(0.0, 1.0))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1e-12)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1])


def _gray(image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a.mean(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"image: expected [H, W] or [H, W, C], got shape {np.shape(image)}")
    return a


def foreground_components(image, smooth_sigma: float = 1.0, min_area: int = 9):
    """Classical baseline: Otsu threshold + 3x3 opening + 8-connected components.

    Returns ``(binary [H, W] bool, labels [H, W] int, areas [K], widths [K])`` where components
    smaller than `min_area` pixels are dropped (noise).
    """
    gray = _gray(image)
    if smooth_sigma > 0:
        gray = ndimage.gaussian_filter(gray, smooth_sigma)
    t = otsu_threshold(gray)
    binary = gray > t
    binary = ndimage.binary_opening(binary, structure=np.ones((3, 3), bool))
    labels, k = ndimage.label(binary, structure=np.ones((3, 3), bool))
    if k == 0:
        return binary, labels, np.zeros(0, np.int64), np.zeros(0, np.int64)
    areas = np.bincount(labels.ravel(), minlength=k + 1)[1:]
    slices = ndimage.find_objects(labels)
    widths = np.array([max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in slices])
    keep = areas >= min_area
    remap = np.zeros(k + 1, np.int64)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = remap[labels]
    binary = labels > 0
    return binary, labels, areas[keep], widths[keep]


def significant_foreground(image, k: float = 3.0, smooth_sigma: float = 1.0) -> np.ndarray:
    """Every pixel that stands out of the background noise: ``g > median_bg + k sd_bg`` on the
    lightly smoothed gray image, united with Otsu's foreground. [H, W] bool.

    median_bg and sd_bg (the MAD of the pixels below Otsu's threshold, x 1.4826) describe the
    background. Otsu's threshold alone sits between the background and the *typical* instance, so
    dim instances and every instance's rim fall below it (on the DSB nuclei image it covers 81 % of
    the nuclei pixels; k = 3 covers 99 %): a background made by filling in only Otsu's foreground
    keeps all of them as ghosts.
    """
    gray = _gray(image)
    if smooth_sigma > 0:
        gray = ndimage.gaussian_filter(gray, smooth_sigma)
    t = otsu_threshold(gray)
    below = gray[gray <= t]
    if below.size == 0:
        return np.ones(gray.shape, bool)
    med = float(np.median(below))
    sd = 1.4826 * float(np.median(np.abs(below - med)))
    return (gray > med + float(k) * sd) | (gray > t)


def instance_contrast_range(image, smooth_sigma: float = 1.0, upper_percentile: float = 99.0):
    """``(low, high)``: the contrast to the background of the faintest instance that should count
    and of the brightest ones, from the image alone.

    With Otsu's threshold t on the lightly smoothed gray image, ``low`` is a quarter of the gap
    between the mean foreground and mean background level (what `centre_targets` calls
    ``min_contrast``) and ``high`` the `upper_percentile` of the Otsu components' mean level minus
    the
    background median. On the DSB nuclei image: (0.060, 0.47); the nuclei's true contrasts run
    from 0.12 (5th percentile) to 0.70 (95th).
    """
    gray = _gray(image)
    if smooth_sigma > 0:
        gray = ndimage.gaussian_filter(gray, smooth_sigma)
    t = otsu_threshold(gray)
    fg, bg = gray[gray > t], gray[gray <= t]
    if fg.size == 0 or bg.size == 0:
        raise ValueError("image: constant image, no instance contrast to measure")
    low = 0.25 * float(fg.mean() - bg.mean())
    _, labels, _, _ = foreground_components(gray, smooth_sigma=0.0)
    k = int(labels.max())
    means = ndimage.mean(gray, labels, np.arange(1, k + 1)) if k else np.array([fg.mean()])
    high = float(np.percentile(np.asarray(means) - np.median(bg), upper_percentile))
    return low, max(high, 2.0 * low)


def half_maximum_areas(image, labels, smooth_sigma: float = 1.0, reach: int = 6):
    """Each component's area at half its height above the background (the full width at half
    maximum of an intensity profile, in 2-D).

    A global Otsu threshold cuts every instance at one level, so a dim instance loses its rim (on
    the DSB2018 nuclei image the Otsu median area is 351 px against 440 in the ground truth; the
    half-maximum median is 428). Here each component k of `labels` grows, within `reach` pixels of
    itself, to the pixels above ``bg + 0.5 (peak_k - bg)``: bg is the median of the pixels at least
    3 px from every component, peak_k the 90th percentile of the component's own pixels.

    Returns ``areas [K]`` (pixels), in label order.
    """
    gray = _gray(image)
    if smooth_sigma > 0:
        gray = ndimage.gaussian_filter(gray, smooth_sigma)
    labels = np.asarray(labels)
    k = int(labels.max()) if labels.size else 0
    if k == 0:
        return np.zeros(0, np.int64)
    far = ~ndimage.binary_dilation(labels > 0, iterations=3)
    bg = float(np.median(gray[far])) if far.any() else float(gray.min())
    areas = np.zeros(k, np.int64)
    for i, sl in enumerate(ndimage.find_objects(labels)):
        if sl is None:
            continue
        box = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in sl)
        comp = labels[box] == i + 1
        g = gray[box]
        peak = float(np.percentile(g[comp], 90))
        grown = (g > bg + 0.5 * (peak - bg)) & ndimage.binary_dilation(comp, iterations=reach)
        parts, _ = ndimage.label(grown, structure=np.ones((3, 3), bool))
        ids = np.unique(parts[comp])
        areas[i] = int(np.isin(parts, ids[ids > 0]).sum())
    return areas


def layers_and_padding(density: float, resolution: int, num_layers: int | None = None):
    """Number of layers N and padding p so that a window holds `density` instances on average.

    Layout (Dai et al. 2019): each layer is padded by p and randomly cropped back, i.e. shifted by
    an offset uniform in [-p, p]^2, so a layer's centre stays in the window with probability
    ``q = min(1, R / (2p))^2``; the expected count is ``N q``. Dense images (density >= N) give the
    paper's p ~ R/2 (26-32 px at 64); sparse ones a larger p.
    """
    density = float(density)
    if not math.isfinite(density) or density <= 0:
        raise ValueError(
            f"density: expected a positive number of instances per window, got {density}"
        )
    if num_layers is None:
        num_layers = int(min(12, max(2, round(2.0 * density + 2.0))))
    num_layers = checks.check_int(num_layers, "num_layers", minimum=1)
    q = min(1.0, density / num_layers)
    padding = int(round(resolution / (2.0 * math.sqrt(q))))
    padding = max(padding, int(round(0.4 * resolution)))
    return num_layers, padding


@dataclasses.dataclass
class ImageEstimate:
    """Everything estimated from one image (full-resolution pixels unless stated)."""

    height: int
    width: int
    threshold: float
    num_components: int
    instance_width: float  # the widest single instance (95th percentile of single-like blobs)
    median_area: float  # median single-instance area in pixels, at half maximum
    otsu_median_area: float  # the same at the Otsu threshold (density's unit)
    coverage: float  # foreground fraction of the image
    window: int  # patch window: 1.5 x instance_width, clipped to the image
    density: float  # instances per window
    a: float  # area penalty target: instance area / window area (Dai eq. 7)
    dense: bool  # no visible background -> the paper's black-disk background
    background: str  # "disk" (dense) or "inpaint" (real patches, foreground filled in)

    def to_dict(self):
        return dataclasses.asdict(self)


def estimate_from_image(
    image, window_factor: float = 1.5, smooth_sigma: float = 1.0
) -> ImageEstimate:
    """Estimate the HOC settings from one image (float [H, W, C] in [0, 1]).

    Raises ValueError when no foreground instance can be found (e.g. a constant image): then the
    window and a must be given by hand.
    """
    gray = _gray(image)
    h, w = gray.shape
    binary, labels, areas, widths = foreground_components(gray, smooth_sigma=smooth_sigma)
    if areas.size == 0 or float(gray.max() - gray.min()) < 1e-6:
        raise ValueError(
            "image: no foreground instances found by Otsu thresholding "
            "(constant or empty image); give the window and a explicitly"
        )
    med = float(np.median(areas))
    single = (areas >= 0.3 * med) & (areas <= 1.8 * med)
    if single.sum() < 3:
        single = np.ones_like(areas, dtype=bool)
    otsu_median_area = float(np.median(areas[single]))
    inst_w = float(np.percentile(widths[single], 95))
    window = int(round(window_factor * inst_w))
    window = int(max(4, min(window, h, w)))
    coverage = float(binary.mean())
    density = coverage * window * window / max(otsu_median_area, 1.0)  # Otsu coverage / Otsu area
    # a (eq. 7) is the area the layers' masks are pulled to: the instances' extent at half maximum
    reach = max(2, int(round(0.15 * inst_w)))
    median_area = float(np.median(half_maximum_areas(gray, labels, smooth_sigma, reach)[single]))
    a = float(min(0.9, median_area / (window * window)))
    dense = coverage > 0.5
    return ImageEstimate(
        height=int(h),
        width=int(w),
        threshold=float(
            otsu_threshold(
                ndimage.gaussian_filter(gray, smooth_sigma) if smooth_sigma > 0 else gray
            )
        ),
        num_components=int(areas.size),
        instance_width=inst_w,
        median_area=median_area,
        otsu_median_area=otsu_median_area,
        coverage=coverage,
        window=window,
        density=float(density),
        a=a,
        dense=bool(dense),
        background="disk" if dense else "inpaint",
    )
