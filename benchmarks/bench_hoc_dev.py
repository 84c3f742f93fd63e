"""Benchmark (issue 19): counts and instance masks on the 13 + 1 development nuclei images.

    taskset -c 1 .venv/bin/python benchmarks/bench_hoc_dev.py                       # classical
    parts only
    taskset -c 1 .venv/bin/python benchmarks/bench_hoc_dev.py \\
        --model fluorescence=RUN_F --model bright-field=RUN_B --model stained=RUN_S   # + the
        learned counter
    .venv/bin/python benchmarks/bench_hoc_dev.py --quick                            # 2 small
    images, seconds

Labels (``*_instances.png``) are read here for scoring only; every method sees the image alone.
The images' kinds below are the dataset's (README of nuclei_dsb2018_dev); the method estimates its
own polarity / stain / scale and is never told the kind. TUNED lists the images any setting was
chosen on (the LoG threshold and scale range, the stand-out level, the model runs' training
images); every other image is held out. Per image: count of
- ``learned``: the HOC GAN's centre counter (`counting.count_instances`, centres_from="learned"),
  trained once per kind on that kind's tuned images (``--model KIND=RUN``),
- ``log``: the scale-normalised LoG detector on the same nucleus signal,
- ``otsu_cc``: Otsu + connected components, ``otsu_ws``: Otsu + distance-transform watershed,
and AP at IoU 0.5 (TP / (TP + FP + FN)) and mean IoU of the matched instances of each label map.
Summary per kind: median and worst absolute count error (%), over all images and over the held-out
ones. Writes benchmarks/results/hoc_dev.json (or --out) and a gallery PNG (best / median / worst
held-out images of the chosen method: image | its label map | the centres).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, results_dir, write_json_atomic  # noqa: E402

DEV = REPO.parent / "shared" / "datasets" / "nuclei_dsb2018_dev"
ONE = REPO.parent / "shared" / "datasets" / "nuclei_dsb2018"

KINDS = {
    "fluorescence": [
        "dsb2018_image",
        "04acab76",
        "07fb37aa",
        "150b0ffa",
        "20b20ab0",
        "212b858a",
        "3f9fc8e6",
        "5afb7932",
        "9586e48a",
    ],
    "bright-field": ["08275a5b", "4217e25d"],
    "stained": ["4d14a362", "cbca32da", "f952cc65"],
}
# 20b20ab0 since session 12: `instances.MIN_STAND_OUT` was chosen looking at its counts;
# 08275a5b alone chose the bright-field `instances.SMALL_OBJECT_SCALE` (session 13)
TUNED = {"dsb2018_image", "04acab76", "150b0ffa", "08275a5b", "f952cc65", "20b20ab0"}


def image_paths(name):
    if name == "dsb2018_image":
        return ONE / "image.png", ONE / "instances.png"
    return DEV / f"{name}.png", DEV / f"{name}_instances.png"


def err_pct(n, truth):
    return 100.0 * (n - truth) / truth


def evaluate_image(name, kind, models, centres_from):
    from PIL import Image

    from indep_seg.imageio import load_image

    ip, lp = image_paths(name)
    image = load_image(ip)
    truth = np.asarray(Image.open(lp)).astype(np.int64)
    return evaluate_array(name, kind, image, truth, models, centres_from)


def evaluate_array(name, kind, image, truth, models, centres_from):
    """`evaluate_image` on an image array ``[H, W, 3]`` in [0, 1] and its label map (the studies
    that change an image, `study_hoc_robustness.py`, score through this)."""
    from indep_seg.hoc import counting
    from indep_seg.hoc import instances as inst
    from indep_seg.hoc.estimate import foreground_components

    n_true = int(len(np.unique(truth)) - 1)
    t0 = time.time()
    ns = inst.nucleus_signal(image)
    sc = inst.estimate_scale(ns.signal)
    det, split, log = inst.classical_centres(image, ns, sc["sigma"])
    lab_log = inst.watershed_instances(det, log, sc["sigma"], own_peak=split)
    t_log = time.time() - t0
    lab_ows, _ = inst.otsu_watershed(ns.signal)
    _, cc, _, _ = foreground_components(np.repeat(ns.signal[..., None], 3, -1))
    areas = np.bincount(truth.ravel())[1:]
    row = {
        "image": name,
        "kind": kind,
        "tuned": name in TUNED,
        "size": [int(image.shape[1]), int(image.shape[0])],
        "n_true": n_true,
        "gt_median_area": float(np.median(areas[areas > 0])),
        "estimated": {
            "polarity": ns.polarity,
            "colour": ns.colour,
            "sigma": round(sc["sigma"], 3),
            "texture_split": bool(split),
            "area": round(sc["area"], 1),
            "kind": inst.describe_kind(ns.meta()),
        },
        "methods": {},
    }

    def score(method, count, labels, seconds=None):
        m = inst.match_instances(labels, truth) if labels is not None else {}
        row["methods"][method] = {
            "count": int(count),
            "err_pct": round(err_pct(count, n_true), 2),
            **(
                {
                    "ap50": round(m["ap"], 4),
                    "mean_iou": round(m["mean_iou"], 4),
                    "precision": round(m["precision"], 4),
                    "recall": round(m["recall"], 4),
                }
                if m
                else {}
            ),
            **({"seconds": round(seconds, 2)} if seconds is not None else {}),
        }

    score("log", len(log), lab_log, t_log)
    score("otsu_ws", int(len(np.unique(lab_ows)) - 1), lab_ows)
    score("otsu_cc", int(cc.max()), cc)
    vis = {"log": (lab_log, log[:, :2].tolist())}
    if kind in models:
        counter, meta = models[kind]
        t0 = time.time()
        res = counting.count_instances(counter, meta, image, centres_from="learned")
        score("learned", res["count_learned"], res["labels"], time.time() - t0)
        row["methods"]["learned"].update(
            {
                "count_raw": res["count_raw"],
                "calibration": res["calibration"],
                "window": res["window"],
                "kind_mismatch": res["kind_mismatch"],
            }
        )
        vis["learned"] = (res["labels"], res["centres"])
    return row, image, vis


def summarise(rows, method):
    out = {}
    for kind in KINDS:
        for subset in ("all", "held_out", "tuned"):
            sel = [
                r
                for r in rows
                if r["kind"] == kind
                and method in r["methods"]
                and (subset == "all" or (subset == "tuned") == r["tuned"])
            ]
            if not sel:
                continue
            e = np.abs([r["methods"][method]["err_pct"] for r in sel])
            ap = [r["methods"][method].get("ap50") for r in sel if "ap50" in r["methods"][method]]
            out.setdefault(kind, {})[subset] = {
                "images": len(sel),
                "median_abs_err_pct": round(float(np.median(e)), 2),
                "worst_abs_err_pct": round(float(e.max()), 2),
                "worst_image": sel[int(np.argmax(e))]["image"],
                **({"median_ap50": round(float(np.median(ap)), 4)} if ap else {}),
            }
    held = [
        abs(r["methods"][method]["err_pct"])
        for r in rows
        if not r["tuned"] and method in r["methods"]
    ]
    if held:
        out["all_kinds_held_out"] = {
            "images": len(held),
            "median_abs_err_pct": round(float(np.median(held)), 2),
            "worst_abs_err_pct": round(float(np.max(held)), 2),
        }
    return out


def gallery(rows, images, vis, method, path, side=300):
    """Best / median / worst held-out images of `method`: image with centres | instance label
    map."""
    from PIL import Image, ImageDraw

    from indep_seg.hoc.instances import colour_labels

    held = [r for r in rows if not r["tuned"] and method in r["methods"]] or [
        r for r in rows if method in r["methods"]
    ]
    held.sort(key=lambda r: abs(r["methods"][method]["err_pct"]))
    picks = [("best", held[0]), ("median", held[len(held) // 2]), ("worst", held[-1])]
    canvas = Image.new("RGB", (2 * side + 10, 3 * (side + 24)), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    for i, (tag, r) in enumerate(picks):
        img = images[r["image"]]
        labels, centres = vis[r["image"]][method]
        h, w = img.shape[:2]
        s = side / max(h, w)
        a = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize(
            (int(w * s), int(h * s))
        )
        da = ImageDraw.Draw(a)
        for x, y in centres:
            da.ellipse([x * s - 2, y * s - 2, x * s + 2, y * s + 2], fill=(255, 40, 40))
        lab = Image.fromarray(colour_labels(labels)).resize((int(w * s), int(h * s)), Image.NEAREST)
        y0 = i * (side + 24)
        m = r["methods"][method]
        d.text(
            (4, y0 + 4),
            f"{tag}: {r['image']} ({r['kind']}) {method} {m['count']} / {r['n_true']} "
            f"({m['err_pct']:+.0f} %), AP50 {m.get('ap50', float('nan')):.2f}",
            fill=(0, 0, 0),
        )
        canvas.paste(a, (0, y0 + 22))
        canvas.paste(lab, (side + 10, y0 + 22))
    tmp = f"{path}.tmp-{os.getpid()}"
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KIND=RUN",
        help="a hoc run (model dir) for the images of KIND (fluorescence, bright-field, stained)",
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="the runs' training budget, for the record",
    )
    p.add_argument(
        "--method", default=None, help="method of the gallery (default: learned if given, else log)"
    )
    p.add_argument("--quick", action="store_true", help="two small images, classical only")
    p.add_argument(
        "--out", default="hoc_dev", help="result name under benchmarks/results (default hoc_dev)"
    )
    p.add_argument(
        "--figures", default=str(REPO / "docs" / "figures"), help="where the gallery is copied too"
    )
    args = p.parse_args(argv)
    if not DEV.is_dir():
        print(f"bench_hoc_dev: {DEV} not found; nothing to measure", file=sys.stderr)
        return 1
    from indep_seg.hoc import counting

    models, runs = {}, {}
    for spec in args.model:
        kind, _, run = spec.partition("=")
        if kind not in KINDS or not run:
            raise SystemExit(f"--model: expected KIND=RUN with KIND in {list(KINDS)}, got {spec!r}")
        models[kind] = counting.load_counter(run)
        runs[kind] = {
            "run": run,
            "trained_on": [Path(i["path"]).stem for i in (models[kind][1].get("images") or [])],
            "counter_steps": models[kind][1].get("steps"),
        }
        hoc_json = Path(run) / "hoc.json"
        if hoc_json.is_file():
            runs[kind]["windows"] = json.loads(hoc_json.read_text()).get("windows")
    names = [(k, n) for k, ns in KINDS.items() for n in ns]
    if args.quick:
        names = [("fluorescence", "9586e48a"), ("stained", "f952cc65")]
    rows, images, vis = [], {}, {}
    t_all = time.time()
    load0 = os.getloadavg()
    for kind, name in names:
        row, img, v = evaluate_image(name, kind, models, "learned")
        rows.append(row)
        images[name], vis[name] = img, v
        ms = " ".join(
            f"{m}={row['methods'][m]['count']}({row['methods'][m]['err_pct']:+.0f}%,"
            f"AP{row['methods'][m].get('ap50', 0):.2f})"
            for m in row["methods"]
        )
        print(
            f"{name:14s} {kind:12s} {'tuned' if row['tuned'] else 'held '} true={row['n_true']:4d} "
            f"{ms}",
            flush=True,
        )
    methods = sorted({m for r in rows for m in r["methods"]})
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, pinned with taskset to "
        f"{sorted(os.sched_getaffinity(0))}",
        "load_average_start": [round(x, 2) for x in load0],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - t_all, 1),
        "tuned_on": sorted(TUNED),
        "runs": runs,
        "budget_minutes": args.budget_minutes,
        "images": rows,
        "summary": {m: summarise(rows, m) for m in methods},
    }
    out_dir = results_dir()
    write_json_atomic(out_dir / f"{args.out}.json", result)
    method = args.method or ("learned" if models else "log")
    png = out_dir / f"{args.out}.png"
    gallery(rows, images, vis, method, png)
    if args.figures and not args.quick:
        fig_dir = Path(args.figures)
        fig_dir.mkdir(parents=True, exist_ok=True)
        import shutil

        shutil.copyfile(png, fig_dir / f"{args.out}.png")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
