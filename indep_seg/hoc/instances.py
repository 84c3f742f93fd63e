"""What a nuclei image says about itself, and instance label maps (classical, data-estimated part).

Everything here is estimated from the one image, never from labels or another image's statistics:

- `nucleus_signal`: polarity (bright-on-dark or dark-on-light, from the histogram: on which side of
  the background mode the long tail lies) and stain colour (the direction from the background's
  colour to the colour of the tail), giving one channel where nuclei are bright on a dark
  background, scaled so that 1 is a strong nucleus.
- `estimate_scale`: the nuclei's characteristic Gaussian scale sigma from scale-normalised
  Laplacian-of-Gaussian scale space (the median scale of the strongest blob maxima); a disk of
  radius r answers best at sigma = r / sqrt(2).
- `log_centres`: nucleus centres as maxima of the scale-normalised LoG over scales around sigma
  (reflect padding: an image's edge is treated like its middle).
- `split_by_area`: fluorescence, extra centres in the objects whose area holds more nuclei than
  they have LoG centres (at the deepest points of the object's shape).
- `stands_out`: only the centres whose signal rises above their surroundings (the local floor)
  by at least half their height above the background: faint bumps on a glow are not counted.
- `detection_signal`: what the LoG and the watershed run on. For fluorescence and stained images
  the nucleus signal itself; for a bright-field image (dark on light, gray) the optical density
  with the cell bodies' plateau removed (`optical_density`, `remove_plateau`), whose LoG maxima
  are then split into cytoplasm texture and nuclei (`split_texture`).
- `watershed_instances`: a 16-bit-ready label map, one watershed basin per centre on a foreground
  estimate, each basin trimmed at half of its own peak height above the background (so dim nuclei
  keep their extent), all on the signal minus its local floor (a glow is not a nucleus's extent).
- `otsu_watershed`: the classical baseline (Otsu + distance-transform watershed).
- `match_instances`: AP at IoU 0.5 (TP / (TP + FP + FN), the DSB2018 / StarDist definition at one
  threshold), precision, recall and mean IoU of the matched pairs.

numpy, scipy and scikit-image (the watershed) are used. Details: docs/counting.md.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import watershed

from indep_seg.hoc.estimate import otsu_threshold

__all__ = [
    "ImageKindError",
    "NucleusSignal",
    "nucleus_signal",
    "illumination_field",
    "divide_illumination",
    "FLAT_FIELD_RATIO",
    "LIGHT_FIELD_LEVEL",
    "LIGHT_PERCENTILE",
    "COLOUR_ANGLE",
    "stain_angle",
    "estimate_scale",
    "log_stack",
    "log_centres",
    "foreground_threshold",
    "seeded_watershed",
    "watershed_instances",
    "otsu_watershed",
    "match_instances",
    "save_label_png",
    "colour_labels",
    "describe_kind",
    "optical_density",
    "remove_plateau",
    "split_texture",
    "SMALL_OBJECT_SCALE",
    "detection_signal",
    "local_half_maximum",
    "merge_without_neck",
    "split_by_area",
    "MAX_SPLIT_ADDED",
    "MIN_STAND_OUT",
    "stands_out",
    "classical_centres",
    "LOG_THRESHOLD",
]

MAX_PIXELS = 4096 * 4096


class ImageKindError(ValueError):
    """The image holds nothing that looks like a cluster of blobs (constant, pure noise, ...)."""


@dataclasses.dataclass
class NucleusSignal:
    signal: np.ndarray  # [H, W] float32, nuclei bright, background ~0, strong nucleus ~1
    polarity: str  # "bright" (light nuclei on dark) or "dark" (dark nuclei on light)
    stain: list  # unit RGB direction of the nucleus colour relative to the background
    background: list  # background RGB level
    colour: bool  # the image has colour (not R = G = B)
    contrast: float  # tail level minus background level in the gray image (0..1)
    # [H, W] relative gain of the light field divided out before the rest (`illumination_field`),
    # None when the field was flat or the image is not a light field
    illumination: np.ndarray | None = None

    def flatten(self, image) -> np.ndarray:
        """`image` with the illumination this signal was computed under divided out (as is when
        there was none): what `nucleus_signal` and `detection_signal` measure on."""
        return divide_illumination(image, self.illumination)

    def meta(self):
        return {
            "polarity": self.polarity,
            "stain": [round(float(v), 4) for v in self.stain],
            "background": [round(float(v), 4) for v in self.background],
            "colour": self.colour,
            "contrast": round(float(self.contrast), 4),
            # the light field's darkest / brightest illumination, 1.0 when not corrected
            "illumination_min": round(
                float(self.illumination.min()) if self.illumination is not None else 1.0, 4
            ),
        }


def _histogram_mode(values, bins=256):
    hist, edges = np.histogram(np.clip(values, 0, 1), bins=bins, range=(0.0, 1.0))
    hist = ndimage.gaussian_filter1d(hist.astype(np.float64), 2.0)
    k = int(np.argmax(hist))
    return float(0.5 * (edges[k] + edges[k + 1]))


def divide_illumination(image, field) -> np.ndarray:
    """`image` ([H, W] or [H, W, 3]) divided by the illumination `field` ([H, W], maximum 1, from
    `illumination_field`), clipped to [0, 1]; as is (float32) when `field` is None."""
    a = np.asarray(image, np.float32)
    if field is None:
        return a
    gain = field[..., None] if a.ndim == 3 else field
    return np.clip(a / gain, 0.0, 1.0).astype(np.float32)


#: `illumination_field`: the light field is corrected when its smooth fit varies by more than this
#: ratio (brightest / darkest) over the image; a field within it is left as it is.
FLAT_FIELD_RATIO = 1.15
#: `illumination_field`: a light field (transmitted light: bright field, stained tissue) has its
#: tiles' background level above this; a dark field (fluorescence) is not corrected.
LIGHT_FIELD_LEVEL = 0.25
#: `illumination_field`: the percentile of a tile that measures the light let through.
LIGHT_PERCENTILE = 99.0


def illumination_field(
    gray, tiles: int = 8, ratio: float = FLAT_FIELD_RATIO, light: float = LIGHT_FIELD_LEVEL
) -> np.ndarray | None:
    """The smooth gain of a transmitted-light field, ``[H, W]`` with maximum 1, or None.

    In transmitted light (bright field, stained tissue) the image is the illumination times the
    specimen's transmission, so an unevenly lit field (a vignette, a ramp) darkens everything on
    its dim side: its background, and the nuclei with it, until the histogram's tail (the
    polarity, the stain) reads the dim background as the nuclei. The illumination is what the
    clearest parts of the specimen let through: the upper envelope, the `LIGHT_PERCENTILE`th
    percentile of each of about `tiles` x `tiles` tiles (at least 32 px; the tiles' histogram
    mode followed the tissue's own colour where cells crowd a region, and brightened it), placed
    at the mean position of the pixels that reach it.
    Illumination is smooth, so the log of the tiles' levels is fit by a quadratic surface in x
    and y (least squares, then again without the tiles more than 3 robust sd off the fit: a tile
    with no clear gap). The field is that surface divided by its maximum over the image. None (no
    correction) when the median of the tiles' background levels (their histogram modes) is below
    `light` (a dark field: fluorescence, whose background carries no illumination) or the field
    varies by less than `ratio` (brightest / darkest). Estimated from the image alone.
    """
    g = ndimage.gaussian_filter(np.asarray(gray, np.float32), 1.0)
    h, w = g.shape
    side = max(32, int(math.ceil(max(h, w) / tiles)))
    ny, nx = max(1, h // side), max(1, w // side)
    if ny * nx < 6:
        return None
    ys = np.linspace(0, h, ny + 1).astype(int)
    xs = np.linspace(0, w, nx + 1).astype(int)
    modes, levels, cy, cx = [], [], [], []
    for i in range(ny):
        for j in range(nx):
            t = g[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            modes.append(_histogram_mode(t))
            level = float(np.percentile(t, LIGHT_PERCENTILE))
            levels.append(level)
            # measured where that light is (a tile's clearest pixels lie on its lit side)
            py, px = np.nonzero(t >= level)
            cy.append(ys[i] + float(py.mean()))
            cx.append(xs[j] + float(px.mean()))
    if float(np.median(modes)) < light:
        return None
    cy, cx = np.asarray(cy) / max(h - 1, 1), np.asarray(cx) / max(w - 1, 1)

    def design(yy, xx):
        return [np.ones_like(yy + xx), xx, yy, xx * xx, xx * yy, yy * yy]

    z = np.log(np.maximum(np.asarray(levels, np.float64), 1.0 / 255))
    a = np.stack(design(cy, cx), -1)
    coef = np.linalg.lstsq(a, z, rcond=None)[0]
    res = z - a @ coef
    mad = 1.4826 * float(np.median(np.abs(res - np.median(res))))
    ok = np.abs(res) <= max(3.0 * mad, 1e-3)
    if ok.sum() >= 6 and not ok.all():
        coef = np.linalg.lstsq(a[ok], z[ok], rcond=None)[0]
    # the surface on the pixel grid by broadcasting a column of y against a row of x (one [H, W]
    # array: a 64-megapixel image's design matrix would take gigabytes)
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, :]
    logf = sum(float(c) * t for c, t in zip(coef, design(yy, xx)))
    logf -= logf.max()
    if float(-logf.min()) < math.log(ratio):
        return None
    return np.exp(logf).astype(np.float32)


#: `nucleus_signal`: an image is stained (colour) when its nuclei differ from the background by a
#: colour direction more than this many degrees off the gray axis. Any channel difference at all
#: counted until session 19, so a gray image with independent noise in its three channels (a
#: colour camera) was read as stained and lost the bright-field path (+63 % on a noisy copy of
#: 08275a5b). The development images: gray ones 0.0-0.1 degrees with or without such noise,
#: stained tissue 25-28 degrees (docs/counting.md, session 19).
COLOUR_ANGLE = 10.0


def stain_angle(direction) -> float:
    """Degrees between a colour direction (RGB) and the gray axis (1, 1, 1)."""
    d = np.asarray(direction, np.float64).reshape(3)
    n = float(np.linalg.norm(d))
    if n <= 0:
        return 0.0
    cos = abs(float(d.sum())) / (n * math.sqrt(3.0))
    return float(np.degrees(np.arccos(min(1.0, cos))))


def nucleus_signal(image, tail: float = 3.0, flat_field: bool = True) -> NucleusSignal:
    """Polarity + stain from the image's histogram, as one channel with bright nuclei in [0, 1].

    The background is the histogram's mode (the most common level; a dense image's median can fall
    inside the nuclei). Nuclei are the long tail: when the 99.5th percentile lies further above the
    mode than the 0.5th below it, the nuclei are bright (fluorescence), else dark (bright field,
    H&E).
    The stain direction is the mean colour of the extreme `tail` percent on that side minus the
    background colour (the gray axis unless it leaves it by more than `COLOUR_ANGLE`: then the
    image is ``colour``, stained); the signal is every pixel's projection on it, divided by the
    99.5th percentile of the projection, clipped to [0, 1]. Raises ImageKindError on a constant
    image.
    With `flat_field`, an unevenly lit light field is first divided by its illumination
    (`illumination_field`; kept in ``illumination``).
    """
    a = np.asarray(image, np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"image: expected [H, W] or [H, W, 3], got shape {np.shape(image)}")
    gray = a.mean(-1)
    if float(gray.max() - gray.min()) < 2.0 / 255:
        raise ImageKindError(
            "image: constant image (no contrast at all), nothing to count; count 0"
        )
    field = illumination_field(gray) if flat_field else None
    if field is not None:
        a = divide_illumination(a, field)
        gray = a.mean(-1)
    sm = ndimage.gaussian_filter(gray, 1.0)
    mode = _histogram_mode(sm)
    lo, hi = np.percentile(sm, [0.5, 99.5])
    polarity = "bright" if (hi - mode) >= (mode - lo) else "dark"
    sgn = 1.0 if polarity == "bright" else -1.0
    d = sgn * (sm - mode)
    near = np.abs(sm - mode) <= max(np.percentile(np.abs(sm - mode), 30), 1e-3)
    bg = a[near].mean(0)
    cut = np.percentile(d, 100.0 - tail)
    tail_px = d >= cut
    fg = a[tail_px].mean(0)
    direction = fg - bg
    colour = bool(np.abs(a - a.mean(-1, keepdims=True)).max() > 2.0 / 255) and (
        stain_angle(direction) > COLOUR_ANGLE
    )
    if not colour:
        direction = np.full(3, direction.mean(), np.float32)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-4:
        raise ImageKindError("image: no tail of nucleus-like pixels stands out of the background")
    unit = direction / norm
    proj = (a - bg) @ unit
    top = float(np.percentile(proj, 99.5))
    if top <= 1e-4:
        raise ImageKindError("image: no pixel stands out of the background on the nucleus side")
    sig = np.clip(proj / top, 0.0, 1.0).astype(np.float32)
    return NucleusSignal(
        signal=sig,
        polarity=polarity,
        stain=unit.tolist(),
        background=bg.tolist(),
        colour=colour,
        contrast=float(abs(np.mean(fg) - np.mean(bg))),
        illumination=field,
    )


def log_stack(signal, sigmas):
    """``[S, H, W]`` of the scale-normalised negative LoG, ``-sigma^2 LoG_sigma(signal)`` (bright
    blobs
    positive), reflect padding."""
    s = np.asarray(signal, np.float32)
    return np.stack([-(sg * sg) * ndimage.gaussian_laplace(s, sg, mode="reflect") for sg in sigmas])


def _shrink(signal, max_side):
    h, w = signal.shape
    f = max(1, int(math.ceil(max(h, w) / max_side)))
    if f == 1:
        return signal, 1
    hh, ww = (h // f) * f, (w // f) * f
    return signal[:hh, :ww].reshape(hh // f, f, ww // f, f).mean((1, 3)), f


def estimate_scale(
    signal,
    min_sigma: float = 1.0,
    max_sigma: float | None = None,
    num: int = 24,
    strong: float = 0.5,
) -> dict:
    """The nuclei's characteristic LoG scale from scale space (`log_stack`), image only.

    3-D maxima (3 scales x 3x3 px) above 0.05 are blobs; the strong ones (response at least `strong`
    x the 99th percentile of all blob responses) vote, and their median sigma is the scale (weaker
    maxima are mostly texture: bacteria, grain, noise, which would pull the scale down). The image
    is assumed band-limited, as a microscope's is: hard, pixelated edges (a binary mask) answer the
    smallest scales and pull the scale down.
    Returns ``sigma`` (px), ``radius`` (sqrt(2) sigma), ``area`` (pi radius^2), ``num_blobs``,
    ``response`` (median response of the strong blobs). Large images are averaged down first
    (side <= 1024), the scale is given in full-resolution pixels. Raises ImageKindError when no
    blob is found.
    """
    s, f = _shrink(np.asarray(signal, np.float32), 1024)
    h, w = s.shape
    max_sigma = max_sigma or max(min_sigma * 1.5, min(h, w) / 10.0)
    sigmas = np.geomspace(min_sigma, max_sigma, num)
    st = log_stack(s, sigmas)
    mx = ndimage.maximum_filter(st, size=(3, 3, 3), mode="nearest")
    peak = (st >= mx) & (st > 0.05)
    peak[0] = peak[-1] = False  # a maximum at the end of the range is not a scale
    si, ys, xs = np.nonzero(peak)
    if si.size == 0:
        raise ImageKindError(
            "image: no blob-like structure in scale space (not a nuclei image, or empty)"
        )
    resp = st[si, ys, xs]
    keep = resp >= strong * np.percentile(resp, 99)
    sigma = float(np.median(sigmas[si[keep]])) * f
    radius = sigma * math.sqrt(2.0)
    return {
        "sigma": sigma,
        "radius": radius,
        "area": math.pi * radius * radius,
        "num_blobs": int(keep.sum()),
        "response": float(np.median(resp[keep])),
        "downsample": f,
    }


#: `log_centres`: a maximum counts above this share of the 95th percentile of all maxima (and above
#: the noise floor), by the image's polarity. 0.2 for every image until session 19, when a few very
#: bright nuclei (mitoses; a crop around them) lifted the 95th percentile of a fluorescence image
#: until dim nuclei beside them fell under it (issue 19's "dim nuclei ... missed"). Fluorescence
#: (bright) chosen on the four tuned fluorescence images and their acquisition variants
#: (`benchmarks/study_hoc_robustness.py`: half the nuclei at a quarter contrast, crops, shading,
#: noise, half magnification; 0.2 / 0.15 / 0.1 / 0.07): nothing lost down to 0.1 on any of them,
#: and their dimmed halves gain most there (-35 / -41 / -21 % at 0.2, -13 / -2 / -14 % at 0.1).
#: Dark nuclei (bright field, stained) keep 0.2: bright field splits its maxima by
#: `split_texture` and counts the same at all four; the tuned stained image's variants favoured
#: 0.15, but its own count (+1.3 % at 0.2, +2.0 at 0.15, +8.6 at 0.1) and the held-out stained
#: images, seen at 0.1 and 0.15 before this was settled (+7.1 % -> +24 / +18 % on cbca32da), did
#: not (docs/counting.md, session 19).
LOG_THRESHOLD = {"bright": 0.1, "dark": 0.2}


def log_centres(
    signal,
    sigma: float,
    rel_threshold: float = LOG_THRESHOLD["dark"],
    scale_range: float = 1.25,
    num: int = 5,
    min_dist: float = 1.0,
    border: float = 0.0,
    texture_split: bool = False,
    scale_below: float | None = 1.6,
    neck: float | None = 0.85,
    area_split: bool = False,
):
    """Nucleus centres ``[K, 3]`` (x, y, response), strongest first.

    `classical_centres` passes the image's `LOG_THRESHOLD` as `rel_threshold` (the default is
    the dark nuclei's, 0.2, the one every image had before session 19).
    The maximum over `num` scales in ``[sigma / scale_below, sigma * scale_range]`` of the
    scale-normalised LoG (`scale_below` None: ``sigma / scale_range``; the smaller scales keep
    a dim nucleus next to a bright one from being one blob with it); local maxima within
    ``min_dist * sigma`` px and above ``rel_threshold`` x
    the 95th percentile of all the maxima (at least 0.03, and at least 8 robust sd of the response
    on the background pixels) count. Reflect padding, so edge nuclei
    count like middle ones; `border` > 0 drops centres that close (in px) to the edge.
    With `texture_split` (bright field, `detection_signal`), the maxima are then split by
    `split_texture`, and when that finds texture, compact objects below the nucleus scale that
    reach the same threshold are added (`_add_small_objects`). With `neck`, two centres that
    lie in one object without a neck between them are one nucleus (`merge_without_neck` on the
    `local_half_maximum` mask): the small scales answer two maxima on one elongated or textured
    nucleus. With `area_split` (fluorescence, where the nuclei of one image are of one size), an
    object of that mask that holds more nuclei by its area than it has centres gets centres at the
    deepest points of its shape (`split_by_area`): elongated nuclei side by side give one LoG blob.
    """
    s = np.asarray(signal, np.float32)
    lo = scale_below if scale_below is not None else scale_range
    sigmas = np.geomspace(sigma / lo, sigma * scale_range, num)
    stack = log_stack(s, sigmas)
    m = stack.max(0)
    size = 2 * int(math.ceil(min_dist * sigma)) + 1
    mx = ndimage.maximum_filter(m, size=size, mode="reflect")
    strong = np.percentile(m[m >= mx], 95) if (m >= mx).any() else 0.0
    # noise floor: 8 robust sd of the response over the background pixels (an image with few nuclei
    # has mostly noise maxima, so the percentile alone would let noise count), measured at least
    # 2 sigma away from any foreground: near a nucleus the LoG's negative ring inflates the spread
    # (foreground: 3 sd above the background; at 1.5 sd, 7 % of pure noise pixels were
    # foreground and, dilated, covered a noisy image: no noise floor was measured at all)
    bg, sd, _ = foreground_threshold(s)
    fgm = ndimage.gaussian_filter(s, 1.0) > bg + 3.0 * sd
    back = m[~ndimage.binary_dilation(fgm, iterations=int(math.ceil(2 * sigma)))]
    noise = 1.4826 * float(np.median(np.abs(back - np.median(back)))) if back.size > 1000 else 0.0
    t = max(0.03, rel_threshold * float(strong), 8.0 * noise)
    ys, xs = np.nonzero((m >= mx) & (m > t))
    if border > 0:
        h, w = s.shape
        ok = (xs >= border) & (ys >= border) & (xs < w - border) & (ys < h - border)
        ys, xs = ys[ok], xs[ok]
    vals = m[ys, xs]
    half = local_half_maximum(s, sigma) if (neck is not None or area_split) else None
    if neck is not None and vals.size > 1:
        keep = merge_without_neck(np.stack([xs, ys], -1), vals, half, sigma, neck)
        ys, xs, vals = ys[keep], xs[keep], vals[keep]
    if area_split and vals.size:
        extra = np.round(split_by_area(np.stack([xs, ys], -1), half, sigma)).astype(xs.dtype)
        if border > 0:
            h, w = s.shape
            inside = (
                (extra >= border).all(1) & (extra[:, 0] < w - border) & (extra[:, 1] < h - border)
            )
            extra = extra[inside]
        xs, ys = np.concatenate([xs, extra[:, 0]]), np.concatenate([ys, extra[:, 1]])
        vals = np.concatenate([vals, m[extra[:, 1], extra[:, 0]]])
    if texture_split:
        keep = split_texture(vals)
        ys, xs, vals = ys[keep], xs[keep], vals[keep]
        if keep.any() and not keep.all():
            own = math.sqrt(2.0) * sigmas[np.argmax(stack[:, ys, xs], 0)]
            xs, ys, vals = _add_small_objects(s, sigma, scale_range, num, border, xs, ys, vals, own)
    order = np.argsort(-vals)
    return (
        np.stack([xs[order], ys[order], vals[order]], -1).astype(np.float64)
        if order.size
        else np.zeros((0, 3))
    )


#: `_add_small_objects` looks for compact objects down to ``sigma / SMALL_OBJECT_SCALE`` (a
#: sixteenth of a nucleus's area). Session 13, chosen on the tuned bright-field image 08275a5b
#: (annotated granules of 26-68 px, LoG scale 2-3.3 px, for sigma 7.5) and the synthetic granule
#: test; until then ``2 scale_range`` (sigma / 2.5): docs/counting.md, "Session 13".
SMALL_OBJECT_SCALE = 4.0


def _add_small_objects(signal, sigma, scale_range, num, border, xs, ys, vals, own_radius):
    """Bright field: compact dark objects below the nucleus scale (granules, small nuclei) that the
    LoG over the nucleus range does not answer: maxima over the scales below it,
    ``[sigma / SMALL_OBJECT_SCALE, sigma / scale_range]``, that reach the response the texture
    split accepted (the same threshold, no new one) and lie outside every accepted centre's own
    disc (`own_radius`: sqrt(2) x the scale of its strongest response). A nucleus's disc holds
    its own small maxima; a granule's disc is a granule's, so the next granule of a cluster counts
    (with a nucleus radius for every centre, granules 7-8 px apart were one)."""
    lo = sigma / SMALL_OBJECT_SCALE
    hi = sigma / scale_range
    small = log_centres(
        signal,
        math.sqrt(lo * hi),
        scale_range=math.sqrt(hi / lo),
        num=num,
        border=border,
        scale_below=None,
        neck=None,
    )
    small = small[small[:, 2] >= float(vals.min())] if len(small) else small
    if not len(small):
        return xs, ys, vals
    d2 = (small[:, None, 0] - xs[None, :]) ** 2 + (small[:, None, 1] - ys[None, :]) ** 2
    add = small[(d2 > np.asarray(own_radius, np.float64)[None, :] ** 2).all(1)]
    return (
        np.concatenate([xs, add[:, 0].astype(xs.dtype)]),
        np.concatenate([ys, add[:, 1].astype(ys.dtype)]),
        np.concatenate([vals, add[:, 2].astype(vals.dtype)]),
    )


def local_half_maximum(signal, sigma: float, noise: float = 3.0) -> np.ndarray:
    """Boolean ``[H, W]``: the pixels above half of their neighbourhood's peak over the background
    (the maximum within a square one nucleus diameter, 2 sqrt(2) sigma, wide, of the signal
    smoothed by 1 px), and above `noise` sd of the background (`foreground_threshold`). Each
    nucleus is cut at half its own height, so a dim nucleus keeps its extent next to a bright one
    and two touching nuclei of different brightness come apart or meet at a neck."""
    sm = ndimage.gaussian_filter(np.asarray(signal, np.float32), 1.0)
    bg, sd, _ = foreground_threshold(signal)
    side = 2 * int(round(math.sqrt(2.0) * sigma)) + 1
    peak = ndimage.maximum_filter(sm, size=side, mode="reflect")
    return (sm > bg + 0.5 * (peak - bg)) & (sm > bg + noise * sd)


def merge_without_neck(xy, values, mask, sigma: float, neck: float = 0.85, reach: float = 3.0):
    """Boolean mask of the centres to keep: two centres closer than ``reach * sigma`` are one
    object when the distance to the edge of `mask` along the segment between them never falls
    below `neck` x its smaller value at the two ends (no waist: one elongated or textured
    nucleus); then only the stronger (`values`) is kept. Two nuclei that touch meet at a neck, or
    are apart in `mask`, and both stay. A centre outside `mask` is never merged."""
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    v = np.asarray(values, np.float64).reshape(-1)
    keep = np.ones(len(v), bool)
    if len(v) < 2:
        return keep
    dist = ndimage.distance_transform_edt(np.asarray(mask, bool))
    order = np.argsort(-v, kind="stable")
    rank = np.empty(len(v), int)
    rank[order] = np.arange(len(v))
    parent = np.arange(len(v))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(cKDTree(pts).query_pairs(reach * sigma)):
        n = int(math.ceil(float(np.hypot(*(pts[j] - pts[i]))))) + 1
        t = np.linspace(0.0, 1.0, n)[:, None]
        line = pts[i] * (1.0 - t) + pts[j] * t
        prof = ndimage.map_coordinates(dist, [line[:, 1], line[:, 0]], order=1)
        ends = min(prof[0], prof[-1])
        if ends > 0 and prof.min() >= neck * ends:
            ri, rj = root(i), root(j)
            if ri != rj:  # the stronger centre is the root
                a, b = (ri, rj) if rank[ri] < rank[rj] else (rj, ri)
                parent[b] = a
    for i in range(len(v)):
        keep[i] = root(i) == i
    return keep


#: `split_by_area` corrects the LoG's merged neighbours; where it would add more than this share of
#: the LoG's own centres, the area model and the LoG disagree too much to trust either (a ragged
#: cluster, a textured region rather than clumps of nuclei of one size) and it adds none. On the
#: tuned images the split adds under a tenth; the guard was added in session 11 after a held-out
#: image (20b20ab0) showed the unbounded failure (+237 %): docs/counting.md, "Session 11c".
MAX_SPLIT_ADDED = 0.5


def split_by_area(
    xy, mask, sigma: float, single_area: float | None = None, max_added: float = MAX_SPLIT_ADDED
) -> np.ndarray:
    """Extra centres ``[M, 2]`` (x, y) for the objects of `mask` that hold more nuclei by their area
    than they hold centres (`xy`).

    One nucleus's area A is `single_area`, or the median area of the objects that hold exactly one
    centre (at least 5 of them; else a disk of radius sqrt(2) sigma). An object of area a holds
    ``round(a / A)`` nuclei. Where that exceeds its centres, the maxima (3x3) of its distance
    transform (smoothed by 1 px, as in `otsu_watershed`), deepest first, become centres when they
    lie at least a nucleus radius ``sqrt(A / pi)`` from every centre of the object, until the
    object holds its number. A lobe of the shape is a nucleus; an object without a centre stays
    empty (the LoG threshold found no nucleus in it). Where the extra centres would exceed
    `max_added` x the given centres, none are returned (`MAX_SPLIT_ADDED`)."""
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    comp, k = ndimage.label(np.asarray(mask, bool))
    if k == 0 or len(pts) == 0:
        return np.zeros((0, 2))
    h, w = comp.shape
    ix = np.clip(np.round(pts).astype(int), 0, [w - 1, h - 1])
    owner = comp[ix[:, 1], ix[:, 0]]
    areas = np.bincount(comp.ravel(), minlength=k + 1).astype(np.float64)
    held = np.bincount(owner, minlength=k + 1)
    singles = areas[1:][held[1:] == 1]
    if single_area is None:
        single_area = float(np.median(singles)) if singles.size >= 5 else 2.0 * math.pi * sigma**2
    if single_area <= 0:
        raise ValueError(f"single_area: expected > 0, got {single_area}")
    radius = math.sqrt(single_area / math.pi)
    added = []
    for c, sl in enumerate(ndimage.find_objects(comp), 1):
        target = int(math.floor(areas[c] / single_area + 0.5))
        if sl is None or held[c] == 0 or target <= held[c]:
            continue
        obj = np.pad(comp[sl] == c, 1)
        dist = ndimage.gaussian_filter(ndimage.distance_transform_edt(obj), 1.0)
        ys, xs = np.nonzero((dist >= ndimage.maximum_filter(dist, size=3)) & obj)
        origin = np.array([sl[1].start - 1, sl[0].start - 1], np.float64)
        have = [p - origin for p in pts[owner == c]]
        for i in np.argsort(-dist[ys, xs], kind="stable"):
            if len(have) >= target:
                break
            p = np.array([xs[i], ys[i]], np.float64)
            if min(float(np.hypot(*(p - q))) for q in have) >= radius:
                have.append(p)
                added.append(p + origin)
    if len(added) > max_added * len(pts):
        return np.zeros((0, 2))
    return np.asarray(added, np.float64).reshape(-1, 2)


#: `stands_out`: a nucleus's surroundings fall below half its height above the background (the half
#: maximum that `local_half_maximum` and `watershed_instances` cut each nucleus at). Chosen in
#: session 12 on the tuned images and 20b20ab0 (which is tuned since): the tuned five keep every
#: centre from 0.4 to 0.6; on 20b20ab0 0.45 / 0.5 / 0.55 give +6 / +1 / -5 % (docs/counting.md).
MIN_STAND_OUT = 0.5


def stands_out(signal, centres, sigma: float, level: float = MIN_STAND_OUT) -> np.ndarray:
    """Boolean mask of the `centres` (``[K, >=2]`` x, y) that stand out of their surroundings.

    A centre's surroundings are the local floor of `remove_plateau` (the grey opening two nucleus
    diameters wide); it stands out when its (1-px smoothed) signal rises above that floor by at
    least `level` x its height above the image's background (`foreground_threshold`). A nucleus
    in focus on a dark field rises by ~100 %; a faint, blurred bump on a glow (out-of-focus
    nuclei under a tissue, 20b20ab0) by 20-45 %, and the LoG answers it as a blob of the
    nucleus scale all the same."""
    c = np.asarray(centres, np.float64)
    if not c.size:
        return np.zeros(0, bool)
    c = c.reshape(len(c), -1)
    top, floor = remove_plateau(signal, sigma, return_floor=True)
    bg, _, _ = foreground_threshold(signal)
    h, w = floor.shape
    xs = np.clip(np.round(c[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(c[:, 1]).astype(int), 0, h - 1)
    rise = top[ys, xs]
    height = rise + floor[ys, xs] - bg
    return (height > 0) & (rise >= level * height)


def classical_centres(image, ns: "NucleusSignal", sigma: float) -> tuple:
    """``(signal, texture_split, centres)``: the classical detector of `indep-seg count` on one
    image. The detection signal (`detection_signal`: bright field's plateau removed, its texture
    split from the nuclei), then `log_centres` on it at the polarity's `LOG_THRESHOLD`, with
    `area_split` for bright nuclei on a dark field (fluorescence: nuclei of one size, so an
    object's area says how many it holds); then only the centres that stand out of their
    surroundings (`stands_out`)."""
    det, split = detection_signal(image, ns, sigma)
    centres = log_centres(
        det,
        sigma,
        rel_threshold=LOG_THRESHOLD[ns.polarity],
        texture_split=split,
        area_split=ns.polarity == "bright",
    )
    return det, split, centres[stands_out(det, centres, sigma)]


def optical_density(image, background) -> np.ndarray:
    """Bright field: ``-log(I / I_background)`` of the gray image (Beer-Lambert: absorbances
    add, so a nucleus has the same optical density excess on a thin or a thick, overlapped
    cytoplasm, where its intensity contrast would shrink), scaled so that its 99.5th percentile
    is 1, clipped at 0. ``[H, W]`` float32."""
    a = np.asarray(image, np.float32)
    gray = a.mean(-1) if a.ndim == 3 else a
    i0 = max(float(np.mean(background)), 1.0 / 255)
    od = np.log(i0 / np.maximum(gray, 0.5 / 255))
    top = float(np.percentile(od, 99.5))
    if top <= 1e-4:
        raise ImageKindError("image: no pixel absorbs more than the background (bright field)")
    return np.clip(od / top, 0.0, None).astype(np.float32)


def remove_plateau(signal, sigma: float, diameters: float = 2.0, return_floor: bool = False):
    """The signal minus its local floor: a grey opening (reflect padding) of the lightly smoothed
    signal with a square `diameters` nucleus diameters (2 sqrt(2) sigma each) wide. A nucleus fits
    in the square, so the opening holds everything wider than the nuclei (a bright-field image's
    cell bodies, an uneven background) and the difference keeps the nuclei's own contrast.
    ``[H, W]`` float32 >= 0 (and the floor, with `return_floor`)."""
    s = ndimage.gaussian_filter(np.asarray(signal, np.float32), 1.0)
    side = 2 * int(round(diameters * math.sqrt(2.0) * sigma)) + 1
    floor = ndimage.grey_opening(s, size=(side, side), mode="reflect")
    out = np.clip(s - floor, 0.0, None).astype(np.float32)
    return (out, floor) if return_floor else out


def split_texture(responses, min_candidates: int = 8, min_class: int = 3) -> np.ndarray:
    """Boolean mask of the LoG maxima that are nuclei, not texture (bright field).

    On a bright-field image the maxima are two populations: many weak ones in the cells' textured
    cytoplasm and fewer, stronger ones on the nuclei. Contrasts are multiplicative, so the split is
    made on the log of the responses, by Kittler & Illingworth's minimum-error threshold (two
    Gaussian classes of their own size and spread; Otsu's criterion assumes equal spreads and cuts
    the larger, broader texture class in two when it outnumbers the nuclei). Each class holds at
    least `min_class` maxima; fewer than `min_candidates` maxima are all kept. Whether to split at
    all is `detection_signal`'s decision (a plateau of cytoplasm is there).
    """
    r = np.asarray(responses, np.float64)
    keep = np.ones(r.shape, bool)
    if r.size < max(min_candidates, 2 * min_class) or float(r.min()) <= 0:
        return keep
    v = np.sort(np.log(r))
    n = v.size
    k = np.arange(min_class, n - min_class + 1)  # size of the lower class
    c1, c2 = np.cumsum(v), np.cumsum(v * v)
    m1, q1 = c1[k - 1] / k, c2[k - 1] / k
    m2, q2 = (c1[-1] - c1[k - 1]) / (n - k), (c2[-1] - c2[k - 1]) / (n - k)
    floor = 1e-6
    s1 = np.sqrt(np.maximum(q1 - m1 * m1, floor))
    s2 = np.sqrt(np.maximum(q2 - m2 * m2, floor))
    p1 = k / n
    p2 = 1.0 - p1
    crit = p1 * np.log(s1) + p2 * np.log(s2) - p1 * np.log(p1) - p2 * np.log(p2)
    kb = int(k[int(np.argmin(crit))])
    threshold = 0.5 * (v[kb - 1] + v[kb])
    return np.log(r) > threshold


def detection_signal(image, ns: "NucleusSignal", sigma: float) -> tuple:
    """``(signal, texture_split)``: what `log_centres` and `watershed_instances` run on.

    Fluorescence and stained images (bright nuclei, or a stain colour that the projection of
    `nucleus_signal` already isolates): the nucleus signal, no split. Bright field (dark on light,
    gray): the cell bodies absorb light too, so in ``background - I`` the nuclei sit on a textured
    plateau of cytoplasm whose corners and grain answer the LoG as strongly as the nuclei do. There
    the signal is the optical density (`optical_density`) minus its local floor
    (`remove_plateau`), and the LoG maxima are split into texture and nuclei (`split_texture`) when
    the plateau is there: when most of the absorbing area (optical density above
    `foreground_threshold`) is wider than a nucleus (in the floor). Nuclei on an empty field are
    not split. All estimated from the image.
    """
    if ns.polarity != "dark" or ns.colour:
        return ns.signal, False
    od = optical_density(ns.flatten(image), ns.background)
    out, floor = remove_plateau(od, sigma, return_floor=True)
    _, _, thr = foreground_threshold(od)
    absorbing = float((ndimage.gaussian_filter(od, 1.0) > thr).mean())
    plateau = float((floor > thr).mean())
    return out, bool(absorbing > 0 and plateau > 0.5 * absorbing)


def foreground_threshold(signal) -> tuple[float, float, float]:
    """``(background level, noise sd, threshold)``: the background is the mode of the (lightly
    smoothed)
    signal, its sd the MAD of the pixels below the mode mirrored; a pixel is foreground above
    ``max(bg + 3 sd, bg + 0.1)``."""
    s = ndimage.gaussian_filter(np.asarray(signal, np.float32), 1.0)
    bg = _histogram_mode(s)
    below = s[s <= bg]
    sd = 1.4826 * float(np.median(bg - below)) if below.size else 0.01
    return bg, sd, max(bg + 3.0 * sd, bg + 0.1)


def seeded_watershed(cost, markers, mask) -> np.ndarray:
    """Marker-based watershed (Meyer's priority flood, 4-connected: scikit-image's `watershed`)
    restricted to `mask` (marker pixels always belong to it): each unlabelled pixel of the mask goes
    to the marker whose flood reaches it first in order of `cost`. Pixels of the mask that no marker
    reaches stay 0. ``[H, W]`` int32.

    (scipy's `ndimage.watershed_ift` floods a smooth basin from the wrong side: on two Gaussian
    blobs it gives one marker 56 of 2400 pixels, so it is not used.)
    """
    lab = np.asarray(markers, np.int32)
    mask = np.asarray(mask, bool) | (lab > 0)
    return watershed(np.asarray(cost, np.float64), lab, connectivity=1, mask=mask).astype(np.int32)


def watershed_instances(
    signal,
    centres,
    sigma: float,
    half_max: float = 0.5,
    max_radius: float = 3.0,
    marker_radius: float = 1.0,
    local_floor: bool = True,
    own_peak: bool = False,
):
    """Instance label map ``[H, W]`` int32 (0 = background, 1..K in the order of `centres`).

    With `local_floor`, all of this runs on the signal minus its local floor (`remove_plateau`):
    on a glow (20b20ab0) the foreground covers the glow and each basin's half-maximum cut would be
    measured from the image's background, below the glow, so basins spread over it.

    One marker per centre: the foreground pixels within `marker_radius` nucleus radii (sqrt(2)
    sigma) of it that are nearer to it than to any other centre (0: the centre's pixel alone;
    a point marker on the slope of a bright neighbour, with no dip between them, is flooded by
    the neighbour before it grows). A watershed (`seeded_watershed`) on the inverted smoothed
    signal splits the foreground (`foreground_threshold`) among them; each basin keeps its pixels
    above ``bg + half_max (peak - bg)`` (peak: the basin's 95th percentile) within
    ``max_radius * sqrt(2) sigma`` of its centre, and the connected part holding the centre.
    Centres on no foreground keep a disk of radius sqrt(2) sigma clipped to the pixels above the
    background.

    With `own_peak` (a bright-field image with a cytoplasm plateau: `detection_signal`'s
    ``texture_split``), a basin's peak is the highest signal on its own marker, the nucleus's own
    height: there the foreground holds the cells' cytoplasm as well, so a basin is mostly a cell
    and its 95th percentile is the cytoplasm's level; cut at half of that, the basin spread over
    the cell (08275a5b: label maps a median 1.9x the annotated nucleus's area, AP50 0.26).
    """
    if local_floor:
        signal = remove_plateau(signal, sigma)
    s = ndimage.gaussian_filter(np.asarray(signal, np.float32), max(0.5, 0.3 * sigma))
    h, w = s.shape
    cen = (
        np.asarray(centres, np.float64).reshape(-1, 3)[:, :2] if len(centres) else np.zeros((0, 2))
    )
    labels = np.zeros((h, w), np.int32)
    if cen.shape[0] == 0:
        return labels
    bg, sd, thr = foreground_threshold(signal)
    fg = s > bg + 1.5 * sd
    markers = np.zeros((h, w), np.int32)
    xs = np.clip(np.round(cen[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(cen[:, 1]).astype(int), 0, h - 1)
    markers[ys, xs] = np.arange(1, cen.shape[0] + 1)
    if marker_radius > 0:
        near, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        own = (near <= marker_radius * math.sqrt(2.0) * sigma) & fg
        markers = np.where(own, markers[iy, ix], 0).astype(np.int32)
    ws = seeded_watershed(-s, markers, fg)
    reach = max_radius * math.sqrt(2.0) * sigma
    objs = ndimage.find_objects(ws, max_label=cen.shape[0])
    for i, sl in enumerate(objs):
        if sl is None:
            continue
        lab = i + 1
        region = ws[sl] == lab
        vals = s[sl][region]
        own = markers[sl] == lab
        peak = float(s[sl][own].max() if own_peak and own.any() else np.percentile(vals, 95))
        keep = region & (s[sl] > bg + half_max * (peak - bg))
        yy, xx = np.mgrid[sl[0], sl[1]]
        keep &= (xx - cen[i, 0]) ** 2 + (yy - cen[i, 1]) ** 2 <= reach * reach
        part, n = ndimage.label(keep)
        if n > 1:
            cy, cx = ys[i] - sl[0].start, xs[i] - sl[1].start
            pid = part[cy, cx] if (0 <= cy < part.shape[0] and 0 <= cx < part.shape[1]) else 0
            if pid == 0:
                pid = 1 + int(np.argmax(np.bincount(part.ravel())[1:]))
            keep = part == pid
        sub = labels[sl]
        sub[keep] = lab
    return labels


def otsu_watershed(image_signal, min_distance: float | None = None):
    """Classical baseline: Otsu threshold (smoothed signal, 3x3 opening) + distance-transform
    watershed
    seeded at the distance maxima at least `min_distance` px apart (default: half the median Otsu
    component's equivalent radius). Returns ``(labels [H, W] int32, seeds [K, 2] (x, y))``."""
    s = ndimage.gaussian_filter(np.asarray(image_signal, np.float32), 1.0)
    t = otsu_threshold(s)
    fg = ndimage.binary_opening(s > t, structure=np.ones((3, 3), bool))
    comp, k = ndimage.label(fg)
    if k == 0:
        return np.zeros(s.shape, np.int32), np.zeros((0, 2))
    if min_distance is None:
        areas = np.bincount(comp.ravel())[1:]
        min_distance = max(2.0, 0.5 * math.sqrt(float(np.median(areas)) / math.pi))
    dist = ndimage.distance_transform_edt(fg)
    dist = ndimage.gaussian_filter(dist, 1.0)
    size = 2 * int(round(min_distance)) + 1
    mx = ndimage.maximum_filter(dist, size=size)
    ys, xs = np.nonzero((dist >= mx) & fg & (dist > 0.5))
    # one seed per plateau
    pk = np.zeros(s.shape, bool)
    pk[ys, xs] = True
    seeds_lab, n = ndimage.label(pk, structure=np.ones((3, 3), bool))
    cms = ndimage.center_of_mass(pk, seeds_lab, np.arange(1, n + 1)) if n else []
    markers = np.zeros(s.shape, np.int32)
    seeds = []
    for cy, cx in cms:
        seeds.append((cx, cy))
    # a component without a seed gets one at its deepest point
    have = (
        np.unique(comp[[int(round(y)) for _, y in seeds], [int(round(x)) for x, _ in seeds]])
        if seeds
        else []
    )
    for j, sl in enumerate(ndimage.find_objects(comp)):
        if sl is None or (j + 1) in have:
            continue
        d = np.where(comp[sl] == j + 1, dist[sl], -1)
        yy, xx = np.unravel_index(int(np.argmax(d)), d.shape)
        seeds.append((xx + sl[1].start, yy + sl[0].start))
    for i, (cx, cy) in enumerate(seeds):
        markers[int(round(cy)), int(round(cx))] = i + 1
    ws = seeded_watershed(-dist, markers, fg)
    ws[~fg] = 0
    return ws.astype(np.int32), np.asarray(seeds, np.float64).reshape(-1, 2)


def match_instances(pred, truth, iou_threshold: float = 0.5) -> dict:
    """Instance matching at IoU > `iou_threshold` (unique at 0.5). Returns ``ap`` = TP / (TP + FP +
    FN),
    ``precision``, ``recall``, ``mean_iou`` (over matched pairs), ``tp``, ``fp``, ``fn``."""
    p = np.asarray(pred).astype(np.int64)
    t = np.asarray(truth).astype(np.int64)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth: expected the same shape, got {p.shape} and {t.shape}")
    _, p = np.unique(p, return_inverse=True)
    _, t = np.unique(t, return_inverse=True)
    p, t = p.reshape(pred.shape), t.reshape(truth.shape)
    # relabel so that 0 stays background (np.unique sorts, 0 first when present)
    if not (np.asarray(pred) == 0).any():
        p = p + 1
    if not (np.asarray(truth) == 0).any():
        t = t + 1
    npred, ntrue = int(p.max()), int(t.max())
    inter = np.zeros((ntrue + 1, npred + 1), np.int64)
    np.add.at(inter, (t.ravel(), p.ravel()), 1)
    area_t = inter.sum(1)
    area_p = inter.sum(0)
    it = inter[1:, 1:]
    union = area_t[1:, None] + area_p[None, 1:] - it
    iou = np.where(union > 0, it / np.maximum(union, 1), 0.0)
    match = iou > iou_threshold
    tp = int(match.sum())
    fp, fn = npred - tp, ntrue - tp
    ious = iou[match]
    return {
        "ap": tp / max(tp + fp + fn, 1),
        "precision": tp / max(npred, 1),
        "recall": tp / max(ntrue, 1),
        "mean_iou": float(ious.mean()) if ious.size else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "num_pred": npred,
        "num_true": ntrue,
    }


def save_label_png(path, labels):
    """Write a label map as a 16-bit PNG (ids above 65535 raise ValueError), atomically."""
    lab = np.asarray(labels)
    if lab.size and int(lab.max()) > 65535:
        raise ValueError(f"labels: {int(lab.max())} instances do not fit a 16-bit PNG")
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    Image.fromarray(lab.astype(np.uint16)).save(tmp, format="PNG")
    os.replace(tmp, path)


def colour_labels(labels, seed: int = 1) -> np.ndarray:
    """uint8 RGB: each instance in a random bright colour, background black."""
    lab = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng(seed)
    pal = rng.integers(60, 256, size=(int(lab.max()) + 1, 3)).astype(np.uint8)
    pal[0] = 0
    return pal[lab]


def describe_kind(meta: dict) -> str:
    """'fluorescence' / 'bright-field' / 'stained' from polarity and colour (a label for
    reports)."""
    if meta["polarity"] == "bright":
        return "fluorescence"
    return "stained" if meta["colour"] else "bright-field"
