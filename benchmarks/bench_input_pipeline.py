"""Input pipeline throughput alone (no model): Weizmann horses -> TFRecords -> decode + box crop +
resize to 128 + augment + batch, in images/s, plus what each speed-up gave.

    .venv/bin/python benchmarks/bench_input_pipeline.py            # ~6-10 minutes (box shards)
    .venv/bin/python benchmarks/bench_input_pipeline.py --quick    # a few seconds (synthetic data
    only)

Writes `input_pipeline.json` (or `--out NAME`) into the results folder (benchmarks/common.py), with
the load average and the cores the process may run on (`cores_pinned`). Each variant is reported
as wall-clock images/s and as images per CPU-second of this process (all threads):
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

The streams the trainers actually read (issue #18), each beside its own trainer's compiled training
step on the same core(s) (`--apps`, default all three; consumption = batch / step time, the step
timed as `bench_train_step.py` builds it: `benchmarks/train_step_adapters.py`):
- `box_seg stream`: the run's box shards written once from the same TFRecords by
  `box_seg.prepare_box_shards` (crops, GrabCut priors and areas, scale-matched backgrounds at the
  preset's resolution; a one-time cost per run, about 4 minutes on one loaded core), then
  `indep_seg.data.box_seg_stream.box_seg_dataset` at the preset's batch;
- `ilsgan stream`: the run's image shards written once from the same TFRecords by
  `ilsgan.prepare_image_shards` (centre squares at the preset's resolution), then
  `indep_seg.data.image_stream.image_dataset` at the preset's batch; the step is timed over
  `r1_interval` steps (one lazy R1 step among them, as in training);
- `hoc stream`: `hoc.make_dataset_multi` of `../shared/datasets/nuclei_dsb2018/image.png`
  normalised and resolved as `hoc.train_hoc` does (random patches of the rescaled image + the
  inpainted background's patches); images/s counts real patches (each batch also holds as many
  backgrounds). The step is the trainer's model from the same resolved options.
Per app: `apps[app]` = stream and trainer images/s and `stream_over_trainer` (target >= 10x), and
`stream_over_trainer_per_cpu_s`, the same from images per CPU-second of this process (on a core
shared with other jobs the wall ratio depends on what the neighbours did during each part).

    .venv/bin/python benchmarks/bench_input_pipeline.py --apps ilsgan,hoc --trainers ''  # ~2 min
    taskset -c 1 .venv/bin/python benchmarks/bench_input_pipeline.py \
        --out input_pipeline_DATE_core1.json                                   # ~10 min, 1 core
"""

from __future__ import annotations

import argparse
import dataclasses
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
HOC_IMAGE = REPO.parent / "shared" / "datasets" / "nuclei_dsb2018" / "image.png"
APP_STREAMS = ("box_seg", "ilsgan", "hoc")  # streams measured with `--apps`
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


def _batch_len(batch):
    """Images in a batch: a dict's `image` / `real` (hoc) or a bare tensor (ilsgan)."""
    if isinstance(batch, dict):
        batch = batch["image"] if "image" in batch else batch["real"]
    return int(batch.shape[0])


def _take(it, num_batches):
    n = 0
    for _ in range(num_batches):
        n += _batch_len(next(it))
    return n


def _rate(ds, num_batches, warmup=2):
    it = iter(ds)
    _take(it, warmup)
    with _Clock() as clock:
        n = _take(it, num_batches)
    return clock, n


def _step_rate(handle, steps, warmup=2):
    """Images per second and per CPU-second (this process) of a `StepHandle`'s compiled step
    (train_step_adapters): `warmup` steps (tracing), then `steps` timed up to the last outputs."""
    import tensorflow as tf

    for _ in range(warmup):
        handle.step(*handle.batch)
    with _Clock() as clock:
        for _ in range(steps):
            out = handle.step(*handle.batch)
        tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, out)  # wait
    n = steps * handle.batch_size
    return n / clock.wall, n / max(clock.cpu, 1e-9)


def _box_seg_stream(pattern, tmp):
    """The box_seg trainer's input: box shards written once (prepare_box_shards), streamed."""
    from indep_seg.data.box_seg_stream import box_seg_dataset
    from indep_seg.training.experiments.box_seg import BoxSegConfig, prepare_box_shards

    cfg = BoxSegConfig(evidence_images=0)
    shards = prepare_box_shards(pattern, cfg, Path(tmp) / "box_shards", seed=0, log=lambda *a: None)
    stream = box_seg_dataset(
        shards["crop_files"],
        shards["background_files"],
        cfg.batch_size,
        resolution=cfg.resolution,
        seed=0,
        prior=True,
        area=True,
    )
    info = {
        "boxes": shards["boxes"],
        "backgrounds": shards["backgrounds"],
        "prior": cfg.prior,
        "note": f"{shards['boxes']} boxes + {shards['backgrounds']} backgrounds, {cfg.prior} "
        f"priors, written once",
    }
    return stream, cfg.batch_size, cfg.resolution, info, {}


def _ilsgan_stream(pattern, tmp):
    """The ilsgan trainer's input: image shards written once (prepare_image_shards), streamed."""
    from indep_seg.data.image_stream import image_dataset
    from indep_seg.training.experiments.ilsgan import ilsgan_config, prepare_image_shards

    cfg = ilsgan_config()
    shards = prepare_image_shards(
        pattern, cfg.resolution, Path(tmp) / "image_shards", cfg.max_images, log=lambda *a: None
    )
    stream = image_dataset(
        shards["image_files"], cfg.batch_size, resolution=cfg.resolution, seed=cfg.seed
    )
    info = {"images": shards["images"], "note": f"{shards['images']} centre squares, written once"}
    return stream, cfg.batch_size, cfg.resolution, info, {}


def _hoc_stream(image_path):
    """The hoc trainer's input: the image normalised, options resolved and patches streamed as
    `hoc.train_hoc` does for one image (`normalise` on, the preset's default)."""
    from indep_seg.imageio import load_image
    from indep_seg.training.experiments.hoc import (
        hoc_config,
        make_dataset_multi,
        prepare_image,
        resolve,
    )

    cfg = hoc_config()
    if not cfg.normalise:
        raise ValueError("hoc preset: normalise=False is not what this benchmark reproduces")
    image, info = prepare_image(load_image(str(image_path)), cfg.window_per_sigma)
    r = resolve(dataclasses.replace(cfg, window=info["window"]), image)
    stream = make_dataset_multi([image], [info["window"]], r, seed=0)
    info = {
        "image": str(image_path),
        "window": r["window"],
        "num_layers": r["num_layers"],
        "background": r["background"],
        "note": f"{image.shape[1]}x{image.shape[0]} image, window {r['window']} px, "
        f"{r['background']} backgrounds",
    }
    return stream, int(r["batch_size"]), int(r["resolution"]), info, {"resolved": r}


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
        help="box-crop trainers whose step rate is measured beside the cached box-crop pipeline "
        "('' = none)",
    )
    parser.add_argument(
        "--apps",
        default="box_seg,ilsgan,hoc",
        help="trainers whose own input stream is measured beside their step ('' = none)",
    )
    parser.add_argument(
        "--out", default="input_pipeline.json", help="file name in the results folder"
    )
    args = parser.parse_args(argv)
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = sorted(set(apps) - set(APP_STREAMS))
    if unknown:
        parser.error(f"--apps: expected some of {sorted(APP_STREAMS)}, got {unknown}")

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
    try:
        result["cores_pinned"] = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        pass
    app_rows, app_extra = {}, {}

    def measure_stream(app, build, *build_args):
        """The app's stream built (shards written: `setup_seconds`), then 300 batches timed."""
        with _Clock() as setup:
            stream, batch, res, info, extra = build(*build_args)
        clock, n = _rate(stream, 300)
        note = info.pop("note")
        wall, _ = record(
            f"{app} stream", clock, n, f"the {app} trainer's input, {res} px, batch {batch}: {note}"
        )
        app_rows[app] = dict(
            stream_images_per_s=round(wall, 1),
            stream_images_per_cpu_s=rows[-1]["images_per_cpu_s"],
            batch=batch,
            resolution=res,
            setup_seconds=round(setup.wall, 2),
            **info,
        )
        app_extra[app] = extra
        print(f"  {app}: setup (once per run) {setup.wall:.1f} s", flush=True)

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

            # The box_seg and ilsgan trainers' own streams: shards written once, read by tf.data.
            for app, build in (("box_seg", _box_seg_stream), ("ilsgan", _ilsgan_stream)):
                if app in apps:
                    measure_stream(app, build, pattern, tmp)
    elif not args.quick:
        result["skipped_weizmann"] = f"{WEIZMANN} is absent"
    if "hoc" in apps and not args.quick:
        if HOC_IMAGE.is_file():
            measure_stream("hoc", _hoc_stream, HOC_IMAGE)
        else:
            result["skipped_hoc"] = f"{HOC_IMAGE} is absent"

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
    from benchmarks.train_step_adapters import ADAPTERS

    presets = [t.strip() for t in args.trainers.split(",") if t.strip()]
    trainers = {}
    for preset in dict.fromkeys(presets + list(app_rows)) if not args.quick else []:
        h = ADAPTERS[preset](preset, **app_extra.get(preset, {}))
        # ilsgan: one lazy R1 step per r1_interval, as in training; box_seg_paper: slow steps
        steps = {"box_seg_paper": 2}.get(preset, max(6, int(h.config.get("r1_interval", 0))))
        rate, per_cpu = _step_rate(h, steps)
        trainers[preset] = {
            "images_per_s": round(rate, 1),
            "images_per_cpu_s": round(per_cpu, 1),
            "batch": h.batch_size,
            "resolution": h.config["resolution"],
            "steps_timed": steps,
        }
        print(
            f"trainer {preset:20s} {rate:8.1f} images/s wall  {per_cpu:8.1f} per CPU-s  "
            f"(batch {h.batch_size}, "
            f"{h.config['resolution']} px, {steps} steps)",
            flush=True,
        )
    if trainers:
        result["trainers"] = trainers
    box_crop = [trainers[p]["images_per_s"] for p in presets if p in trainers]
    if box_crop:
        fastest = max(box_crop)
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
    for app, row in app_rows.items():
        if app in trainers:
            row["trainer_images_per_s"] = trainers[app]["images_per_s"]
            row["stream_over_trainer"] = round(
                row["stream_images_per_s"] / row["trainer_images_per_s"], 1
            )
            row["meets_10x"] = bool(row["stream_over_trainer"] >= 10)
            # the same per CPU-second of this process: robust to neighbours on the same core
            row["stream_over_trainer_per_cpu_s"] = round(
                row["stream_images_per_cpu_s"] / trainers[app]["images_per_cpu_s"], 1
            )
            print(
                f"{app} stream / {app} trainer = {row['stream_over_trainer']}x wall, "
                f"{row['stream_over_trainer_per_cpu_s']}x per CPU-s",
                flush=True,
            )
    if app_rows:
        result["apps"] = app_rows
    result["loadavg_at_end"] = list(os.getloadavg())
    path = write_json_atomic(results_dir() / args.out, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
