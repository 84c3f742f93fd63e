"""Per-image evidence from a box, without any mask: what lies outside a box is background.

Used where the box-level method needs a quantity that differs from photo to photo (the
object's share of its box, the area target a of Dai et al. 2019 eq. 7), as a per-image prior
that the foreground provider is held to (`prior_consistency_loss`), to refine masks on the
photo's edges, and to check a learned mask without ground truth.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = [
    "ellipse_mask",
    "box_mask",
    "grabcut",
    "fill_outside_photo",
    "mask_diagnostics",
    "is_degenerate",
    "box_prior",
    "box_priors",
    "colour_contrast",
    "context_crop",
    "is_inverted_or_degenerate",
    "refine_with_grabcut",
    "refine_full_mask",
    "mask_evidence",
    "PRIOR_CONTEXT",
    "PRIOR_RESOLUTION",
    "REFINE_PRIOR_BLEND",
    "CORE_SEED_SCALE",
    "PRIOR_COLOUR",
    "REFINE_COLOUR",
    "REFINE_FILL",
    "REFINE_SELECT",
    "grabcut_image",
    "box_tightness",
    "prior_score",
    "PRIOR_CANDIDATES",
    "PRIOR_TIGHTNESS_POWER",
    "SMALL_MASK_MEET",
    "LOW_RANGE",
    "window_range",
    "stretch_low_range",
    "outside_likelier",
    "clean_prior",
    "PRIOR_CLEAN",
    "CLEAN_TIGHTNESS_SLACK",
    "CLEAN_SCALE",
]

#: The prior looks at a square window of half-side (0.5 + PRIOR_CONTEXT) x max(w, h) around the
#: box (the evaluation protocol's window), sampled at PRIOR_RESOLUTION pixels a side.
PRIOR_CONTEXT = 0.25
PRIOR_RESOLUTION = 128
#: Weight of the box's prior in the mask that refinement starts from (`refine_full_mask`, the
#: default of `indep-seg segment --refine grabcut`); chosen on the tuning halves (horse001-164,
#: ECSSD 0001-0500) among 0 and 0.5: docs/box_seg_notes.md, session 7.
REFINE_PRIOR_BLEND = 0.5
#: Where GrabCut from the box is degenerate (empty, full or a frame), it is run again with the
#: ellipse of this scale inside the box held as foreground (`grabcut(init="core")`) before the
#: ellipse itself is taken; chosen on the tuning halves among 0.25 and 0.5 (docs/box_seg_notes.md,
#: session 8).
CORE_SEED_SCALE = 0.5
#: The colour space of session 9's prior (now the first of `PRIOR_CANDIDATES`) and of the
#: refinement's GrabCut colour models (`grabcut(colour=...)`): CIE Lab (OpenCV's 8-bit encoding),
#: whose lightness axis apart from the chroma axes tells a shadowed object side from dark ground
#: better than RGB. Chosen on the tuning halves (horse001-164, ECSSD 0001-0500) among RGB, Lab,
#: YCrCb and the union of the RGB and Lab masks, with the window outside the photo filled
#: (`fill_outside_photo`): docs/box_seg_notes.md, session 9.
PRIOR_COLOUR = "lab"
#: The refinement's GrabCut (`refine_with_grabcut`) prepares its image as the prior's: the window
#: outside the photo filled, colours in `PRIOR_COLOUR`. Chosen on the tuning halves with session
#: 7's 30-minute networks (`benchmarks/study_refine.py`): horse001-164 0.688 (RGB, black outside the
#: photo) -> 0.701, ECSSD 0001-0500 0.804 -> 0.807; docs/box_seg_notes.md, session 9.
REFINE_COLOUR = PRIOR_COLOUR
REFINE_FILL = True
#: With a prior in the refinement's start (`prior_blend` > 0), the refined mask is kept only where
#: its `prior_score` is at least the prior's; otherwise the prior is the answer. Chosen on the
#: tuning halves with session 7's 30-minute networks (`benchmarks/study_refine.py`, session 10):
#: horse001-164 0.706 (always the refined mask) / 0.700 (the prior) / 0.703 (this), ECSSD
#: 0001-0500 0.815 / 0.822 / 0.823; the best mean of the two halves.
REFINE_SELECT = True
#: Where the photo is at hand (`refine_full_mask`), the refinement's GrabCut runs on the box's
#: window cut from the photo at `CLEAN_SCALE` x `PRIOR_RESOLUTION` pixels (`photo_window`), its
#: start and its mask resampled to and from the window's pixels, as the prior's cleaning does
#: (`CLEAN_PHOTO_DETAIL`). Chosen on the tuning halves with session 18's networks (the default
#: output: horses 0.7501 -> 0.7526, ECSSD 0.8434 -> 0.8509; docs/box_seg_notes.md, session 18).
REFINE_PHOTO_DETAIL = True
#: The prior's GrabCut settings `(init, colour, seed)`: from the box and with the box's core held
#: (`grabcut(init=...)`), colour models in CIE Lab and RGB, two k-means starts; `box_prior` keeps
#: the one with the highest `prior_score`. Chosen on the tuning halves (horse001-164, ECSSD
#: 0001-0500) against session 9's single chain (Lab from the box, the core retry where it is
#: degenerate): `benchmarks/study_prior_select.py`, docs/box_seg_notes.md, session 10.
PRIOR_CANDIDATES = (
    ("rect", "lab", 0),
    ("rect", "rgb", 0),
    ("core", "lab", 0),
    ("core", "rgb", 0),
    ("rect", "lab", 1),
    ("rect", "rgb", 1),
)
#: `prior_score` = colour contrast x tightness ** this; chosen among 1, 2, 3, 4 and 6 on the
#: tuning halves (session 10).
PRIOR_TIGHTNESS_POWER = 2
#: A mask under `is_degenerate`'s `min_fill` (0.1 of its box) still counts as an object mask when
#: it meets at least this share of its box's rows and columns (`box_tightness`): objects that fill
#: under a tenth of a tight box exist (issue #17's held-out video frames hold objects filling
#: 0.06-0.80 of their box), and they meet their box. Chosen on the tuning halves among 0.7, 0.8,
#: 0.9 and 0.95 (`benchmarks/study_prior_clean.py --study small`, session 11): horse001-164
#: unchanged (0.7005), ECSSD 0001-0500 0.8221 -> 0.8230 (its 13 objects under 0.25 of their box
#: 0.572 -> 0.609).
SMALL_MASK_MEET = 0.7
#: A window whose 8-bit values spread less than this between their 1st and 99th percentiles
#: (`window_range`: a dark or hazy photo) is stretched to 0-255 before GrabCut and `prior_score`
#: see it (`stretch_low_range`); 0 turns the stretch off. Half the 8-bit levels, checked on the
#: tuning halves (horse001-164, ECSSD 0001-0500) among 48-160 (`benchmarks/study_low_range.py`,
#: docs/box_seg_notes.md, session 13): no horse and one ECSSD photo fall under it (IoU unchanged),
#: the same photos four times darker (ranges 26-63) all do, and their prior recovers most of what
#: the dark loses (horses 0.669 -> 0.696, photos as they are 0.7005; ECSSD 0.798 -> 0.819, 0.823).
LOW_RANGE = 128
#: `box_prior`'s last step (`clean_prior`): GrabCut once more from the chosen mask, with the
#: pixels whose colour the background outside the box explains better than the mask does
#: (`outside_likelier`) started as probable background. GrabCut from a box starts its foreground
#: colour model from the whole box, and where the object fills little of its box (a horse's box is
#: half ground, between the legs and under the belly) that model keeps the ground's colours and the
#: mask keeps the ground. Chosen on the tuning halves (horse001-164, ECSSD 0001-0500) with
#: session 16's priors: horses 0.7005 -> 0.724, ECSSD 0.8230 -> 0.8241 (docs/box_seg_notes.md,
#: session 17).
PRIOR_CLEAN = True
#: A cleaned prior is kept only if it meets its box's rows and columns (`box_tightness`) at most
#: this much less than the prior did (and scores at least the prior's `prior_score`): cleaning
#: that cuts off a part of the object which shares the background's colours (a child's grey
#: trousers on grey paving) leaves rows of the tight box unmet. Chosen with `PRIOR_CLEAN` among
#: 0, 0.02, 0.05 and 0.1 (session 17: ECSSD's best; the horses gain more, up to 0.1).
CLEAN_TIGHTNESS_SLACK = 0.02
#: `clean_prior`'s GrabCut sees the window enlarged this many times: GrabCut's smoothness term
#: grows with the outline's length and its colour terms with the area, so at a finer grid a thin
#: leg or the gap between two legs costs less to keep apart. Chosen on the tuning halves among 1,
#: 1.5, 2 and 3 (the prior: horses 0.724 / 0.725 / 0.735 / 0.743, ECSSD 0.824 / 0.827 / 0.832 /
#: 0.835; docs/box_seg_notes.md, session 17); it costs the prior about 0.5 CPU seconds more a photo.
CLEAN_SCALE = 3.0
#: Where the photo itself is at hand (`box_priors`, `refine_full_mask`), the cleaning GrabCut
#: sees the box's context window cut from the photo at `CLEAN_SCALE` times `PRIOR_RESOLUTION`
#: (`detail`): the photo's own pixels, where a window of ~300 photo pixels has them, instead of
#: the 128-pixel window enlarged. Chosen on the tuning halves (session 18; the prior: horses
#: 0.7429 -> 0.7477, ECSSD 0.8348 -> 0.8439; docs/box_seg_notes.md), at the same cost.
CLEAN_PHOTO_DETAIL = True


def window_range(image):
    """The spread between the 1st and 99th percentiles of a uint8 window's values (all channels
    together): about 255 for a photo that uses every level, under 64 for one four times darker."""
    lo, hi = np.percentile(np.asarray(image), (1, 99))
    return float(hi - lo)


def stretch_low_range(image, threshold=None):
    """A window whose `window_range` is under `threshold` (a dark or hazy photo; default
    `LOW_RANGE`, read when called; 0: never) stretched linearly, the same gain and offset on every
    channel (hues kept), so that its 1st and 99th percentiles become 0 and 255; any other window
    (and a flat one) as it is. uint8 `[H, W, 3]`.

    GrabCut's colour models and `colour_contrast`'s 8-level bins see a dark photo's few levels as
    one colour; stretched, they see the photo's contrast again.
    """
    threshold = LOW_RANGE if threshold is None else threshold
    img = np.asarray(image, np.uint8)
    lo, hi = np.percentile(img, (1, 99))
    if hi - lo >= threshold or hi - lo < 1:
        return img
    return np.clip((img.astype(np.float32) - lo) * 255 / (hi - lo), 0, 255).astype(np.uint8)


def box_mask(shape, box):
    """Boolean `[H, W]` mask of the pixels whose centres lie in the box `x0, y0, x1, y1`."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    x0, y0, x1, y1 = box
    return (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)


def ellipse_mask(shape, box, scale=1.0):
    """Boolean `[H, W]` ellipse inscribed in the box (semi-axes scaled by `scale`)."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = max((x1 - x0) / 2 * scale, 0.5), max((y1 - y0) / 2 * scale, 0.5)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def _int_box(box, shape):
    h, w = shape[:2]
    x0, y0 = max(int(round(box[0])), 0), max(int(round(box[1])), 0)
    x1, y1 = min(int(round(box[2])), w), min(int(round(box[3])), h)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def grabcut_image(image, colour="rgb"):
    """A uint8 RGB `[H, W, 3]` image in the 8-bit colour space GrabCut's colour models are to live
    in: "rgb" (as OpenCV's BGR), "lab" (CIE Lab) or "ycrcb" (OpenCV's encodings)."""
    import cv2

    rgb = np.ascontiguousarray(np.asarray(image, np.uint8))
    if colour == "rgb":
        return np.ascontiguousarray(rgb[..., ::-1])
    if colour in ("lab", "ycrcb"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB if colour == "lab" else cv2.COLOR_RGB2YCrCb)
    raise ValueError(f"colour: expected 'rgb', 'lab' or 'ycrcb', got {colour!r}")


def grabcut(image, box, iterations=5, init="rect", core=CORE_SEED_SCALE, colour="rgb", seed=0):
    """OpenCV GrabCut (Rother et al. 2004) from a box: boolean `[H, W]` foreground.

    `init="rect"`: outside the box is background, inside probably foreground (OpenCV's
    GC_INIT_WITH_RECT). `init="ellipse"`: the inscribed ellipse starts as probable foreground
    and the box's corners outside it as probable background. `init="core"`: as "ellipse", and the
    ellipse of scale `core` (of the inscribed one) is held as foreground, as a user's foreground
    stroke in GrabCut's interactive use: the mask cannot collapse to nothing.
    `colour`: the space GrabCut's colour models live in, "rgb" (OpenCV's own), "lab" (CIE Lab) or
    "ycrcb" (OpenCV's 8-bit encodings). `seed`: OpenCV's random seed for GrabCut's k-means start
    (the same photo and seed give the same mask).
    """
    import cv2

    img = grabcut_image(image, colour)
    x0, y0, x1, y1 = _int_box(box, img.shape)
    mask = np.zeros(img.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut's k-means start draws from OpenCV's global RNG: same photo, same mask
    cv2.setRNGSeed(seed)
    try:
        if init == "rect":
            cv2.grabCut(
                img, mask, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT
            )
        elif init in ("ellipse", "core"):
            inside = box_mask(img.shape, (x0, y0, x1, y1))
            mask[inside] = cv2.GC_PR_FGD
            mask[inside & ~ellipse_mask(img.shape, box)] = cv2.GC_PR_BGD
            if init == "core":
                mask[inside & ellipse_mask(img.shape, box, core)] = cv2.GC_FGD
            cv2.grabCut(img, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        else:
            raise ValueError(f"init: expected 'rect', 'ellipse' or 'core', got {init!r}")
    except cv2.error:
        return np.zeros(img.shape[:2], bool)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def mask_diagnostics(mask, box):
    """Unsupervised shape checks of one mask against its box.

    Returns a dict: `fill` (share of the box covered), `outside` (share of the mask outside the
    box), `frame` (mean of the mask on the box's outer band of 1/8 of its size) and `core` (mean
    on the inner half-size ellipse). A mask that carves the background inside the box has
    frame > core.
    """
    m = np.asarray(mask, np.float32)
    inside = box_mask(m.shape, box)
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    inner = box_mask(m.shape, (x0 + bw / 8, y0 + bh / 8, x1 - bw / 8, y1 - bh / 8))
    band = inside & ~inner
    core = ellipse_mask(m.shape, box, 0.5)
    total = m.sum()
    return {
        "fill": float(m[inside].mean()) if inside.any() else 0.0,
        "outside": float(m[~inside].sum() / total) if total > 0 else 0.0,
        "frame": float(m[band].mean()) if band.any() else 0.0,
        "core": float(m[core].mean()) if core.any() else 0.0,
    }


def is_degenerate(
    mask,
    box,
    min_fill=0.1,
    max_fill=0.97,
    frame_excess=0.2,
    min_meet=SMALL_MASK_MEET,
    empty_fill=0.01,
) -> bool:
    """True for a mask that no object mask looks like: (nearly) empty or full in its box, or a
    frame (its box's outer band filled more than its core: the background carved inside the
    box). Needs no ground truth.

    A mask filling less than `min_fill` of its box is degenerate unless it meets the box
    (`box_tightness` >= `min_meet`, the projection prior) without being a thin frame (its outer
    band no fuller than its core): a thin object (a bike, a cross-shaped sign) fills little of
    its tight box but reaches all four sides of it, while a collapsed mask is a blob or a speck
    that does not, and a GrabCut outline along the box's edges is background. Under
    `empty_fill`, always degenerate.
    """
    d = mask_diagnostics(mask, box)
    if d["fill"] < min_fill and (
        d["fill"] < empty_fill or d["frame"] > d["core"] or box_tightness(mask, box) < min_meet
    ):
        return True
    return d["fill"] > max_fill or d["frame"] > d["core"] + frame_excess


def fill_outside_photo(image, box, tol=2):
    """A box's context window with its part outside the photo filled with the photo's background.

    A window (`context_crop`, the evaluation crops) is black where it leaves the photo; GrabCut
    takes that black for background colour, and a dark object with it. Returns a copy of the uint8
    `[H, W, 3]` window whose all-black rows and columns at its edges (values <= `tol`; never rows
    or columns of the box) are filled with the nearest photo pixel outside the box: background the
    photo shows, never the object. The image itself where there is nothing to fill.
    """
    from scipy import ndimage

    img = np.asarray(image, np.uint8)
    h, w = img.shape[:2]
    dark = img.max(axis=-1) <= tol
    rows, cols = dark.all(axis=1), dark.all(axis=0)
    x0, y0, x1, y1 = _int_box(box, img.shape)
    r0 = next((r for r in range(y0) if not rows[r]), y0)
    r1 = next((r for r in range(h, y1, -1) if not rows[r - 1]), y1)
    c0 = next((c for c in range(x0) if not cols[c]), x0)
    c1 = next((c for c in range(w, x1, -1) if not cols[c - 1]), x1)
    if (r0, r1, c0, c1) == (0, h, 0, w):
        return img
    known = np.zeros((h, w), bool)
    known[r0:r1, c0:c1] = True
    known &= ~box_mask(img.shape, box)
    if not known.any():
        return img
    _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
    out = img[iy, ix]
    out[r0:r1, c0:c1] = img[r0:r1, c0:c1]
    return np.ascontiguousarray(out)


def box_tightness(mask, box):
    """How well a mask fills its box's rows and columns: the mean, over the box's rows and
    columns, of whether the mask reaches that row or column.

    A box drawn tight around an object meets the object in every row and every column (the
    projection prior of BoxInst, Tian et al. 2021): 1 for such a mask, less for a mask that
    misses the legs, the head or one side of the object.
    """
    x0, y0, x1, y1 = _int_box(box, np.shape(mask))
    sub = np.asarray(mask, bool)[y0:y1, x0:x1]
    if sub.size == 0:
        return 0.0
    return float(0.5 * (sub.any(axis=1).mean() + sub.any(axis=0).mean()))


def prior_score(image, mask, box):
    """Label-free score of a candidate prior: `colour_contrast` (the mask is unlike the background
    outside the box) times `box_tightness` ** `PRIOR_TIGHTNESS_POWER` (it meets every row and
    column of its tight box). `image` is the uint8 window GrabCut saw, in RGB."""
    return colour_contrast(image, mask, box) * box_tightness(mask, box) ** PRIOR_TIGHTNESS_POWER


def _holds_evidence(mask, box, init):
    """A candidate is kept unless degenerate; a core-held GrabCut also has to grow past its seed
    (a mask that did not holds no evidence of the photo: a flat or uniformly textured box)."""
    if is_degenerate(mask, box):
        return False
    if init != "core":
        return True
    seed = ellipse_mask(mask.shape, box, CORE_SEED_SCALE)
    return (mask & ~seed).sum() > 0.05 * seed.sum()


def outside_likelier(image, mask, box, bins=8, margin=0.0):
    """Pixels whose colour is likelier under the background than under the mask: boolean
    `[H, W]`, True where `log p_out(c) - log p_mask(c) > margin` for the pixel's colour bin c.

    `p_out` is the colour histogram (`bins`^3 bins of the uint8 image's three channels, half a
    count added to every bin) of the pixels outside the box, the known background; `p_mask` that
    of the mask's pixels in the box. With `margin` 0 (equal priors) a pixel goes to the side whose
    colours it is the more typical of. Outside the box, False."""
    img = np.asarray(image, np.uint8)
    q = img.astype(np.int32) * bins // 256
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    inside = box_mask(img.shape, box)
    m = np.asarray(mask, bool) & inside

    def log_hist(where):
        h = np.bincount(idx[where], minlength=bins**3).astype(np.float64) + 0.5
        return np.log(h / h.sum())

    if not m.any() or inside.all():
        return np.zeros(img.shape[:2], bool)
    return inside & (log_hist(~inside)[idx] - log_hist(m)[idx] > margin)


def clean_prior(
    image,
    box,
    prior,
    colour=PRIOR_COLOUR,
    iterations=5,
    seed=0,
    margin=0.0,
    slack=None,
    select=True,
    scale=None,
    detail=None,
):
    """The prior with the background its foreground colour model absorbed taken out
    (`PRIOR_CLEAN`): boolean `[H, W]`.

    GrabCut (Rother et al. 2004) runs again from the prior, with the prior's pixels that the
    background outside the box explains better (`outside_likelier`, in the colour space
    `colour`, log-ratio above `margin`) started as probable background, the rest of the prior as
    probable foreground and the rest of the box as probable background. The result replaces the
    prior only if it is not degenerate (`is_degenerate`) and, with `select`, meets its box's rows
    and columns at most `slack` (default `CLEAN_TIGHTNESS_SLACK`) less than the prior
    (`box_tightness`) and scores at least the prior's `prior_score`; otherwise the prior is
    returned. `image` is the uint8 RGB window as `box_prior` prepared it. This GrabCut sees the
    window enlarged `scale` times (default `CLEAN_SCALE`; bilinear, the prior nearest) and its
    mask is brought back to the window's pixels (area average, at least half). `detail`, the
    same window at a higher resolution (uint8, prepared as `image`; `CLEAN_PHOTO_DETAIL`), is
    used instead of the enlarged window where given (`scale` is then not used).
    """
    import cv2

    prior = np.asarray(prior, bool)
    h, w = prior.shape
    if detail is not None:
        detail = np.asarray(detail, np.uint8)
        if detail.ndim != 3 or detail.shape[2] != 3:
            raise ValueError(f"detail must be an RGB window [H, W, 3], got shape {detail.shape}")
        size = (detail.shape[1], detail.shape[0])
    else:
        scale = CLEAN_SCALE if scale is None else float(scale)
        size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))  # OpenCV's (W, H)
    fx, fy = size[0] / w, size[1] / h
    big_box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
    big_prior = prior
    img = grabcut_image(image if detail is None else detail, colour)
    if detail is None and size != (w, h):
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    if size != (w, h):
        big_prior = cv2.resize(prior.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    inside = box_mask(img.shape, big_box)
    start = inside & big_prior & ~outside_likelier(img, big_prior, big_box, margin=margin)
    if not start.any():
        return prior
    gc = np.full(img.shape[:2], cv2.GC_BGD, np.uint8)
    gc[inside] = cv2.GC_PR_BGD
    gc[start] = cv2.GC_PR_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(img, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return prior
    out = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)) & inside
    if size != (w, h):
        out = cv2.resize(out.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
    out &= box_mask(prior.shape, box)
    if is_degenerate(out, box):
        return prior
    if not select:
        return out
    slack = CLEAN_TIGHTNESS_SLACK if slack is None else slack
    if box_tightness(out, box) < box_tightness(prior, box) - slack:
        return prior
    if prior_score(image, out, box) < prior_score(image, prior, box):
        return prior
    return out


def box_prior(
    image, box, iterations=5, low_range=None, return_score=False, clean=None, detail=None
):
    """The per-image prior of one box, boolean `[H, W]` in the image's pixels.

    The window's part outside the photo is filled with the photo's background
    (`fill_outside_photo`) and a low-range window (under `low_range`, default `LOW_RANGE`: a dark
    or hazy photo) is stretched (`stretch_low_range`; 0 turns it off); then GrabCut runs once per
    setting of `PRIOR_CANDIDATES` (from the box, or with the box's core held as foreground;
    colour models in RGB or Lab; two k-means starts), degenerate masks are dropped
    (`is_degenerate`: GrabCut's colour models gave the whole box to one side), and the mask with
    the highest `prior_score` is the prior: the candidate most unlike the background that also
    fills its tight box. With `clean` (default `PRIOR_CLEAN`) that mask is then cleaned of the
    background GrabCut's foreground colour model absorbed (`clean_prior`; `detail`: the same
    window cut from the photo at a higher resolution, `clean_detail(photo, box)`, prepared as
    the window and used for the cleaning). Where every candidate is degenerate, the inscribed
    ellipse.

    With `return_score`, `(mask, score)`: the chosen mask's `prior_score`, the prior's label-free
    confidence (0 for the ellipse, which holds no evidence of the photo).
    """
    img = stretch_low_range(fill_outside_photo(image, box), low_range)
    best, best_score = None, -np.inf
    for init, colour, seed in PRIOR_CANDIDATES:
        mask = grabcut(img, box, iterations, init=init, colour=colour, seed=seed)
        if not _holds_evidence(mask, box, init):
            continue
        score = prior_score(img, mask, box)
        if score > best_score:
            best, best_score = mask, score
    if best is None:
        best, best_score = ellipse_mask(img.shape[:2], box), 0.0
    elif PRIOR_CLEAN if clean is None else clean:
        if detail is not None:
            detail = np.asarray(detail)
            f = np.asarray([detail.shape[1] / img.shape[1], detail.shape[0] / img.shape[0]] * 2)
            detail = stretch_low_range(
                fill_outside_photo(detail, np.asarray(box, np.float64) * f), low_range
            )
        cleaned = clean_prior(img, box, best, iterations=iterations, detail=detail)
        if cleaned is not best:
            best, best_score = cleaned, prior_score(img, cleaned, box)
    return (best, float(best_score)) if return_score else best


def context_crop(image, box, extra=None, resolution=PRIOR_RESOLUTION):
    """The box's context window (`PRIOR_CONTEXT`) of a photo at `resolution`.

    Args:
        image: `[H, W, 3]` uint8 (or float in [0, 1]) photo.
        box: `x0, y0, x1, y1` in the photo's pixels.
        extra: optional `[H, W]` float map (a mask) cropped alongside.

    Returns:
        `(uint8 crop [r, r, 3], box in crop pixels [4], window [4] in photo pixels, extra crop or
        None)`.
    """
    import tensorflow as tf

    from indep_seg.box_crop import box_window, crop_to_window

    box = np.asarray(box, np.float32)
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    planes = (
        img
        if extra is None
        else np.concatenate([img, np.asarray(extra, np.float32)[..., None]], -1)
    )
    win = box_window(box[None], PRIOR_CONTEXT, True).numpy()
    crop = crop_to_window(tf.convert_to_tensor(planes[None]), win, resolution).numpy()[0]
    s = resolution / float(win[0, 2] - win[0, 0])
    cbox = (box - np.tile(win[0, :2], 2)) * s
    crop8 = (np.clip(crop[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    return crop8, cbox, win[0], (None if extra is None else crop[..., 3])


def photo_window(image, box):
    """The box's context window cut from the photo at `CLEAN_SCALE` x `PRIOR_RESOLUTION` pixels:
    uint8 `[r, r, 3]`, as `context_crop` (the photo's own detail, where it has more pixels than
    the 128-pixel window)."""
    return context_crop(image, box, resolution=int(round(PRIOR_RESOLUTION * CLEAN_SCALE)))[0]


def clean_detail(image, box):
    """`photo_window`, `box_prior`'s `detail` for the cleaning GrabCut (`CLEAN_PHOTO_DETAIL`);
    None when the prior is not cleaned or the detail is off."""
    if not (PRIOR_CLEAN and CLEAN_PHOTO_DETAIL):
        return None
    return photo_window(image, box)


def box_priors(items, resolution, margin=0.0, square=False, iterations=5, return_scores=False):
    """Priors of a data set's boxes, in the experiment's crops.

    Each photo is cut to the box's context window (`context_crop`), `box_prior` runs there, and
    its mask is resampled into the crop window `box_window(box, margin, square)` at `resolution`.

    Args:
        items: sequence of `(name, uint8 image [H, W, 3], box)`.
        return_scores: also return each prior's `prior_score` (`box_prior(return_score=True)`).

    Returns:
        `[N, resolution, resolution, 1]` float32 in [0, 1]; with `return_scores`, `(priors,
        scores [N] float32)`.
    """
    import tensorflow as tf

    from indep_seg.box_crop import box_window, crop_to_window

    def one(item):
        _, image, box = item
        crop8, cbox, win, _ = context_crop(image, box)
        mask, score = box_prior(
            crop8, cbox, iterations, return_score=True, detail=clean_detail(image, box)
        )
        return mask.astype(np.float32), win, score

    # GrabCut releases the GIL and OpenCV's random generator is per thread (`grabcut` seeds it
    # before every call): the photos' priors are computed side by side, the same as one by one
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with ThreadPoolExecutor(max(1, min(len(items), cores or 1))) as pool:
        done = list(pool.map(one, items))
    out = []
    for (_, _, box), (prior, win, _) in zip(items, done):
        s = PRIOR_RESOLUTION / float(win[2] - win[0])
        train_win = box_window(np.asarray(box, np.float32)[None], margin, square).numpy()
        inner = ((train_win - np.tile(win[:2], 2)) * s).astype(np.float32)
        out.append(
            crop_to_window(
                tf.convert_to_tensor(prior[None, :, :, None]), inner, resolution
            ).numpy()[0]
        )
    priors = np.stack(out).astype(np.float32)
    if return_scores:
        return priors, np.asarray([score for _, _, score in done], np.float32)
    return priors


def colour_contrast(image, mask, box, bins=8):
    """How unlike the known background a mask's pixels are: 1 - Bhattacharyya coefficient of the
    colour histograms (`bins`^3 RGB bins) of the mask's pixels in the box and of the pixels
    outside the box. In [0, 1]; higher is a mask that picked out what the background is not.
    `image` is uint8 `[H, W, 3]` around the box (with context outside it)."""
    img = np.asarray(image, np.uint8)
    q = img.astype(np.int32) * bins // 256
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    inside = box_mask(img.shape, box)
    m = np.asarray(mask, np.float32) * inside
    outside = (~inside).astype(np.float32)
    if m.sum() < 1 or outside.sum() < 1:
        return 0.0
    hf = np.bincount(idx.ravel(), m.ravel(), bins**3)
    hb = np.bincount(idx.ravel(), outside.ravel(), bins**3)
    bc = np.sum(np.sqrt(hf / hf.sum() * hb / hb.sum()))
    return float(1.0 - bc)


def is_inverted_or_degenerate(image, mask, box, margin=0.05) -> bool:
    """True when a boolean mask is degenerate (`is_degenerate`) or looks inverted: the rest of
    the box (box and not mask) differs more from the background outside the box, by colour
    (`colour_contrast`), than the mask does (the background carved instead of the object)."""
    if is_degenerate(mask, box):
        return True
    rest = box_mask(mask.shape, box) & ~mask
    return colour_contrast(image, rest, box) > colour_contrast(image, mask, box) + margin


def refine_with_grabcut(
    image,
    mask,
    box,
    iterations=3,
    guard=True,
    prior_blend=0.0,
    colour=REFINE_COLOUR,
    fill=REFINE_FILL,
    select=REFINE_SELECT,
    detail=None,
    on_detail=None,
):
    """Boundary refinement of a soft mask with GrabCut (Rother et al. 2004) on the photo.

    GrabCut starts from the mask (inside the box: probably foreground where `mask > 0.5`,
    probably background elsewhere; outside the box: background) and moves the outline to the
    photo's colour edges. Where the refined mask is degenerate (`is_degenerate`) or GrabCut
    cannot run, the starting mask is kept, thresholded at 0.5 (masks come out binary: no haze
    over the box). With `guard`, a mask that is degenerate or inverted
    (`is_inverted_or_degenerate`) is replaced by the box's own prior (`box_prior`) instead of
    refined. With `prior_blend` w > 0 GrabCut starts from `(1 - w) mask + w prior`; with
    `select` as well, the refined mask is returned only if its `prior_score` is at least the
    prior's, else the prior. `colour` and `fill` prepare GrabCut's image as the prior's
    (`grabcut_image`; with `fill`, `fill_outside_photo`; a low-range window is stretched as the
    prior's, `stretch_low_range`). `detail` (`photo_window`) is handed to `box_prior` (with
    `CLEAN_PHOTO_DETAIL`) and, with `on_detail` (default `REFINE_PHOTO_DETAIL`), GrabCut runs on
    it, prepared the same way, from the start resampled to its pixels (nearest), and its mask is
    brought back to the window's pixels (area average, at least half). Returns float32 `[H, W]`
    in [0, 1], zero outside the box.
    """
    import cv2

    filled = fill_outside_photo(image, box) if fill else np.asarray(image, np.uint8)
    filled = stretch_low_range(filled)
    img = grabcut_image(filled, colour)
    m = np.asarray(mask, np.float32)
    inside = box_mask(img.shape, box)
    if not inside.any():
        return m * inside
    prior_detail = detail if CLEAN_PHOTO_DETAIL else None
    if guard and is_inverted_or_degenerate(image, m > 0.5, box):
        return box_prior(image, box, detail=prior_detail).astype(np.float32)
    prior = None
    if prior_blend > 0:
        prior = box_prior(image, box, detail=prior_detail)
        m = (1.0 - prior_blend) * m + prior_blend * prior
    work, work_box, work_m = img, box, m
    if detail is not None and (REFINE_PHOTO_DETAIL if on_detail is None else on_detail):
        d = np.asarray(detail, np.uint8)
        f = np.asarray([d.shape[1] / img.shape[1], d.shape[0] / img.shape[0]] * 2)
        work_box = np.asarray(box, np.float64) * f
        work = grabcut_image(
            stretch_low_range(fill_outside_photo(d, work_box) if fill else d), colour
        )
        work_m = cv2.resize(m, (d.shape[1], d.shape[0]), interpolation=cv2.INTER_NEAREST)
    work_inside = box_mask(work.shape, work_box)
    gc = np.full(work.shape[:2], cv2.GC_BGD, np.uint8)
    gc[work_inside] = np.where(work_m[work_inside] > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    if not (gc == cv2.GC_PR_FGD).any() or not (gc != cv2.GC_PR_FGD).any():
        return ((m > 0.5) & inside).astype(np.float32)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut's k-means start draws from OpenCV's global RNG: same photo, same mask
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(work, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return ((m > 0.5) & inside).astype(np.float32)
    out = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)) & work_inside
    if work is not img:
        size = (img.shape[1], img.shape[0])
        out = cv2.resize(out.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
        out &= inside
    if is_degenerate(out, box):
        return ((m > 0.5) & inside).astype(np.float32)
    if select and prior is not None:
        if prior_score(filled, out, box) < prior_score(filled, prior, box):
            return prior.astype(np.float32)
    return out.astype(np.float32)


def refine_full_mask(
    image,
    mask,
    box,
    prior_blend=REFINE_PRIOR_BLEND,
    colour=REFINE_COLOUR,
    fill=REFINE_FILL,
    select=REFINE_SELECT,
):
    """`refine_with_grabcut` for a full-size mask of a photo, run in the box's context window
    (`context_crop`; the prior cleaned and GrabCut run on the photo's own window, `photo_window`,
    as `CLEAN_PHOTO_DETAIL` and `REFINE_PHOTO_DETAIL` say) and pasted back: float32 `[H, W]`, zero
    outside the box.

    Args:
        image: `[H, W, 3]` uint8 or float in [0, 1].
        mask: `[H, W]` soft mask in [0, 1] (from any model or server).
        box: `x0, y0, x1, y1` in the photo's pixels.
        prior_blend: weight of the box's prior in the starting mask (`refine_with_grabcut`).
        colour, fill: how GrabCut's image is prepared (`refine_with_grabcut`).
        select: the refined mask or the prior, by `prior_score` (`refine_with_grabcut`).
    """
    import tensorflow as tf

    from indep_seg.box_crop import paste_back

    mask = np.asarray(mask, np.float32)
    box = np.asarray(box, np.float32)
    img8, cbox, win, crop_mask = context_crop(image, box, extra=mask)
    refined = refine_with_grabcut(
        img8,
        crop_mask,
        cbox,
        prior_blend=prior_blend,
        colour=colour,
        fill=fill,
        select=select,
        detail=photo_window(image, box)
        if REFINE_PHOTO_DETAIL or (PRIOR_CLEAN and CLEAN_PHOTO_DETAIL)
        else None,
    )
    back = paste_back(
        tf.convert_to_tensor(refined[None, :, :, None]), win[None], mask.shape
    ).numpy()[0, :, :, 0]
    return np.clip(np.where(box_mask(mask.shape, box), back, 0.0), 0.0, 1.0).astype(np.float32)


def mask_evidence(image, mask, box):
    """Unsupervised evidence on one full-size mask of a boxed photo (no ground truth).

    In the box's context window: the colour contrast (`colour_contrast`) of the mask, of the
    inscribed ellipse and of the filled box, and whether the mask is degenerate.
    """
    crop8, cbox, _, m = context_crop(image, box, extra=mask)
    ell = ellipse_mask(crop8.shape, cbox)
    return {
        "contrast": colour_contrast(crop8, m > 0.5, cbox),
        "contrast_ellipse": colour_contrast(crop8, ell, cbox),
        "contrast_box": colour_contrast(crop8, box_mask(crop8.shape, cbox), cbox),
        "degenerate": bool(is_degenerate(m > 0.5, cbox)),
        "crop": crop8,
        "crop_mask": m,
    }
