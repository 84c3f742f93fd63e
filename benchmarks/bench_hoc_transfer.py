"""Benchmark (issue 19, items 3 and 5): train once on k images of a kind, count the others.

    taskset -c 1 .venv/bin/python benchmarks/bench_hoc_transfer.py \\
        --train-on dsb2018_image,04acab76,150b0ffa --budget-minutes 10 --out hoc_transfer_10min

Runs the README's own commands, with their defaults, as subprocesses (they inherit the core
pinning):
    indep-seg train --experiment hoc --data A.png,B.png,C.png --model-dir RUN --budget-minutes M
    indep-seg count --model RUN IMAGE... --out-dir OUT --json-out OUT/count.jsonl
(`--run RUN --train-log LOG` scores a run trained already with that train command; `--centres
learned` passes the count command's option, to score the learned counter's own label maps; OUT
is ``count_<out>`` beside RUN). Then scores every count line against the labels (the ids of each
label map) and the written label maps by AP at IoU 0.5 (`instances.match_instances`, as
bench_hoc_dev.py). Labels are read here only. Each image is marked "trained on" (a training
image of the run), "tuned" (in bench_hoc_dev's TUNED: some setting was chosen looking at it) or
"held out". Which centres answered (``centres_from``: "log" while the learned counter trained
fewer than 500 steps or where `count_instances` falls back, ``fallback`` saying why) and which
rule gave the count (``count_from``: "log", "learned", or since session 13 "mean", the mean of
the two counts) are recorded per image with both counts. Writes benchmarks/results/<out>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_hoc_dev import KINDS, TUNED, err_pct, image_paths  # noqa: E402
from benchmarks.common import REPO, results_dir, write_json_atomic  # noqa: E402

CLI = str(Path(sys.executable).with_name("indep-seg"))
DEFAULT_TRAIN = "dsb2018_image,04acab76,150b0ffa"


def train(names, budget, run, log):
    """`indep-seg train --experiment hoc` on the images `names`; returns the command and seconds."""
    data = ",".join(str(image_paths(n)[0]) for n in names)
    cmd = [CLI, "train", "--experiment", "hoc", "--data", data, "--model-dir", str(run)]
    cmd += ["--budget-minutes", f"{budget:g}"]
    t0 = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return cmd, time.time() - t0


def count(run, names, out_dir, centres=None):
    """`indep-seg count --model RUN IMAGE...` (`centres`: its --centres, default the command's);
    returns the command, its JSON lines and seconds."""
    jsonl = Path(out_dir) / "count.jsonl"
    cmd = [CLI, "count", "--model", str(run), *[str(image_paths(n)[0]) for n in names]]
    cmd += ["--out-dir", str(out_dir), "--json-out", str(jsonl)]
    cmd += ["--centres", centres] if centres else []
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 2):
        raise SystemExit(f"indep-seg count failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [json.loads(s) for s in proc.stdout.splitlines() if s.strip()]
    return cmd, lines, time.time() - t0


def score(name, line, status):
    """One image's count line against its labels: errors of the answer and of both counters, AP50
    of the written label map."""
    from PIL import Image

    from indep_seg.hoc.instances import match_instances

    _, lp = image_paths(name)
    truth = np.asarray(Image.open(lp))
    n_true = int(len(np.unique(truth)) - 1)  # as bench_hoc_dev (= counts.json on every image)
    row = {"image": name, "set": status, "n_true": n_true}
    if "error" in line:
        return {**row, "error": line["error"]}
    m = match_instances(np.asarray(Image.open(line["labels"])), truth)
    for key in ("count", "count_log", "count_learned"):
        row[key] = int(line[key])
        row[f"{key}_err_pct"] = round(err_pct(line[key], n_true), 2)
    row.update(
        {
            "centres_from": line.get("centres_from"),
            "count_from": line.get("count_from"),
            "fallback": line.get("fallback"),
            "count_raw": line.get("count_raw"),
            "calibration": line.get("calibration"),
            "kind_mismatch": line.get("kind_mismatch"),
            "ap50": round(m["ap"], 4),
            "mean_iou": round(m["mean_iou"], 4),
        }
    )
    return row


def summary(rows, key):
    """Median and worst absolute error of `key` (and median AP50) per set of images."""
    out = {}
    for status in ("trained_on", "tuned", "held_out"):
        sel = [r for r in rows if r["set"] == status and key in r]
        if sel:
            e = np.abs([r[f"{key}_err_pct"] for r in sel])
            out[status] = {
                "images": len(sel),
                "median_abs_err_pct": round(float(np.median(e)), 2),
                "worst_abs_err_pct": round(float(e.max()), 2),
                "worst_image": sel[int(np.argmax(e))]["image"],
            }
            if key == "count":  # the label maps are seeded at the answer's centres
                out[status]["median_ap50"] = round(float(np.median([r["ap50"] for r in sel])), 4)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-on", default=DEFAULT_TRAIN, help="comma-separated image names")
    p.add_argument("--budget-minutes", type=float, default=10.0, help="training budget")
    p.add_argument("--kind", default="fluorescence", choices=list(KINDS), help="images to count")
    p.add_argument("--run", default=None, help="a run already trained (skips training)")
    p.add_argument("--train-log", default=None, help="with --run: that run's training log")
    p.add_argument(
        "--centres",
        default=None,
        choices=("learned", "log"),
        help="count's --centres (default: its own)",
    )
    p.add_argument("--work", default="/tmp/hoc_transfer", help="folder for a new run and counts")
    p.add_argument("--out", default="hoc_transfer", help="result name under benchmarks/results")
    args = p.parse_args(argv)
    trained_on = [n for n in args.train_on.split(",") if n]
    bad = [n for n in trained_on if not image_paths(n)[0].is_file()]
    if bad:
        raise SystemExit(f"--train-on: no image for {bad}")
    names = [n for n in KINDS[args.kind] if n not in trained_on] + trained_on
    t_all, load0 = time.time(), os.getloadavg()
    record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if args.run:
        run = Path(args.run)
        record["train"] = {"command": "trained before (see train_log)", "log": args.train_log}
    else:
        work = Path(args.work) / f"{args.out}"
        work.mkdir(parents=True, exist_ok=True)
        run, log = work / "run", work / "train.log"
        cmd, secs = train(trained_on, args.budget_minutes, run, log)
        record["train"] = {"command": " ".join(cmd), "seconds": round(secs, 1), "log": str(log)}
    log_path = record["train"]["log"]
    if log_path and Path(log_path).is_file():
        record["train"]["log_tail"] = Path(log_path).read_text().splitlines()[-6:]
    meta_path = run / "counter" / "counter.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    record["counter_steps"] = meta.get("steps")
    out_dir = run.parent / f"count_{args.out}"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd, lines, secs = count(run, names, out_dir, args.centres)
    record["count"] = {"command": " ".join(cmd), "seconds": round(secs, 1)}
    rows = []
    for name, line in zip(names, lines):
        status = "trained_on" if name in trained_on else "tuned" if name in TUNED else "held_out"
        rows.append(score(name, line, status))
        r = rows[-1]
        print(
            f"{name:14s} {status:10s} true={r['n_true']:4d} count={r.get('count')} "
            f"({r.get('count_err_pct', 0):+.1f} %) from {r.get('centres_from')}, "
            f"log={r.get('count_log')} learned={r.get('count_learned')} AP50={r.get('ap50')}",
            flush=True,
        )
    record.update(
        {
            "machine": f"{os.cpu_count()} cores, pinned with taskset to "
            f"{sorted(os.sched_getaffinity(0))}",
            "load_average_start": [round(x, 2) for x in load0],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.time() - t_all, 1),
            "budget_minutes": args.budget_minutes,
            "trained_on": trained_on,
            "tuned_not_trained_on": [r["image"] for r in rows if r["set"] == "tuned"],
            "held_out": [r["image"] for r in rows if r["set"] == "held_out"],
            "tuned_note": "tuned = bench_hoc_dev.TUNED: a classical setting was chosen on it",
            "answered_by": sorted({str(r.get("centres_from")) for r in rows}),
            "images": rows,
            "summary": {k: summary(rows, k) for k in ("count", "count_log", "count_learned")},
        }
    )
    path = write_json_atomic(results_dir() / f"{args.out}.json", record)
    print(json.dumps(record["summary"]["count"], indent=1))
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
