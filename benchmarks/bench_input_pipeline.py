"""Input pipeline throughput alone (no model): Weizmann horses -> TFRecords -> decode + box crop +
resize to 128 + augment + batch, in images/s, plus what each speed-up gave.

    .venv/bin/python benchmarks/bench_input_pipeline.py            # ~1-2 minutes
    .venv/bin/python benchmarks/bench_input_pipeline.py --quick    # a few seconds (synthetic data
    only)

Writes `input_pipeline.json` into the results folder (benchmarks/common.py). Each variant is
reported as wall-clock images/s and as images per CPU-second of this process (all threads):
the machine is shared, and under contention the wall rate says more about the neighbours
than about the pipeline; `projected_2_cores_images_per_s` = images per CPU-second x 2. Targets (data
issue): >= 1500 images/s at 128x128 on 2 cores, and >= 10x what the trainers consume
(`trainer_images_per_s`: the fastest of the `--trainers`' own compiled training steps, measured
in the same run after the pipeline; `pipeline_over_fastest_trainer` is the ratio).

Variants measured (all batch 32, resolution 128, paper crop `margin=0`, augmentation on:
window jitter 0.05 + horizontal flip):
- `folder, full decode`: read_image_folder with DCT scaling off (JPEG decoded at full size,
  then resized to the mask's size) -> crop, every epoch;
- `folder, DCT scaling`: the same with `decode_jpeg(ratio=2|4|8)`;
- `tfrecords, no cache`: records (photos already at mask size, PNG) decoded every epoch;
- `tfrecords, cached`: decoded-and-cropped uint8 crops cached after the first epoch: steady state;
- `synthetic, cached`: the embedded dataset (1000 images, 128 px), steady state.

And the stream the `box_seg` trainer actually reads (issue #18): the run's box shards written
once from the same TFRecords by `box_seg.prepare_box_shards` (crops, GrabCut priors and areas,
scale-matched backgrounds at the preset's resolution; `box_shards_seconds`, a one-time cost per
run), then `indep_seg.data.box_seg_stream.box_seg_dataset` at the preset's batch
(`box_seg stream`, steady state), beside the `box_seg` trainer's own step
(`box_seg_stream_over_box_seg_trainer`, target >= 10x).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, results_dir, write_json_atomic  # noqa: E402

WEIZMANN = REPO.parent / "shared" / "datasets" / "weizmann_horse"
TARGET = 1500.0


def _cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Clock:
    """Wall time and this process's CPU time (all threads) over a block."""

    def __enter__(self):
        self.t, self.c = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.cpu = _cpu_seconds() - self.c


def _take(it, num_batches):
    n = 0
    for _ in range(num_batches):
        n += int(next(it)["image"].shape[0])
    return n


def _rate(ds, num_batches, warmup=2):
    it = iter(ds)
    _take(it, warmup)
    with _Clock() as clock:
        n = _take(it, num_batches)
    return clock, n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny configuration (synthetic data only)"
    )
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--trainers",
        default="box_seg,box_seg_paper",
        help="box-crop trainers whose step rate is measured beside the pipeline ('' = none)",
    )
    args = parser.parse_args(argv)

    import tensorflow as tf

    from indep_seg.data import box_crop_pipeline, read_image_folder, read_synthetic, read_tfrecords
    from indep_seg.data import decode as decode_mod
    from indep_seg.tfrecords_tools import convert_masks

    R, B = args.resolution, args.batch_size
    kw = dict(augment=True, batch_size=B, seed=0, repeat=True, shuffle_buffer=256)
    rows = []

    cores = min(2, os.cpu_count() or 1)

    def record(name, clock, n, note):
        wall, per_cpu = n / clock.wall, n / max(clock.cpu, 1e-9)
        rows.append(
            {
                "variant": name,
                "images_per_s": round(wall, 1),
                "images_per_cpu_s": round(per_cpu, 1),
                "projected_2_cores_images_per_s": round(per_cpu * cores, 1),
                "images": n,
                "note": note,
            }
        )
        print(
            f"{name:28s} {wall:8.1f} images/s wall  {per_cpu:8.1f} per CPU-s  ({n} images)  {note}",
            flush=True,
        )
        return wall, per_cpu * cores

    result = {
        "resolution": R,
        "batch_size": B,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "target_images_per_s": TARGET,
        "trainer_images_per_s": None,
    }

    if not args.quick and WEIZMANN.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            summary = convert_masks(
                WEIZMANN / "rgb",
                WEIZMANN / "figure_ground",
                Path(tmp) / "horse",
                num_shards=4,
                progress=False,
            )
            result["conversion"] = {
                "records": summary.records,
                "bytes": summary.bytes,
                "seconds": round(time.perf_counter() - t, 2),
            }
            print(
                f"converted {summary.records} records, {summary.bytes:,} bytes, "
                f"{result['conversion']['seconds']} s",
                flush=True,
            )
            n_epoch = summary.records
            batches_epoch = max(1, n_epoch // B)

            # Folder reader, decoding the original JPEGs every epoch: with and without DCT scaling.
            original = decode_mod.decode_photo_to_size
            for name, dct in (("folder, full decode", False), ("folder, DCT scaling", True)):
                decode_mod.decode_photo_to_size = lambda c, h, w, _d=dct: original(
                    c, h, w, dct_scaling=_d
                )
                try:
                    ds = read_image_folder(WEIZMANN / "rgb", masks_dir=WEIZMANN / "figure_ground")
                    clock, n = _rate(box_crop_pipeline(ds, R, **kw), batches_epoch)
                finally:
                    decode_mod.decode_photo_to_size = original
                record(
                    name, clock, n, "original JPEGs (81x100 .. 1280x960) -> mask size, every epoch"
                )

            pattern = str(Path(tmp) / "horse-*.tfrecord")
            ds = read_tfrecords(pattern)
            clock, n = _rate(box_crop_pipeline(ds, R, **kw), 2 * batches_epoch)
            record("tfrecords, no cache", clock, n, "PNG records at mask size decoded every epoch")

            p = box_crop_pipeline(read_tfrecords(pattern), R, cache=True, **kw)
            it = iter(p)
            with _Clock() as clock:
                n = _take(it, batches_epoch + 1)
            record("tfrecords, cached: epoch 1", clock, n, "fills the cache")
            with _Clock() as clock:
                n = _take(it, 20 * batches_epoch)
            wall, projected = record(
                "tfrecords, cached", clock, n, "steady state: augment + batch from cached crops"
            )
            result["weizmann_tfrecords_cached_images_per_s"] = round(wall, 1)
            result["weizmann_tfrecords_cached_projected_2_cores_images_per_s"] = round(projected, 1)
            result["meets_1500_target_wall"] = bool(wall >= TARGET)
            result["meets_1500_target_projected_2_cores"] = bool(projected >= TARGET)

            # The box_seg trainer's own stream: shards written once, then read by tf.data.
            from indep_seg.data.box_seg_stream import box_seg_dataset
            from indep_seg.training.experiments.box_seg import BoxSegConfig, prepare_box_shards

            cfg = BoxSegConfig(evidence_images=0)
            with _Clock() as clock:
                shards = prepare_box_shards(
                    pattern, cfg, Path(tmp) / "box_shards", seed=0, log=lambda *a: None
                )
            result["box_shards_seconds"] = round(clock.wall, 2)
            result["box_shards"] = {
                "boxes": shards["boxes"],
                "backgrounds": shards["backgrounds"],
                "resolution": cfg.resolution,
                "prior": cfg.prior,
                "images_per_s": round(shards["boxes"] / clock.wall, 1),
            }
            print(
                f"box shards: {shards['boxes']} boxes + {shards['backgrounds']} backgrounds at "
                f"{cfg.resolution} px with {cfg.prior} priors in {clock.wall:.1f} s (once per run)",
                flush=True,
            )
            stream = box_seg_dataset(
                shards["crop_files"],
                shards["background_files"],
                cfg.batch_size,
                resolution=cfg.resolution,
                seed=0,
                prior=True,
                area=True,
            )
            clock, n = _rate(stream, 300)
            wall, projected = record(
                "box_seg stream",
                clock,
                n,
                f"the box_seg trainer's input: shards -> "
                f"{cfg.resolution} px crops + priors + areas + backgrounds, batch {cfg.batch_size}",
            )
            result["box_seg_stream_images_per_s"] = round(wall, 1)
    elif not args.quick:
        result["skipped_weizmann"] = f"{WEIZMANN} is absent"

    n_syn = 64 if args.quick else 1000
    syn = read_synthetic(num_images=n_syn, seed=0, size=R)
    p = box_crop_pipeline(syn, R, cache=True, **kw)
    it = iter(p)
    _take(it, n_syn // B + 1)  # fill the cache (generation is numpy, about 8 ms per image)
    with _Clock() as clock:
        n = _take(it, 10 if args.quick else 200)
    record("synthetic, cached", clock, n, f"{n_syn} images of {R}px, steady state")
    result["table"] = rows
    per_cpu = {r["variant"]: r["images_per_cpu_s"] for r in rows}

    def ratio(a, b):
        return round(per_cpu[a] / per_cpu[b], 2) if a in per_cpu and b in per_cpu else None

    # Speed-ups measured per CPU-second (robust to the shared machine's load).
    result["speedups_per_cpu_s"] = {
        "dct_scaling_vs_full_jpeg_decode": ratio("folder, DCT scaling", "folder, full decode"),
        "tfrecords_vs_folder_jpeg": ratio("tfrecords, no cache", "folder, DCT scaling"),
        "cache_vs_no_cache": ratio("tfrecords, cached", "tfrecords, no cache"),
    }
    # What the trainers consume: images/s of their own compiled training step, same process.
    trainers = {}
    for preset in [t for t in args.trainers.split(",") if t.strip()] if not args.quick else []:
        from benchmarks.train_step_adapters import box_seg as box_seg_step

        h = box_seg_step(preset.strip())
        for _ in range(2):
            h.step(*h.batch)
        steps = 6 if preset == "box_seg" else 2
        t = time.perf_counter()
        for _ in range(steps):
            out = h.step(*h.batch)
        tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, out)  # wait for it
        rate = steps * h.batch_size / (time.perf_counter() - t)
        trainers[preset] = {
            "images_per_s": round(rate, 1),
            "batch": h.batch_size,
            "resolution": h.config["resolution"],
        }
        print(
            f"trainer {preset:20s} {rate:8.1f} images/s (batch {h.batch_size}, "
            f"{h.config['resolution']} px)",
            flush=True,
        )
    if trainers:
        fastest = max(v["images_per_s"] for v in trainers.values())
        result["trainers"] = trainers
        result["trainer_images_per_s"] = fastest
        if "weizmann_tfrecords_cached_images_per_s" in result:
            result["pipeline_over_fastest_trainer"] = round(
                result["weizmann_tfrecords_cached_images_per_s"] / fastest, 1
            )
            result["meets_10x_trainer"] = bool(result["pipeline_over_fastest_trainer"] >= 10)
            print(
                f"pipeline (cached) / fastest trainer = {result['pipeline_over_fastest_trainer']}x",
                flush=True,
            )
        if "box_seg" in trainers and "box_seg_stream_images_per_s" in result:
            result["box_seg_stream_over_box_seg_trainer"] = round(
                result["box_seg_stream_images_per_s"] / trainers["box_seg"]["images_per_s"], 1
            )
            result["box_seg_stream_meets_10x"] = bool(
                result["box_seg_stream_over_box_seg_trainer"] >= 10
            )
            print(
                "box_seg stream / box_seg trainer = "
                f"{result['box_seg_stream_over_box_seg_trainer']}x",
                flush=True,
            )
    result["loadavg_at_end"] = list(os.getloadavg())
    path = write_json_atomic(results_dir() / "input_pipeline.json", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
