"""Peak memory of `indep-seg train` against the size of the data set (issue #18's target).

    taskset -c 1 nice python benchmarks/bench_train_memory.py --records 1000 10000 --steps 40

Writes N-record TFRecord sets of the Weizmann horse photos repeated (the 328 records of
`indep-seg tfrecords masks` on ../shared/datasets/weizmann_horse, by default downscaled to at most
160 px a side so that the pass over 10,000 records takes minutes on a shared core, copied
round-robin with new source ids into N / 1000 shards), then runs `indep-seg train --experiment
EXPERIMENT --data SET
--steps S` on each in a subprocess under `/usr/bin/time -v` and reports its peak resident set
size, wall time, the time spent writing the run's box shards (from the run's log) and the
training steps/s. Target: the 10,000-record peak within 300 MB of the 1,000-record one.
Results (with the date and the machine's load average) go to
benchmarks/results/train_memory_<experiment>_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HORSE = REPO.parent / "shared" / "datasets" / "weizmann_horse"


def horse_records(cache: Path, max_side: int = 0) -> list[bytes]:
    """The serialized records of the horse photos with their masks (the project's converter); with
    `max_side`, photos and masks are first downscaled to at most that many pixels a side."""
    import tensorflow as tf
    from PIL import Image

    from indep_seg.tfrecords_tools.converters import convert_masks

    tag = f"horse{max_side or ''}"
    if not list(cache.glob(f"{tag}-*-of-*.tfrecord")):
        rgb, masks = HORSE / "rgb", HORSE / "figure_ground"
        if max_side:
            rgb, masks = cache / f"{tag}_rgb", cache / f"{tag}_masks"
            for src, dst in ((HORSE / "rgb", rgb), (HORSE / "figure_ground", masks)):
                dst.mkdir(parents=True, exist_ok=True)
                for f in sorted(src.glob("*.jpg")):
                    with Image.open(f) as im:
                        scale = min(1.0, max_side / max(im.size))
                        size = (
                            max(1, round(im.size[0] * scale)),
                            max(1, round(im.size[1] * scale)),
                        )
                        im.convert("RGB" if dst == rgb else "L").resize(size, Image.BILINEAR).save(
                            dst / f"{f.stem}.png"
                        )
        convert_masks(
            str(rgb), str(masks), str(cache / tag), num_shards=1, workers=2, progress=False
        )
    files = sorted(str(p) for p in cache.glob(f"{tag}-*-of-*.tfrecord"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def write_set(records: list[bytes], n: int, out: Path) -> str:
    """`n` records (round-robin over `records`, source ids made unique) in max(1, n // 1000)
    shards."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    shards = max(1, n // 1000)
    if len(list(out.glob(f"set{n}-*-of-*.tfrecord"))) == shards:
        return str(out / f"set{n}-*.tfrecord")
    writers = [
        tf.io.TFRecordWriter(str(out / f"set{n}-{i:05d}-of-{shards:05d}.tfrecord"))
        for i in range(shards)
    ]
    for i in range(n):
        ex = tf.train.Example.FromString(records[i % len(records)])
        sid = ex.features.feature["image/source_id"].bytes_list.value[0].decode()
        ex.features.feature["image/source_id"].bytes_list.value[0] = f"{sid}@{i}".encode()
        writers[i * shards // n].write(ex.SerializeToString())
    for w in writers:
        w.close()
    return str(out / f"set{n}-*.tfrecord")


def run_train(
    data: str, experiment: str, steps: int, overrides: list[str], model_dir: Path
) -> dict:
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "indep_seg",
        "train",
        "--experiment",
        experiment,
        "--data",
        data,
        "--model-dir",
        str(model_dir),
        "--steps",
        str(steps),
    ]
    if overrides:
        cmd += ["--override", *overrides]
    t = time.time()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    wall = time.time() - t
    if proc.returncode != 0:
        raise SystemExit(
            f"train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    shards = re.search(  # box_seg's box shards, or ilsgan's image shards
        r"box shards: (\d+) boxes, (\d+) backgrounds .* written in ([\d.]+) s", proc.stdout
    ) or re.search(
        r"data: (\d+) photos .* written to (\d+) shard\(s\) in .* in ([\d.]+) s", proc.stdout
    )
    stats_file = model_dir / "adversarial" / "stats.jsonl"  # box_seg's first phase
    if not stats_file.is_file():
        stats_file = model_dir / "stats.jsonl"  # one-phase trainers (ilsgan)
    stats = [json.loads(ln) for ln in stats_file.read_text().splitlines()]
    rates = [s["steps_per_s"] for s in stats[1:]] or [stats[-1]["steps_per_s"]]
    return {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "wall_s": round(wall, 1),
        "boxes": int(shards.group(1)) if shards else None,  # photos for ilsgan
        "shards_written_s": float(shards.group(3)) if shards else None,
        "train_steps_per_s": round(sum(rates) / len(rates), 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--experiment", default="box_seg")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--override",
        nargs="*",
        default=["log_every=10", "evidence_images=0"],
        help="config overrides (add prior=none area_from_prior=false: no GrabCut priors)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=160,
        help="downscale the horse photos to at most this many pixels a side (0: original sizes, "
        "81x100 to 1280x960): the preparation pass decodes every record once",
    )
    p.add_argument(
        "--work", default=None, help="folder for the record sets (default: a temporary one)"
    )
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_train_memory_"))
    records = horse_records(work, args.max_side)
    load_before = os.getloadavg()
    rows = []
    for n in args.records:
        data = write_set(records, n, work / "sets")
        with tempfile.TemporaryDirectory(prefix="run_", dir=work) as run:
            row = {
                "records": n,
                **run_train(data, args.experiment, args.steps, args.override, Path(run) / "m"),
            }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "benchmark": "bench_train_memory",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", "benchmarks/bench_train_memory.py"] + sys.argv[1:]),
        "experiment": args.experiment,
        "steps": args.steps,
        "overrides": args.override,
        "photos_max_side": args.max_side or None,
        "machine": {
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "rows": rows,
    }
    if len(rows) >= 2:
        result["peak_growth_mb"] = round(rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"], 1)
        result["target"] = "peak of the largest set within 300 MB of the smallest"
        result["target_met"] = bool(result["peak_growth_mb"] <= 300)
    out = (
        Path(args.out)
        / f"train_memory_{args.experiment}_{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
