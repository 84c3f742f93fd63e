"""Figure of docs/counting.md, session 13 (issue #19): what the classical counter does on the two
bright-field development images, and why their label maps scored AP50 ~0.25.

    .venv/bin/python benchmarks/figure_hoc_bright_field.py docs/figures/hoc_bright_field_s13.png

PIL and scikit-image only (no matplotlib). One row per image (08275a5b tuned, 4217e25d held out):
1. the whole image (half size): annotated nuclei outlined in green; our centres as cyan circles
   (on an annotated nucleus) or red crosses (on none, false); annotated nuclei without a centre
   (misses) as yellow squares;
2. a crop (x3): label maps cut at half of the basin's 95th percentile (session 12, magenta) over
   the annotations (green; white where both agree);
3. the same crop: cut at half of the nucleus's own peak (`watershed_instances(own_peak=True)`, the
   bright-field rule since session 13).
Labels are read for drawing and scoring only.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_hoc_dev import TUNED, image_paths  # noqa: E402
from indep_seg.hoc import instances as inst  # noqa: E402
from indep_seg.imageio import load_image  # noqa: E402

#: (image, crop x, y, side): a cluster of cells where the basins spread (chosen by eye).
CROPS = [("08275a5b", 40, 300, 200), ("4217e25d", 540, 100, 200)]
GREEN, MAGENTA, WHITE = (0, 200, 0), (255, 0, 255), (255, 255, 255)


def analyse(name):
    """Centres, both label maps and their scores on one image."""
    img = load_image(image_paths(name)[0])
    truth = np.asarray(Image.open(image_paths(name)[1])).astype(np.int64)
    ns = inst.nucleus_signal(img)
    sigma = inst.estimate_scale(ns.signal)["sigma"]
    det, split, cen = inst.classical_centres(img, ns, sigma)
    labels = {own: inst.watershed_instances(det, cen, sigma, own_peak=own) for own in (False, True)}
    xs, ys = cen[:, 0].astype(int), cen[:, 1].astype(int)
    on = truth[ys, xs]
    ids = np.arange(1, truth.max() + 1)
    present = np.bincount(truth.ravel(), minlength=ids.size + 1)[1:] > 0
    missed = ids[present & ~np.isin(ids, on)]
    return {
        "img": img,
        "truth": truth,
        "cen": cen,
        "on": on,
        "missed": missed,
        "labels": labels,
        "scores": {k: inst.match_instances(v, truth) for k, v in labels.items()},
        "sigma": sigma,
        "split": split,
    }


def outlines(img, truth, labels):
    """uint8 RGB: annotations green, label maps magenta, white where both."""
    out = (np.clip(img, 0, 1) * 255).astype(np.uint8).copy()
    gb = find_boundaries(truth, mode="inner")
    out[gb] = GREEN
    if labels is not None:
        pb = find_boundaries(labels, mode="inner")
        out[pb] = MAGENTA
        out[gb & pb] = WHITE
    return out


def overview(d, scale=0.5):
    """The whole image with annotations, centres and misses."""
    h, w = d["truth"].shape
    a = Image.fromarray(outlines(d["img"], d["truth"], None)).resize(
        (int(w * scale), int(h * scale)), Image.BILINEAR
    )
    dr = ImageDraw.Draw(a)
    for (x, y, _), g in zip(d["cen"], d["on"]):
        x, y = x * scale, y * scale
        if g:
            dr.ellipse([x - 3, y - 3, x + 3, y + 3], outline=(0, 220, 255), width=2)
        else:
            dr.line([x - 4, y - 4, x + 4, y + 4], fill=(255, 0, 0), width=2)
            dr.line([x - 4, y + 4, x + 4, y - 4], fill=(255, 0, 0), width=2)
    yy, xx = np.nonzero(np.isin(d["truth"], d["missed"]))
    for g in d["missed"]:
        sel = d["truth"][yy, xx] == g
        x, y = xx[sel].mean() * scale, yy[sel].mean() * scale
        dr.rectangle([x - 5, y - 5, x + 5, y + 5], outline=(255, 200, 0), width=2)
    return a


def crop(d, own, x0, y0, side, zoom=3):
    out = outlines(d["img"], d["truth"], d["labels"][own])[y0 : y0 + side, x0 : x0 + side]
    return Image.fromarray(out).resize((side * zoom, side * zoom), Image.NEAREST)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="PNG to write")
    args = p.parse_args(argv)
    rows = []
    for name, x0, y0, side in CROPS:
        d = analyse(name)
        n = len(np.unique(d["truth"])) - 1
        s0, s1 = d["scores"][False], d["scores"][True]
        title = (
            f"{name} ({'tuned' if name in TUNED else 'held out'}): {len(d['cen'])} centres / {n} "
            f"annotated, {int((d['on'] == 0).sum())} false (red x), {len(d['missed'])} missed "
            f"(yellow squares); sigma {d['sigma']:.1f} px"
        )
        sub = (
            f"crop ({x0}, {y0}) x3. Cut at half the basin's 95th percentile: AP50 {s0['ap']:.2f}, "
            f"mIoU {s0['mean_iou']:.2f}   |   at half the nucleus's own peak: AP50 {s1['ap']:.2f}, "
            f"mIoU {s1['mean_iou']:.2f}"
        )
        print(title, "\n ", sub, flush=True)
        rows.append(
            (title, sub, overview(d), crop(d, False, x0, y0, side), crop(d, True, x0, y0, side))
        )
    gap, head = 10, 40
    width = sum(im.size[0] for im in rows[0][2:]) + 2 * gap
    height = sum(max(im.size[1] for im in r[2:]) + head + gap for r in rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(canvas)
    y = 0
    for title, sub, *ims in rows:
        dr.text((4, y + 4), title, fill=(0, 0, 0))
        dr.text((4, y + 20), sub, fill=(0, 0, 0))
        x = 0
        for im in ims:
            canvas.paste(im, (x, y + head))
            x += im.size[0] + gap
        y += max(im.size[1] for im in ims) + head + gap
    tmp = f"{args.out}.tmp-{os.getpid()}.png"
    canvas.save(tmp, format="PNG")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
