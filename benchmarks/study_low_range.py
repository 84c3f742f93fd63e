"""Study (issue #17, session 13): stretch the prior's window only where its intensity range is
low (a dark or hazy photo), on the TUNING halves only (horse001-164, ECSSD 0001-0500).

    taskset -c 1 .venv/bin/python benchmarks/study_low_range.py --data horse
    taskset -c 1 .venv/bin/python benchmarks/study_low_range.py --data ecssd

Session 12's photometric probe: a photo four times darker loses 0.03 of the prior's IoU on the
horses, and stretching it back to its 1st-99th percentiles recovers most of it, while stretching
every photo as it is does not help. Here each window's range is measured (the spread between the
1st and 99th percentiles of its 8-bit values, all channels, after `fill_outside_photo`: what
`window_range` returns), the photos under candidate thresholds are counted, and the prior is
scored with the stretch applied only under the threshold. A synthetic stress checks that the rule
rescues degraded photos: the same photos four times darker (x 0.25), hazy (0.5 photo + 0.5
mid-grey) and both (0.25 photo + 0.25 grey, a night frame with lifted blacks), each changed on
the whole photo before the window is cut, with and without the rule. Unchanged photos reuse
`study_prior_select.py`'s candidate cache (`--cache`). `--half test` measures the prior alone
on the TEST half before and after the adopted rule (once, after the choice; nothing is chosen
there).

Writes benchmarks/results/study_low_range_<data>_<half>.json and, with `--figure`, a gallery of
the photos the rule changes (window | truth | prior before | prior after).
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
from indep_seg.box_prior import LOW_RANGE  # noqa: E402

THRESHOLDS = (48, 64, 96, 112, 128, 144, 160)
#: the adopted threshold (chosen on the tuning halves): the figure's and the test half's
ADOPTED = LOW_RANGE
SHORT = {
    "photo": "photo",
    "dark (x 0.25)": "dark",
    "hazy (0.5 grey)": "hazy",
    "dark and hazy (0.25 photo + 0.25 grey)": "dark+hazy",
}
GC6 = ["rect_lab", "rect_rgb", "core_lab", "core_rgb", "rect_lab_s1", "rect_rgb_s1"]


def dark(im):
    """Four times darker (8-bit, truncated as a camera's quantiser would)."""
    return (im.astype(np.float32) * 0.25).astype(np.uint8)


def hazy(im):
    """Half the photo, half mid-grey: contrast halved about 128."""
    return (0.5 * im.astype(np.float32) + 0.5 * 128 + 0.5).astype(np.uint8)


def dark_hazy(im):
    """A night frame with lifted blacks: a quarter of the photo plus a quarter of mid-grey."""
    return (0.25 * im.astype(np.float32) + 0.25 * 128 + 0.5).astype(np.uint8)


def cached_prior(data, half, imgs, boxes, cache_dir):
    """`box_prior` of the photos as they are, from `study_prior_select.py`'s candidate cache (the
    six GrabCuts chosen by `prior_score`, as `box_prior` chooses); `None` without a cache."""
    from indep_seg.box_prior import ellipse_mask, fill_outside_photo, is_degenerate, prior_score

    cache = Path(cache_dir) / f"{data}_{half}.npz"
    if not cache.exists():
        return None
    z = np.load(cache, allow_pickle=True)
    cands = {k: z[f"m_{k}"].astype(bool) for k in GC6}
    out = []
    for i in range(len(imgs)):
        filled = fill_outside_photo(imgs[i], boxes[i])
        best, bv = None, -np.inf
        for k in GC6:
            m = cands[k][i]
            if is_degenerate(m, boxes[i]):
                continue
            v = prior_score(filled, m, boxes[i])
            if v > bv:
                best, bv = m, v
        out.append(best if best is not None else ellipse_mask(imgs[i].shape[:2], boxes[i]))
    return np.stack(out)


def degraded_crops(ev, change):
    """The evaluation windows of the photos changed by `change` (the whole photo is changed, then
    cut: the window's part outside the photo stays black)."""
    from types import SimpleNamespace

    items = [(name, change(im), box) for name, im, box in ev.items]
    return eval_crops(SimpleNamespace(items=items, windows=ev.windows))[0]


def priors(imgs, boxes, which, stretched):
    """`box_prior` of the windows `which` (others: None), with the window
    stretched to its 1st-99th percentiles after filling (`stretched`) or as it is."""
    from indep_seg import box_prior as bp

    # every window's range is under 256: stretched always, or never
    low_range = 256 if stretched else 0
    out = [None] * len(imgs)
    for i in np.flatnonzero(which):
        out[i] = bp.box_prior(imgs[i], boxes[i], low_range=low_range)
    return out


def gallery(ev, imgs, rows, path, title):
    """Rows `(i, window, before, after, label)`: window | truth | before | after."""
    from PIL import Image, ImageDraw

    r = imgs.shape[1]

    def rgb(m):
        return np.repeat((np.asarray(m, bool)[..., None] * 255).astype(np.uint8), 3, -1)

    body = [np.concatenate([w, rgb(ev.gt_crops[i]), rgb(b), rgb(a)], 1) for i, w, b, a, _ in rows]
    grid = Image.fromarray(np.concatenate([np.zeros((16, 4 * r, 3), np.uint8)] + body, 0))
    d = ImageDraw.Draw(grid)
    heads = [title, "truth", "prior without rule", "prior with rule"]
    for c, t in enumerate(heads):
        d.text((c * r + 4, 2), t, fill=(255, 255, 255))
    for k, (*_, label) in enumerate(rows):
        d.text((2, 16 + k * r + 2), label, fill=(255, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["horse", "ecssd"], required=True)
    p.add_argument("--half", choices=["tune", "test"], default="tune")
    p.add_argument("--cache", default="/tmp/study_prior_select")
    p.add_argument("--store", default="/tmp/study_low_range", help="masks computed here")
    p.add_argument("--figure", default="", help="PNG gallery of the photos the rule changes")
    args = p.parse_args(argv)
    from benchmarks.common import write_json_atomic
    from indep_seg import box_prior as bp

    t0 = time.time()
    items, gts = load_dataset(args.data, args.half)
    ev = Evaluator(items, gts)
    imgs, boxes = eval_crops(ev)
    n = len(items)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": args.data,
        "half": args.half,
        "tuned_on": "tuning halves (horse001-164, ECSSD 0001-0500)",
        "held_out": "test halves (horse165-328, ECSSD 0501-1000), measured once after the choice",
        "n": n,
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_avg_start": os.getloadavg(),
        "range": "1st-99th percentile spread of the filled window's 8-bit values (all channels)",
        "adopted_threshold": ADOPTED,
    }

    def score(masks):
        return ev.scores(np.stack(masks).astype(np.float32))

    def ranges(imgs):
        return np.asarray(
            [bp.window_range(bp.fill_outside_photo(imgs[i], boxes[i])) for i in range(n)]
        )

    if args.half == "test":
        # once, after the choice on the tuning halves: the prior before and after the rule
        rng = ranges(imgs)
        before = [bp.box_prior(imgs[i], boxes[i], low_range=0) for i in range(n)]
        after = [bp.box_prior(imgs[i], boxes[i]) for i in range(n)]
        changed = rng < ADOPTED
        s0, s1 = score(before), score(after)
        res.update(
            range_percentiles={q: round(float(np.percentile(rng, q)), 1) for q in (0, 1, 5, 50)},
            changed_range=[round(float(rng[i]), 1) for i in np.flatnonzero(changed)],
            prior_iou_before=round(s0["iou"], 4),
            prior_iou_after=round(s1["iou"], 4),
            n_changed=int(changed.sum()),
            changed=[items[i][0] for i in np.flatnonzero(changed)],
            changed_iou_before=[
                round(float(s0["per_image_iou"][i]), 3) for i in np.flatnonzero(changed)
            ],
            changed_iou_after=[
                round(float(s1["per_image_iou"][i]), 3) for i in np.flatnonzero(changed)
            ],
        )
        print(res)
        if args.figure and changed.any():
            rows = [
                (
                    i,
                    bp.fill_outside_photo(imgs[i], boxes[i]),
                    before[i],
                    after[i],
                    f"{items[i][0]} r{rng[i]:.0f} "
                    f"{s0['per_image_iou'][i]:.2f}->{s1['per_image_iou'][i]:.2f}",
                )
                for i in np.flatnonzero(changed)[:10]
            ]
            gallery(ev, imgs, rows, Path(args.figure), f"{args.data} test T={ADOPTED}")
    else:
        conditions = {
            "photo": lambda im: im,
            "dark (x 0.25)": dark,
            "hazy (0.5 grey)": hazy,
            "dark and hazy (0.25 photo + 0.25 grey)": dark_hazy,
        }
        res["conditions"] = {}
        figure_rows = []
        for cname, change in conditions.items():
            imgs_c = imgs if cname == "photo" else degraded_crops(ev, change)
            rng = ranges(imgs_c)
            which = rng < max(THRESHOLDS)
            base = (
                cached_prior(args.data, args.half, imgs, boxes, args.cache)
                if (cname == "photo")
                else None
            )
            store = Path(args.store) / f"{args.data}_{args.half}_{SHORT[cname]}.npz"
            if store.exists():
                z = np.load(store)
                base = list(z["base"]) if base is None else base
                st = [z["stretched"][i] if which[i] else None for i in range(n)]
            else:
                if base is None:
                    base = priors(imgs_c, boxes, np.ones(n, bool), False)
                st = priors(imgs_c, boxes, which, True)
                store.parent.mkdir(parents=True, exist_ok=True)
                empty = np.zeros(imgs.shape[1:3], bool)
                np.savez_compressed(
                    store,
                    base=np.stack(base),
                    stretched=np.stack([empty if m is None else m for m in st]),
                )
            base = list(base)
            s_base = score(base)
            per_base = s_base["per_image_iou"]
            c = {
                "range_percentiles": {
                    q: round(float(np.percentile(rng, q)), 1) for q in (0, 1, 5, 25, 50)
                },
                "prior_iou_without_rule": round(s_base["iou"], 4),
                "by_threshold": {},
            }
            for t in THRESHOLDS:
                ch = rng < t
                masks = [st[i] if ch[i] else base[i] for i in range(n)]
                s = score(masks)
                c["by_threshold"][str(t)] = {
                    "n_changed": int(ch.sum()),
                    "prior_iou": round(s["iou"], 4),
                    "delta": round(s["iou"] - s_base["iou"], 4),
                    "changed_mean_iou_before": round(float(per_base[ch].mean()), 4)
                    if ch.any()
                    else None,
                    "changed_mean_iou_after": round(float(s["per_image_iou"][ch].mean()), 4)
                    if ch.any()
                    else None,
                    "changed": [items[i][0] for i in np.flatnonzero(ch)]
                    if ch.sum() <= 40
                    else None,
                }
                if t == ADOPTED:
                    per_after = s["per_image_iou"]
                    idx = np.flatnonzero(ch)
                    if cname != "photo":
                        # the stress: the largest rescues and the largest losses, three each
                        d = per_after[idx] - per_base[idx]
                        idx = np.concatenate([idx[np.argsort(-d)[:3]], idx[np.argsort(d)[:2]]])
                    for i in idx[:10]:
                        w = bp.fill_outside_photo(imgs_c[i], boxes[i])
                        figure_rows.append(
                            (
                                i,
                                w,
                                base[i],
                                st[i],
                                f"{SHORT[cname]} {items[i][0]} r{rng[i]:.0f} "
                                f"{per_base[i]:.2f}->{per_after[i]:.2f}",
                            )
                        )
                print(
                    f"{cname:16s} T={t:3d} changed {ch.sum():4d}/{n} IoU {s['iou']:.4f} "
                    f"(without {s_base['iou']:.4f})",
                    flush=True,
                )
            res["conditions"][cname] = c
            print(f"{cname} done {time.time() - t0:.0f}s", flush=True)
        if args.figure and figure_rows:
            gallery(ev, imgs, figure_rows, Path(args.figure), f"{args.data} T={ADOPTED}")
    res["load_avg_end"] = os.getloadavg()
    res["seconds"] = round(time.time() - t0)
    out = ROOT / "benchmarks" / "results" / f"study_low_range_{args.data}_{args.half}.json"
    write_json_atomic(out, res)
    print("->", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
