"""Whole-image trainers' input (ILSGAN): square crops written once into shards, streamed by tf.data.

`write_image_shards(images, directory, resolution=R)` stores each photo's centre square resized to
R x R (uint8, `images-00000-of-000NN.tfrecord`, manifest `shards.json` written last, as
`indep_seg.data.box_seg_stream` does for the box-level trainer); `image_dataset(files, batch, ...)`
streams them: files interleaved in order, FILE / DATA auto-sharding, a bounded seeded shuffle,
stateless flips keyed by the batch's position (by its records' hash with >= 8 files), batches of
`f32 [B, R, R, 3]`, prefetch, and `start_batch` for an exact resume. `sample_image_records` draws
a bounded uniform sample (e.g. the real images of a KID reference). Memory does not grow with the
number of photos.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from indep_seg.data.box_seg_stream import (
    MANIFEST,
    RECORDS_PER_SHARD,
    ShardWriter,
    _record_stream,
    background_example,
    batch_stream,
    parse_background_record,
    remove_stale_temporaries,
    reservoir_sample,
)
from indep_seg.data.files import DataError
from indep_seg.data.readers import resolve_tfrecord_files

__all__ = [
    "centre_square",
    "write_image_shards",
    "read_image_shards",
    "image_dataset",
    "sample_image_records",
]

AUTOTUNE = tf.data.AUTOTUNE


def centre_square(image, resolution: int) -> np.ndarray:
    """The centre square of a uint8 `[H, W, 3]` photo resized (antialiased) to `[R, R, 3]` float32
    in [0, 1]."""
    h, w = int(image.shape[0]), int(image.shape[1])
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = tf.cast(image[y0 : y0 + s, x0 : x0 + s], tf.float32) / 255.0
    return np.clip(
        tf.image.resize(crop, [resolution, resolution], antialias=True).numpy(), 0.0, 1.0
    )


def write_image_shards(
    images,
    directory,
    *,
    resolution: int,
    records_per_shard: int = 4 * RECORDS_PER_SHARD,
    info: dict | None = None,
) -> dict:
    """Write `[R, R, 3]` images (an iterable; uint8 or float in [0, 1]) into `directory/images-*`;
    temporary names until the set is complete, manifest last. Returns
    `read_image_shards(directory)`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST
    if manifest_path.exists():
        manifest_path.unlink()
    remove_stale_temporaries(directory)
    with ShardWriter(directory, "images", records_per_shard) as writer:
        for image in images:
            if tuple(np.shape(image)[:2]) != (resolution, resolution):
                raise ValueError(
                    f"images: expected [{resolution}, {resolution}, 3], got shape {np.shape(image)}"
                )
            writer.write(background_example(image))
        if writer.count == 0:
            raise DataError(f"{directory}: no image to write (the data set holds no photo)")
        files = [Path(f).name for f in writer.close()]
    manifest = {
        "resolution": int(resolution),
        "images": writer.count,
        "image_files": files,
        "info": info or {},
        "bytes": {f: (directory / f).stat().st_size for f in files},
    }
    tmp = directory / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, manifest_path)
    return read_image_shards(directory)


def read_image_shards(directory, info: dict | None = None) -> dict | None:
    """The manifest of a complete image shard set (absolute file names), or None (missing,
    truncated,
    or made with other `info`)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info is not None and manifest.get("info") != json.loads(json.dumps(info)):
        return None
    files, sizes = manifest.get("image_files", []), manifest.get("bytes", {})
    if not files or not all(
        (directory / f).is_file() and (directory / f).stat().st_size == sizes.get(f) for f in files
    ):
        return None
    manifest["image_files"] = [str(directory / f) for f in files]
    return manifest


def image_dataset(
    files,
    batch_size: int,
    *,
    resolution: int,
    seed: int = 0,
    shuffle_buffer: int = 2048,
    start_batch: int = 0,
    prefetch: int | None = AUTOTUNE,
) -> tf.data.Dataset:
    """Infinite stream of `f32 [B, R, R, 3]` batches from image shards (see the module
    docstring)."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not (isinstance(start_batch, int) and start_batch >= 0):
        raise ValueError(f"start_batch: expected an integer >= 0, got {start_batch!r}")
    files = resolve_tfrecord_files(files)
    ds = _record_stream(
        files, parse_background_record(resolution), seed, shuffle_buffer, batch_size, len(files)
    )
    return batch_stream(ds, batch_size, start_batch, prefetch, len(files))


def sample_image_records(files, resolution: int, count: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample (seeded, reservoir) of `count` images `[n, R, R, 3]` float32 from
    image shards."""
    ds = tf.data.TFRecordDataset(resolve_tfrecord_files(files)).map(
        parse_background_record(resolution), num_parallel_calls=AUTOTUNE, deterministic=True
    )
    sample = reservoir_sample(ds.as_numpy_iterator(), count, seed)
    return np.stack(sample) if sample else np.zeros([0, resolution, resolution, 3], np.float32)
