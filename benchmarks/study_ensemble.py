"""Study (issue #17, session 12): the network's masks as candidates beside the prior's GrabCut
masks, and candidates combined by vote, on the TUNING halves only (horse001-164, ECSSD
0001-0500).

    taskset -c 0 .venv/bin/python benchmarks/study_ensemble.py --data horse --model-dir RUN

The prior (`box_prior`) picks one of six GrabCut masks per photo by `prior_score`; the default
output refines half the network's mask and half the prior and keeps that or the prior by the same
score. Both choose one mask; the best candidate per photo by IoU (an upper bound) is 0.716 on the
horses. Here, in the evaluation window (the prior's window): the network's own mask, GrabCut from
it, and from its blend with the prior join the candidates, and rules that choose or vote among
them are scored: the prior's score alone, with a third factor for how well the outline follows
the photo's colour edges, and with every candidate also snapped to SLIC superpixels. Every rule
is label-free; IoU only scores. GrabCut candidates come from `study_prior_select.py`'s cache
(computed if absent).

`--study photometric` asks how the prior holds when the photo's colour or light changes (a
robustness probe, no setting chosen): the same tuning-half photos grey, four times darker, and
stretched to their 1st-99th percentiles or with CLAHE on L before the prior:

    taskset -c 0 .venv/bin/python benchmarks/study_ensemble.py --data horse --study photometric

Writes benchmarks/results/study_ensemble_<data>_tune<tag>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.box_seg_eval import Evaluator, eval_crops, load_dataset  # noqa: E402

GC6 = ["rect_lab", "rect_rgb", "core_lab", "core_rgb", "rect_lab_s1", "rect_rgb_s1"]


def gc_candidates(data, ev, imgs, boxes, cache_dir):
    from benchmarks import study_prior_select as sps

    names = list(sps._candidates())
    cache = Path(cache_dir) / f"{data}_tune.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        return {k: z[f"m_{k}"] for k in names}
    masks, _ = sps.compute(imgs, boxes, names)
    return masks


def net_candidates(model_dir, ev, imgs, boxes, cache):
    """The network's soft mask in the evaluation window, and GrabCut from it (alone and blended
    half with `prior`)."""
    if cache.exists():
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    from indep_seg.segmenter import Segmenter

    seg = Segmenter.load(Path(model_dir) / "segmenter")
    fulls = seg.predict([im for _, im, _ in ev.items], [b for _, _, b in ev.items])
    soft = np.stack([ev.crop_full(i, m) for i, m in enumerate(fulls)]).astype(np.float32)
    out = {"net_soft": soft}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **out)
    return out


def grabcut_from(img, start, box):
    from indep_seg.box_prior import refine_with_grabcut

    return (
        refine_with_grabcut(img, start, box, guard=False, prior_blend=0.0, select=False) > 0.5
    )


def photometric(args):
    """The prior on the tuning half's photos changed in colour or light (a robustness probe)."""
    import cv2

    from benchmarks.common import write_json_atomic
    from indep_seg.box_prior import box_prior

    items, gts = load_dataset(args.data, "tune")
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)

    def stretch(im):
        lo, hi = np.percentile(im, (1, 99))
        return np.clip((im.astype(np.float32) - lo) * 255 / max(hi - lo, 1), 0, 255).astype(
            np.uint8
        )

    def clahe(im):
        lab = cv2.cvtColor(im, cv2.COLOR_RGB2LAB)
        lab[..., 0] = cv2.createCLAHE(2.0, (4, 4)).apply(lab[..., 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)

    def grey(im):
        return np.repeat(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[..., None], 3, -1)

    def dark(im):
        return (im.astype(np.float32) * 0.25).astype(np.uint8)

    variants = {
        "photo": lambda im: im,
        "grey": grey,
        "dark (x 0.25)": dark,
        "stretched": stretch,
        "CLAHE on L": clahe,
        "dark, stretched": lambda im: stretch(dark(im)),
    }
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": args.data,
        "half": "tune",
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg(),
        "prior_iou": {},
    }
    for name, change in variants.items():
        m = np.stack([box_prior(change(imgs[i]), boxes[i]) for i in range(len(imgs))])
        res["prior_iou"][name] = round(ev.scores(m.astype(np.float32))["iou"], 4)
        print(f"{name:20s} {res['prior_iou'][name]:.4f}", flush=True)
    res["load_avg_end"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / f"study_photometric_{args.data}_tune{args.tag}.json"
    write_json_atomic(out, res)
    print("->", out)
    return 0


def _edge_features(filled, boxes, cands, names):
    """`{name: [N]}`: mean Lab gradient magnitude on each candidate's outline over the mean in its
    box (1 = the outline is no edgier than the box)."""
    import cv2
    from scipy import ndimage as ndi

    from indep_seg.box_prior import box_mask

    out = {k: [] for k in names}
    for i, img in enumerate(filled):
        lab = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32), (3, 3), 0)
        grad = np.sqrt(
            (cv2.Sobel(lab, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(lab, cv2.CV_32F, 0, 1) ** 2).sum(-1)
        )
        in_box = grad[box_mask(grad.shape, boxes[i])].mean() + 1e-6
        for k in names:
            m = cands[k][i]
            outline = m & ~ndi.binary_erosion(m)
            out[k].append(float(grad[outline].mean() / in_box) if outline.any() else 0.0)
    return {k: np.asarray(v) for k, v in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["horse", "ecssd"], required=True)
    p.add_argument("--study", choices=["ensemble", "photometric"], default="ensemble")
    p.add_argument("--model-dir", help="run directory with `segmenter/` (--study ensemble)")
    p.add_argument("--cache", default="/tmp/study_prior_select")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    from indep_seg.box_prior import (
        PRIOR_TIGHTNESS_POWER,
        box_mask,
        box_tightness,
        colour_contrast,
        ellipse_mask,
        fill_outside_photo,
        is_degenerate,
        prior_score,
    )

    if args.study == "photometric":
        return photometric(args)
    t0 = time.time()
    items, gts = load_dataset(args.data, "tune")
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)
    n = len(items)
    filled = [fill_outside_photo(imgs[i], boxes[i]) for i in range(n)]
    cands = gc_candidates(args.data, ev, imgs, boxes, args.cache)
    cands = {k: cands[k].astype(bool) for k in GC6}
    net = net_candidates(
        args.model_dir, ev, imgs, boxes, Path(args.cache) / f"{args.data}_tune_net{args.tag}.npz"
    )
    cands["net"] = net["net_soft"] > 0.5

    def score_of(m, i, p=PRIOR_TIGHTNESS_POWER):
        """`prior_score`, or its form with another tightness power `p`."""
        if p == PRIOR_TIGHTNESS_POWER:
            return prior_score(filled[i], m, boxes[i])
        return colour_contrast(filled[i], m, boxes[i]) * box_tightness(m, boxes[i]) ** p

    def valid(m, i):
        return not is_degenerate(m, boxes[i])

    def pick_masks(masks, i, p=PRIOR_TIGHTNESS_POWER, edges=None, q=1.0):
        best, bv = None, -np.inf
        for j, m in enumerate(masks):
            if not valid(m, i):
                continue
            v = score_of(m, i, p) * (1.0 if edges is None else edges[j] ** q)
            if v > bv:
                best, bv = m, v
        return best if best is not None else ellipse_mask(imgs[i].shape[:2], boxes[i])

    def pick(names, i, p=PRIOR_TIGHTNESS_POWER, edge=None, q=1.0):
        edges = None if edge is None else [edge[k][i] for k in names]
        return pick_masks([cands[k][i] for k in names], i, p, edges, q)

    def snapped(i, names, n_segments):
        from skimage.segmentation import slic

        sp = slic(filled[i], n_segments=n_segments, compactness=10, start_label=0)
        inside = box_mask(sp.shape, boxes[i])
        size = np.maximum(np.bincount(sp.ravel(), minlength=sp.max() + 1), 1)
        out = []
        for k in names:
            share = np.bincount(sp.ravel(), cands[k][i].ravel().astype(float), sp.max() + 1)
            out.append(((share / size)[sp] > 0.5) & inside)
        return out

    prior = np.stack([pick(GC6, i) for i in range(n)])
    cands["prior"] = prior
    print(f"prior ready {time.time() - t0:.0f}s", flush=True)
    # GrabCut from the network's mask, and from half network, half prior (the default's start)
    cands["net_gc"] = np.stack(
        [grabcut_from(filled[i], net["net_soft"][i], boxes[i]) for i in range(n)]
    )
    cands["blend_gc"] = np.stack(
        [
            grabcut_from(filled[i], 0.5 * net["net_soft"][i] + 0.5 * prior[i], boxes[i])
            for i in range(n)
        ]
    )
    print(f"net GrabCuts ready {time.time() - t0:.0f}s", flush=True)

    def vote(names, i, k=None, thr=0.5, weighted=False):
        ms = [(score_of(cands[c][i], i), cands[c][i]) for c in names if valid(cands[c][i], i)]
        if not ms:
            return ellipse_mask(imgs[i].shape[:2], boxes[i])
        ms.sort(key=lambda t: -t[0])
        if k:
            ms = ms[:k]
        w = np.asarray([s if weighted else 1.0 for s, _ in ms]) + 1e-9
        v = sum(wi * m for wi, (_, m) in zip(w, ms)) / w.sum()
        return v >= thr

    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": args.data,
        "half": "tune",
        "model_dir": args.model_dir,
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg(),
        "iou": {},
    }
    per = {}

    def report(name, masks):
        s = ev.scores(np.asarray(masks, np.float32))
        res["iou"][name] = round(s["iou"], 4)
        per[name] = s["per_image_iou"]
        print(f"{name:40s} {s['iou']:.4f}", flush=True)

    for k in GC6 + ["net", "prior", "net_gc", "blend_gc"]:
        report(k, cands[k])
    allc = GC6 + ["net", "net_gc", "blend_gc"]
    edge_features = _edge_features(filled, boxes, cands, allc)
    default = [
        cands["blend_gc"][i]
        if valid(cands["blend_gc"][i], i)
        and score_of(cands["blend_gc"][i], i) >= score_of(prior[i], i)
        else prior[i]
        for i in range(n)
    ]
    report("default (blend_gc or prior by score)", default)
    rules = {
        "select gc6+net_gc": lambda i: pick(GC6 + ["net_gc"], i),
        "select gc6+net_gc+blend_gc": lambda i: pick(GC6 + ["net_gc", "blend_gc"], i),
        "select all": lambda i: pick(allc, i),
        "select all p3": lambda i: pick(allc, i, 3),
        "vote gc6": lambda i: vote(GC6, i),
        "vote gc6 top3": lambda i: vote(GC6, i, 3),
        "vote all": lambda i: vote(allc, i),
        "vote all top3": lambda i: vote(allc, i, 3),
        "vote all top5": lambda i: vote(allc, i, 5),
        "vote all weighted": lambda i: vote(allc, i, weighted=True),
        "vote prior,net_gc,blend_gc": lambda i: vote(["prior", "net_gc", "blend_gc"], i),
        "vote prior,net,net_gc": lambda i: vote(["prior", "net", "net_gc"], i),
        # the outline's colour edges as a third factor of the score (mean Lab gradient on the
        # mask's outline over the box's mean): a mask whose outline follows edges
        "select gc6 by score x edge": lambda i: pick(GC6, i, edge=edge_features),
        "select all by score x edge": lambda i: pick(allc, i, edge=edge_features),
        "select all by score x edge^0.5": lambda i: pick(allc, i, edge=edge_features, q=0.5),
        # each candidate snapped to SLIC superpixels (a superpixel is in where half of it is)
        **{
            f"select all raw and snapped to {k} superpixels": (
                lambda i, k=k: pick_masks([cands[c][i] for c in allc] + snapped(i, allc, k), i)
            )
            for k in (200, 400)
        },
        "prior snapped to 400 superpixels": lambda i: snapped(i, ["prior"], 400)[0],
    }
    for name, rule in rules.items():
        report(name, [rule(i) for i in range(n)])
    stack = np.stack([per[k] for k in allc])
    res["iou"]["oracle over all (upper bound, not a rule)"] = round(float(stack.max(0).mean()), 4)
    print("oracle all", res["iou"]["oracle over all (upper bound, not a rule)"])
    res["load_avg_end"] = os.getloadavg()
    res["seconds"] = round(time.time() - t0)
    from benchmarks.common import write_json_atomic

    out = ROOT / "benchmarks" / "results" / f"study_ensemble_{args.data}_tune{args.tag}.json"
    write_json_atomic(out, res)
    print("->", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
