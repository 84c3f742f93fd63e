"""Study: per-image box priors (GrabCut variants, fallbacks) on a TUNING half only.

    .venv/bin/python benchmarks/study_box_prior.py --data horse --half tune
    .venv/bin/python benchmarks/study_box_prior.py --data ecssd --half tune --methods s9 \\
        --json benchmarks/results/study_box_prior_s9_ecssd_tune.json

Chose `indep_seg.box_prior.box_prior` (GrabCut from the box, 5 iterations, the ellipse where the
mask is degenerate; session 8: a second GrabCut with the box's core held as foreground before the
ellipse; session 9: the window outside the photo filled with the nearest photo pixel outside the
box, and GrabCut in CIE Lab, now `nbg_lab`; session 10: the best of six GrabCut settings by a
label-free score, `benchmarks/study_prior_select.py`); figures in docs/box_seg_notes.md,
sessions 7 to 10, and benchmarks/results/study_box_prior_s9.json. The test halves are measured
once, after the choice (`--half test --methods final`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fallback(mask, box, min_fill=0.1):
    from indep_seg.box_prior import ellipse_mask, is_degenerate

    return ellipse_mask(mask.shape, box) if is_degenerate(mask, box, min_fill=min_fill) else mask


def _retry(image, box, **grabcut_kw):
    """Rect GrabCut; where degenerate, GrabCut with `grabcut_kw`; where that is too, the ellipse."""
    from indep_seg.box_prior import grabcut, is_degenerate

    mask = grabcut(image, box)
    return _fallback(grabcut(image, box, **grabcut_kw), box) if is_degenerate(mask, box) else mask


def _scaled(box, s, shape):
    """The box grown (s > 1) or shrunk about its centre, clipped to the image."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * s, (y1 - y0) / 2 * s
    h, w = shape[:2]
    return [max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, w), min(cy + hh, h)]


def prior_s8(image, box, iterations=5, colour="rgb", seed=0, scale=1.0):
    """Session 8's `box_prior` (rect GrabCut, the core retry, the ellipse) on the window as it is,
    in one colour space, with GrabCut's random seed and the GrabCut rectangle scaled by `scale`
    (the degeneracy checks stay on the true box)."""
    from indep_seg.box_prior import CORE_SEED_SCALE, ellipse_mask, grabcut, is_degenerate

    kw = {"colour": colour, "seed": seed}
    b2 = _scaled(box, scale, image.shape) if scale != 1.0 else box
    mask = grabcut(image, b2, iterations, **kw)
    if not is_degenerate(mask, box):
        return mask
    mask = grabcut(image, b2, iterations, init="core", **kw)
    seed_m = ellipse_mask(mask.shape, b2, CORE_SEED_SCALE)
    if not is_degenerate(mask, box) and (mask & ~seed_m).sum() > 0.05 * seed_m.sum():
        return mask
    return ellipse_mask(mask.shape, box)


def _photo_rect(image, box, tol=2):
    """Rows/columns [r0, r1) x [c0, c1) of the window inside the photo (all-black edge rows and
    columns removed, never into the box)."""
    from indep_seg.box_prior import _int_box

    dark = np.asarray(image).max(-1) <= tol
    rows, cols = dark.all(1), dark.all(0)
    h, w = dark.shape
    x0, y0, x1, y1 = _int_box(box, image.shape)
    r0 = next((r for r in range(y0) if not rows[r]), y0)
    r1 = next((r for r in range(h, y1, -1) if not rows[r - 1]), y1)
    c0 = next((c for c in range(x0) if not cols[c]), x0)
    c1 = next((c for c in range(w, x1, -1) if not cols[c - 1]), x1)
    return r0, r1, c0, c1


def _trimmed(fn):
    """GrabCut on the part of the window inside the photo only; zero elsewhere."""

    def f(image, box):
        r0, r1, c0, c1 = _photo_rect(image, box)
        out = np.zeros(image.shape[:2], bool)
        b = [box[0] - c0, box[1] - r0, box[2] - c0, box[3] - r0]
        out[r0:r1, c0:c1] = fn(np.ascontiguousarray(image[r0:r1, c0:c1]), b)
        return out

    return f


def _replicated(fn, keep_touching=False):
    """The window outside the photo filled by replicating the photo's edge rows and columns;
    with `keep_touching`, a side the box reaches stays black (it would copy the object)."""
    import cv2

    def f(image, box):
        r0, r1, c0, c1 = _photo_rect(image, box)
        h, w = image.shape[:2]
        sub = np.ascontiguousarray(image[r0:r1, c0:c1])
        full = cv2.copyMakeBorder(sub, r0, h - r1, c0, w - c1, cv2.BORDER_REPLICATE)
        if keep_touching:
            x0, y0, x1, y1 = box
            if y0 <= r0 + 1:
                full[:r0] = 0
            if y1 >= r1 - 1:
                full[r1:] = 0
            if x0 <= c0 + 1:
                full[:, :c0] = 0
            if x1 >= c1 - 1:
                full[:, c1:] = 0
        return fn(full, box)

    return f


def _nearest_bg(fn):
    """The window outside the photo filled with the nearest photo pixel outside the box
    (`indep_seg.box_prior.fill_outside_photo`, adopted in session 9)."""
    from indep_seg.box_prior import fill_outside_photo

    return lambda image, box: fn(fill_outside_photo(image, box), box)


def _snap(fn, kind="slic", n=200, scale=50):
    """Each superpixel (SLIC with `n` segments, or Felzenszwalb at `scale`) takes the majority
    label of the mask inside it; zero outside the box."""
    from skimage.segmentation import felzenszwalb, slic

    from indep_seg.box_prior import box_mask

    def f(image, box):
        m = fn(image, box).astype(np.float64)
        if kind == "slic":
            seg = slic(image, n_segments=n, compactness=10.0, start_label=0, channel_axis=-1)
        else:
            seg = felzenszwalb(image, scale=scale, sigma=0.5, min_size=10)
        mean = np.bincount(seg.ravel(), m.ravel()) / np.maximum(np.bincount(seg.ravel()), 1)
        return (mean[seg] > 0.5) & box_mask(m.shape, box)

    return f


def _vote(fns, k):
    """Pixels that at least `k` of the priors `fns` call foreground."""
    return lambda image, box: np.sum([f(image, box) for f in fns], axis=0) >= k


def _methods():
    from indep_seg.box_prior import box_prior, grabcut

    lab = lambda im, b: prior_s8(im, b, colour="lab")  # noqa: E731
    nbg = _nearest_bg(prior_s8)
    nbg_lab = _nearest_bg(lab)
    return {
        "gc_rect5": lambda im, b: grabcut(im, b),
        "gc_rect5_fb": lambda im, b: _fallback(grabcut(im, b), b),  # session 7's box_prior
        "gc_rect5_fb_min0.05": lambda im, b: _fallback(grabcut(im, b), b, 0.05),
        "gc_rect5_fb_min0.02": lambda im, b: _fallback(grabcut(im, b), b, 0.02),
        "gc_ell5": lambda im, b: grabcut(im, b, init="ellipse"),
        "gc_ell5_fb": lambda im, b: _fallback(grabcut(im, b, init="ellipse"), b),
        "gc_rect10_fb": lambda im, b: _fallback(grabcut(im, b, 10), b),
        # session 8: a second GrabCut where the first is degenerate
        "gc_rect5_retry_ellipse": lambda im, b: _retry(im, b, init="ellipse"),
        "gc_rect5_retry_core0.25": lambda im, b: _retry(im, b, init="core", core=0.25),
        "gc_rect5_retry_core0.5": lambda im, b: _retry(im, b, init="core", core=0.5),
        # session 9 (prior_s8 = session 8's box_prior)
        "prior_s8": prior_s8,
        **{f"prior_s8_seed{s}": (lambda im, b, s=s: prior_s8(im, b, seed=s)) for s in (1, 2, 3, 4)},
        "prior_s8_seeds5_mean": _vote(
            [lambda im, b, s=s: prior_s8(im, b, seed=s) for s in range(5)], 3
        ),
        **{
            f"prior_s8_rect{s}": (lambda im, b, s=s: prior_s8(im, b, scale=s))
            for s in (0.95, 1.05, 1.1)
        },
        "prior_s8_rects3_vote": _vote(
            [lambda im, b, s=s: prior_s8(im, b, scale=s) for s in (0.95, 1.0, 1.05)], 2
        ),
        "lab": lab,
        "lab_seed1": lambda im, b: prior_s8(im, b, colour="lab", seed=1),
        **{f"prior_s8+slic{n}": _snap(prior_s8, "slic", n) for n in (100, 200, 400)},
        **{f"prior_s8+fz{s}": _snap(prior_s8, "fz", scale=s) for s in (25, 50, 100)},
        "trim": _trimmed(prior_s8),
        "trim_lab": _trimmed(lab),
        "repl": _replicated(prior_s8),
        "repl_lab": _replicated(lab),
        "repl_keep_touching": _replicated(prior_s8, True),
        "repl_keep_touching_lab": _replicated(lab, True),
        "repl_keep_touching_ycrcb": _replicated(
            lambda im, b: prior_s8(im, b, colour="ycrcb"), True
        ),
        "repl_keep_touching_seed1": _replicated(lambda im, b: prior_s8(im, b, seed=1), True),
        "repl_keep_touching_lab_seed1": _replicated(
            lambda im, b: prior_s8(im, b, colour="lab", seed=1), True
        ),
        "repl_union_rgb_lab": _vote([_replicated(prior_s8), _replicated(lab)], 1),
        "trim_seed1": _trimmed(lambda im, b: prior_s8(im, b, seed=1)),
        "nbg": nbg,
        "nbg_lab": nbg_lab,
        "nbg_seed1": _nearest_bg(lambda im, b: prior_s8(im, b, seed=1)),
        "nbg_lab_seed1": _nearest_bg(lambda im, b: prior_s8(im, b, colour="lab", seed=1)),
        "nbg_union_rgb_lab": _vote([nbg, nbg_lab], 1),
        "nbg_intersection_rgb_lab": _vote([nbg, nbg_lab], 2),
        "box_prior": box_prior,  # the library's default
    }


#: the variants measured in session 9 (`--methods s9`) and the test halves' rows (`final`)
GROUPS = {
    "s9": [],  # filled in main(): every session-9 name
    "final": ["gc_rect5", "prior_s8", "nbg_lab", "box_prior"],
}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="horse")
    p.add_argument("--half", default="tune")
    p.add_argument("--methods", default="", help="comma-separated names, or a group: s9, final")
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--json", default="", help="write {method: IoU, ...} and timings here")
    args = p.parse_args(argv)
    from benchmarks.box_seg_eval import Evaluator, baseline_masks, eval_crops, load_dataset

    study = _methods()
    GROUPS["s9"] = [k for k in list(study)[list(study).index("prior_s8") :]]
    methods = args.methods.split(",") if args.methods else list(study)
    methods = [n for m in methods for n in GROUPS.get(m, [m])]
    unknown = [m for m in methods if m not in study]
    if unknown:
        raise SystemExit(
            f"--methods: unknown {unknown}; known: {sorted(study)} or {sorted(GROUPS)}"
        )
    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev, args.res)
    out = {"data": args.data, "half": args.half, "n": len(items), "iou": {}, "s_per_photo": {}}
    for k, v in baseline_masks(ev).items():
        out["iou"][k] = ev.scores(v)["iou"]
        print(k, round(out["iou"][k], 4), flush=True)
    for m in methods:
        t = time.time()
        masks = np.stack([study[m](imgs[i], boxes[i]) for i in range(len(imgs))])
        dt = time.time() - t
        if masks.shape[1] != 128:
            import cv2

            masks = np.stack(
                [
                    cv2.resize(x.astype(np.float32), (128, 128), interpolation=cv2.INTER_LINEAR)
                    for x in masks
                ]
            )
        s = ev.scores(masks)
        out["iou"][m] = s["iou"]
        out["s_per_photo"][m] = dt / len(imgs)
        print(m, round(s["iou"], 4), f"{dt:.1f}s", flush=True)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
