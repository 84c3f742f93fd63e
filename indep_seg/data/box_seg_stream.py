"""The box-level trainer's input: per-box shards written once, streamed by tf.data.

`box_seg` (Dai et al. 2019, application 1) trains on box crops, each with its per-image box prior
and area target a (eq. 7), against scale-matched backgrounds. The expensive per-box work (crop
resampling from the full photo, the GrabCut prior, the background fill) is done once, one photo
at a time, and written as small records into sharded TFRecords beside the run
(`write_box_seg_shards`); training then streams them (`box_seg_dataset`) with memory that does not
grow with the data set:

    crops-00000-of-00012.tfrecord        one record per box: crop (uint8 [R, R, 3]),
                                          prior (uint8 [R, R, 1], optional), area, the
                                          prior's score (optional), source_id
    backgrounds-00000-of-00012.tfrecord  one record per background (uint8 [R, R, 3])
    shards.json                           the manifest, written last: the set is complete

Every shard is written under a temporary name and renamed when the whole set is done; the
manifest is written (atomically) after the renames, so a set without `shards.json` is never read
(`read_box_seg_shards` returns None and the caller writes it again).

`box_seg_dataset(crop_files, background_files, batch_size, ...)` yields the dicts that
`ForegroundSegGAN.train_step` and `Distiller.train_step` consume:
`{"image": f32 [B, R, R, 3], "background": f32 [B, R, R, 3]}` plus `"prior"` (`[B, R, R, 1]`) and
`"area"` (`[B]`) when asked for, and `"prior_weight"` (`[B]`: 1 where the box's prior scored at
least a threshold, else 0) when given one. Files are interleaved in a fixed order and auto-sharded
across workers (`FILE` with >= 8 files per set, else `DATA`), elements shuffled with a bounded
buffer (seeded), batched, flipped with stateless randomness keyed by `(seed, position of the
batch)` (or, with >= 8 files, `(seed, hash of the batch's records)`) and prefetched: the stream
is a pure function of the files and the seed, so `start_batch` resumes it exactly (a run resumed
at step s sees the batches an uninterrupted run saw from step s on).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from indep_seg.data.files import DataError
from indep_seg.data.readers import _policy_for, _with_shard_policy, resolve_tfrecord_files

__all__ = [
    "ShardWriter",
    "box_example",
    "background_example",
    "write_box_seg_shards",
    "read_box_seg_shards",
    "box_seg_dataset",
    "parse_box_record",
    "parse_background_record",
    "sample_box_records",
    "reservoir_sample",
    "Reservoir",
    "batch_stream",
    "MANIFEST",
    "RECORDS_PER_SHARD",
]

AUTOTUNE = tf.data.AUTOTUNE
MANIFEST = "shards.json"
#: Records per shard: about 12 MB of 64 px crops with priors, so 10,000 boxes make 10 shards
#: (enough for FILE auto-sharding across workers).
RECORDS_PER_SHARD = 1024

_CROP_FEATURES = {
    "crop/encoded": tf.io.FixedLenFeature([], tf.string),
    "prior/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "area": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    "prior/score": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    "source_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
_BACKGROUND_FEATURES = {"background/encoded": tf.io.FixedLenFeature([], tf.string)}


# ----------------------------------------------------------------------------- writing


def _to_uint8(array, name):
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 or float in [0, 1], got dtype {a.dtype}")
    return (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _bytes_feature(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def box_example(crop, prior=None, area=None, source_id: str = "", prior_score=None) -> bytes:
    """One serialized box record: `crop` `[R, R, 3]`, optional `prior` `[R, R]` or `[R, R, 1]`
    (uint8, or float in [0, 1]), optional `area` (the box's a of eq. 7) and `prior_score` (the
    prior's label-free confidence, `indep_seg.box_prior.prior_score`)."""
    crop = _to_uint8(crop, "crop")
    if crop.ndim != 3 or crop.shape[-1] != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"crop: expected [R, R, 3], got shape {crop.shape}")
    feature = {
        "crop/encoded": _bytes_feature(crop.tobytes()),
        "source_id": _bytes_feature(str(source_id).encode("utf-8")),
    }
    if prior is not None:
        prior = _to_uint8(prior, "prior")
        if prior.size != crop.shape[0] * crop.shape[1]:
            raise ValueError(
                f"prior: expected [R, R(, 1)] with R = {crop.shape[0]}, got shape {prior.shape}"
            )
        feature["prior/encoded"] = _bytes_feature(prior.tobytes())
    if area is not None:
        feature["area"] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(area)]))
    if prior_score is not None:
        feature["prior/score"] = tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(prior_score)])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def background_example(background) -> bytes:
    """One serialized background record (`[R, R, 3]`, uint8 or float in [0, 1])."""
    bg = _to_uint8(background, "background")
    if bg.ndim != 3 or bg.shape[-1] != 3:
        raise ValueError(f"background: expected [R, R, 3], got shape {bg.shape}")
    return tf.train.Example(
        features=tf.train.Features(feature={"background/encoded": _bytes_feature(bg.tobytes())})
    ).SerializeToString()


class ShardWriter:
    """Serialized records into `DIR/PREFIX-00000-of-000NN.tfrecord`, `records_per_shard` per file.

    The number of shards is known only at the end: files are written as `PREFIX-00000.tmp-<pid>`
    and renamed by `close()`; `abort()` (or leaving a `with` block on an exception) removes them.
    """

    def __init__(self, directory, prefix: str, records_per_shard: int = RECORDS_PER_SHARD):
        if not (isinstance(records_per_shard, int) and records_per_shard >= 1):
            raise ValueError(f"records_per_shard: expected an int >= 1, got {records_per_shard!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.records_per_shard = records_per_shard
        self.count = 0
        self._temps: list[Path] = []
        self._writer = None
        self.files: list[str] = []

    def write(self, record: bytes) -> None:
        if self.count % self.records_per_shard == 0:
            if self._writer is not None:
                self._writer.close()
            tmp = self.directory / f"{self.prefix}-{len(self._temps):05d}.tmp-{os.getpid()}"
            self._temps.append(tmp)
            self._writer = tf.io.TFRecordWriter(str(tmp))
        self._writer.write(record)
        self.count += 1

    def close(self) -> list[str]:
        """Rename the temporary files to their final `-of-N` names; returns the final paths."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        n = len(self._temps)
        for old in self.directory.glob(f"{self.prefix}-*-of-*.tfrecord"):
            old.unlink()  # a previous, other-sized set with this prefix
        for i, tmp in enumerate(self._temps):
            final = self.directory / f"{self.prefix}-{i:05d}-of-{n:05d}.tfrecord"
            os.replace(tmp, final)
            self.files.append(str(final))
        self._temps = []
        return self.files

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for tmp in self._temps:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self._temps = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.abort()
        return False


def remove_stale_temporaries(directory) -> None:
    """Remove the `*.tmp-<pid>` files a killed writer left in `directory` (one writer per folder:
    each worker of a multi-worker run writes its own copy)."""
    for tmp in Path(directory).glob("*.tmp-*"):
        tmp.unlink(missing_ok=True)


def _chunk_box_records(chunk: dict, resolution: int, prior: bool, area: bool):
    """The serialized box records (`box_example`) of one chunk of `write_box_seg_shards`; the
    chunk's crops and priors are checked and converted to uint8 once, as whole arrays."""
    priors = chunk.get("priors") if prior else None
    areas = chunk.get("areas") if area else None
    scores = chunk.get("prior_scores") if prior else None
    if prior and priors is None:
        raise ValueError("chunks: prior=True but a chunk has no 'priors'")
    if area and areas is None:
        raise ValueError("chunks: area=True but a chunk has no 'areas'")
    crops = [np.asarray(c) for c in chunk["crops"]]
    for c in crops:
        if c.shape[:2] != (resolution, resolution):
            raise ValueError(
                f"chunks: crop of shape {c.shape}, expected [{resolution}, {resolution}, 3]"
            )
    if not crops:
        return
    crops = _to_uint8(np.stack(crops), "crops")
    priors = None if priors is None else _to_uint8(np.asarray(priors), "priors")
    for i, crop in enumerate(crops):
        yield box_example(
            crop,
            None if priors is None else priors[i],
            None if areas is None else areas[i],
            chunk["source_ids"][i],
            None if scores is None else scores[i],
        )


def write_box_seg_shards(
    chunks,
    directory,
    *,
    resolution: int,
    prior: bool,
    area: bool,
    records_per_shard: int = RECORDS_PER_SHARD,
    info: dict | None = None,
    finish=None,
) -> dict:
    """Write the crop and background shard sets of `directory` from prepared chunks; returns the
    manifest.

    Args:
        chunks: iterable of dicts `{"crops": [n, R, R, 3], "source_ids": [n] str, "priors": [n, R,
        R, 1]
            or None, "areas": [n] or None, "backgrounds": [k, R, R, 3]}` (uint8 or float in [0, 1]),
            one per few photos, so that memory holds one chunk at a time.
        directory: the shard folder (created); a previous set there is replaced only once the new
            one is complete.
        resolution: R.
        prior, area: whether every chunk carries priors / areas (stored in each box record).
        records_per_shard: records per TFRecord file.
        info: extra JSON-able facts stored in the manifest (e.g. the config the shards were made
        with).
        finish: optional `finish(directory) -> dict` run after the shards are complete and before
        the
            manifest is written (e.g. to write side files); its dict is stored in the manifest.

    Returns:
        The manifest `{"resolution", "prior", "area", "boxes", "backgrounds", "crop_files",
        "background_files", "info", "bytes"}` as `read_box_seg_shards` returns it (absolute file
        names); it is written to `directory/shards.json` (names relative) after every shard.
    """
    directory = _start_fresh_set(directory)
    crops_w = ShardWriter(directory, "crops", records_per_shard)
    bgs_w = ShardWriter(directory, "backgrounds", records_per_shard)
    try:
        for chunk in chunks:
            for record in _chunk_box_records(chunk, resolution, prior, area):
                crops_w.write(record)
            for bg in chunk["backgrounds"]:
                bgs_w.write(background_example(bg))
        _check_counts(directory, crops_w.count, bgs_w.count)
        crop_files = [Path(f).name for f in crops_w.close()]
        bg_files = [Path(f).name for f in bgs_w.close()]
        extra = finish(directory) if finish is not None else {}
    except BaseException:
        crops_w.abort()
        bgs_w.abort()
        raise
    manifest = {
        "resolution": int(resolution),
        "prior": bool(prior),
        "area": bool(area),
        "boxes": crops_w.count,
        "backgrounds": bgs_w.count,
        "crop_files": crop_files,
        "background_files": bg_files,
        "info": info or {},
        **(extra or {}),
        "bytes": {f: (directory / f).stat().st_size for f in crop_files + bg_files},
    }
    _write_manifest(directory, manifest)
    return read_box_seg_shards(directory)


def _start_fresh_set(directory) -> Path:
    """The shard folder (created), its old manifest removed (the old set is no longer complete
    from here on) and a killed writer's temporaries gone."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    remove_stale_temporaries(directory)
    return directory


def _check_counts(directory: Path, boxes: int, backgrounds: int) -> None:
    """A DataError when a set would hold no box or no background."""
    if boxes == 0:
        raise DataError(
            f"{directory}: no box to write (the data set gave no usable image/box pair)"
        )
    if backgrounds == 0:
        raise DataError(
            f"{directory}: no background to write (no photo has enough pixels outside "
            "its box; pass a background folder)"
        )


def _write_manifest(directory: Path, manifest: dict) -> None:
    """`directory/shards.json`, written atomically: from now on the set is complete."""
    tmp = directory / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, directory / MANIFEST)


def read_box_seg_shards(directory, info: dict | None = None) -> dict | None:
    """The manifest of a complete shard set in `directory` (file names made absolute), or None when
    there is none, a file is missing or has another size than written (truncated), or (with `info`)
    it was made with other settings: the caller then writes the set again."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if info is not None and manifest.get("info") != json.loads(json.dumps(info)):
        return None
    files = manifest.get("crop_files", []) + manifest.get("background_files", [])
    sizes = manifest.get("bytes", {})
    if not files or not all(
        (directory / f).is_file() and (directory / f).stat().st_size == sizes.get(f) for f in files
    ):
        return None
    manifest["crop_files"] = [str(directory / f) for f in manifest["crop_files"]]
    manifest["background_files"] = [str(directory / f) for f in manifest["background_files"]]
    return manifest


# ----------------------------------------------------------------------------- reading


def parse_box_record(
    resolution: int, prior: bool = False, area: bool = False, prior_threshold=None
):
    """A function: serialized box record -> `{"image": f32 [R, R, 3]}` (+ `"prior"`, `"area"`); on a
    batch of records `[B]` it returns batches (one vectorised parse). With `prior_threshold`, also
    `"prior_weight"`: 1.0 where the record's prior score is at least the threshold, else 0.0 (the
    prior-consistency term of `ForegroundSegGAN` then anchors only the confident priors)."""
    r = int(resolution)

    def parse(serialized):
        batched = serialized.shape.rank == 1
        parse_fn = tf.io.parse_example if batched else tf.io.parse_single_example
        f = parse_fn(serialized, _CROP_FEATURES)
        lead = [-1] if batched else []
        crop = tf.reshape(tf.io.decode_raw(f["crop/encoded"], tf.uint8), lead + [r, r, 3])
        out = {"image": tf.cast(crop, tf.float32) * (1.0 / 255.0)}
        if prior:
            p = tf.reshape(tf.io.decode_raw(f["prior/encoded"], tf.uint8), lead + [r, r, 1])
            out["prior"] = tf.cast(p, tf.float32) * (1.0 / 255.0)
        if area:
            out["area"] = f["area"]
        if prior_threshold is not None:
            out["prior_weight"] = tf.cast(f["prior/score"] >= float(prior_threshold), tf.float32)
        return out

    return parse


def sample_box_records(crop_files, resolution: int, count: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample (seeded, without replacement) of `count` crops `[count, R, R, 3]`
    float32 from box record files, in one streaming pass (reservoir sampling: memory holds
    `count`)."""
    files = resolve_tfrecord_files(crop_files)
    ds = tf.data.TFRecordDataset(files).map(
        lambda r: parse_box_record(resolution)(r)["image"],
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    sample = reservoir_sample(ds.as_numpy_iterator(), count, seed)
    return np.stack(sample) if sample else np.zeros([0, resolution, resolution, 3], np.float32)


class Reservoir:
    """A uniform random sample of `count` values of a stream of unknown length (Algorithm R,
    seeded): memory holds `count` values. `slot()` counts one more value and says where it goes,
    so that a caller builds a costly value (a JPEG) only when it is kept."""

    def __init__(self, count: int, seed: int = 0):
        self.count = int(count)
        self.items: list = []
        self._rng = np.random.default_rng(seed)
        self._seen = 0

    def slot(self) -> int | None:
        """Counts one more value of the stream; its index in `items`, or None when not kept."""
        self._seen += 1
        if len(self.items) < self.count:
            return len(self.items)
        j = int(self._rng.integers(0, self._seen))
        return j if j < self.count else None

    def put(self, slot: int, value) -> None:
        """Store `value` at a `slot()` answer."""
        if slot == len(self.items):
            self.items.append(value)
        else:
            self.items[slot] = value

    def add(self, value) -> None:
        """Offer one value of the stream."""
        slot = self.slot()
        if slot is not None:
            self.put(slot, value)


def reservoir_sample(values, count: int, seed: int = 0) -> list:
    """A uniform random sample of `count` items of an iterable of unknown length, in one pass
    (`Reservoir`): memory holds `count` items."""
    reservoir = Reservoir(count, seed)
    for value in values:
        reservoir.add(value)
    return reservoir.items


def parse_background_record(resolution: int):
    """A function: serialized background record -> f32 `[R, R, 3]` (`[B]` -> `[B, R, R, 3]`)."""
    r = int(resolution)

    def parse(serialized):
        batched = serialized.shape.rank == 1
        parse_fn = tf.io.parse_example if batched else tf.io.parse_single_example
        f = parse_fn(serialized, _BACKGROUND_FEATURES)
        bg = tf.io.decode_raw(f["background/encoded"], tf.uint8)
        bg = tf.reshape(bg, ([-1] if batched else []) + [r, r, 3])
        return tf.cast(bg, tf.float32) * (1.0 / 255.0)

    return parse


def _record_stream(files, parse, seed: int, shuffle_buffer: int, batch_size: int, shard_files: int):
    """Batches of the records of `files` forever (files in their order, interleaved): the serialized
    records are shuffled and batched, then parsed and flipped a batch at a time (vectorised); the
    flips keyed by the batch's position where the stream is auto-sharded by DATA, or by a hash of
    its records where by FILE (`_policy_for(shard_files)`: the files the whole stream reads)."""
    positional = _policy_for(shard_files) == tf.data.experimental.AutoShardPolicy.DATA
    ds = tf.data.Dataset.from_tensor_slices(list(files)).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if shuffle_buffer:
        # reshuffle_each_iteration=False: every iterator of the dataset (preview, fit, a resume)
        # sees the same stream; it follows repeat(), so there are no epochs it could reshuffle
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=True)

    def parse_and_flip(serialized, position=None):
        # one flip per element (a crop and its prior together), stateless, keyed by the seed and
        # the batch's position in the stream (read by DATA auto-sharding: every worker's share of
        # a global batch flips as one device's would, tests/test_distributed_box_seg.py), or, for
        # FILE auto-sharding (>= 8 files), by a hash of the batch's records: a position needs a
        # counter (enumerate), whose RangeDataset source makes FILE auto-sharding fail
        x = parse(serialized)
        if position is None:
            position = tf.reduce_sum(tf.strings.to_hash_bucket_fast(serialized, 2**31 - 1))
        key = tf.stack([tf.constant(seed, tf.int64), position])
        do = tf.random.stateless_uniform([batch_size], key) < 0.5

        def f(t):
            return tf.where(do[:, None, None, None], tf.reverse(t, [2]), t)

        if isinstance(x, dict):
            return {k: (f(v) if v.shape.rank == 4 else v) for k, v in x.items()}
        return f(x)

    if positional:
        return ds.enumerate().map(
            lambda i, s: parse_and_flip(s, i), num_parallel_calls=AUTOTUNE, deterministic=True
        )
    return ds.map(parse_and_flip, num_parallel_calls=AUTOTUNE, deterministic=True)


def box_seg_dataset(
    crop_files,
    background_files,
    batch_size: int,
    *,
    resolution: int,
    seed: int = 0,
    prior: bool = False,
    area: bool = False,
    prior_threshold: float | None = None,
    shuffle_buffer: int = 2048,
    start_batch: int = 0,
    prefetch: int | None = AUTOTUNE,
) -> tf.data.Dataset:
    """The box-level trainers' infinite stream of global batches, read from shard files.

    Args:
        crop_files: box record files (`write_box_seg_shards`'s `crops-*`): a list, glob or folder
            spec of `resolve_tfrecord_files`.
        background_files: background record files (`backgrounds-*`).
        batch_size: the global batch (Keras splits it across replicas).
        resolution: R of the records.
        seed: seed of the shuffles and flips (backgrounds use `seed + 1`).
        prior, area: add `"prior"` `[B, R, R, 1]` / `"area"` `[B]` (the records must hold them).
        prior_threshold: add `"prior_weight"` `[B]`: 1 where the record's prior score is at
            least this, else 0 (None: no weights).
        shuffle_buffer: elements in each shuffle buffer (bounds memory: 2048 x 12 KB at R = 64).
        start_batch: skip this many batches (an exact resume: the stream is a function of the seed).
        prefetch: batches to prefetch (None: none).

    Returns:
        An infinite `tf.data.Dataset` of `{"image", "background"[, "prior"][, "area"]
        [, "prior_weight"]}` batches
        (`drop_remainder=True`), auto-shard policy FILE when both sets have >= 8 files, else DATA.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not (isinstance(start_batch, int) and start_batch >= 0):
        raise ValueError(f"start_batch: expected an integer >= 0, got {start_batch!r}")
    crop_files = resolve_tfrecord_files(crop_files)
    background_files = resolve_tfrecord_files(background_files)
    num_files = min(len(crop_files), len(background_files))
    crops = _record_stream(
        crop_files,
        parse_box_record(resolution, prior, area, prior_threshold),
        seed,
        shuffle_buffer,
        batch_size,
        num_files,
    )
    bgs = _record_stream(
        background_files,
        parse_background_record(resolution),
        seed + 1,
        shuffle_buffer,
        batch_size,
        num_files,
    )
    ds = tf.data.Dataset.zip(crops, bgs).map(lambda c, b: {**c, "background": b})
    return batch_stream(ds, batch_size, start_batch, prefetch, num_files)


def batch_stream(
    ds, batch_size: int, start_batch: int, prefetch, num_files: int
) -> tf.data.Dataset:
    """An infinite stream of batches (of `batch_size`) read from `num_files` files, from batch
    `start_batch` on, prefetched, auto-shard policy FILE with >= 8 files (else DATA),
    deterministic."""
    if start_batch:
        ds = ds.skip(start_batch)
    if prefetch is not None:
        ds = ds.prefetch(prefetch)
    return _with_shard_policy(ds, _policy_for(num_files))
