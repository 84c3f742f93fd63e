"""Readers: one function per source, all returning a `tf.data.Dataset` of the same decoded element.

Element (uncropped; see `indep_seg.data.decode`):

    {"image": uint8 [H, W, 3], "mask": uint8 [H, W, 1] (0/1; zeros when has_mask is False),
     "has_mask": bool, "boxes": float32 [K, 4] pixel x0, y0, x1, y1, "source_id": string}

`boxes` come from `boxes.csv` rows, else from the mask's tight box, else the whole image.

Auto-shard policy under `tf.distribute` (set on purpose, kept by every later transformation):
- `FILE` for TFRecord globs (and tfds splits) of at least `MIN_FILES_FOR_FILE_SHARDING` (8)
  files: each worker reads whole shards, no worker reads and drops the others' records;
- `DATA` otherwise (image folders, synthetic data, a few TFRecord files): every worker
  reads the (small) dataset and keeps every N-th element, which works for any number of
  workers, where `FILE` with fewer files than workers fails.
"""

from __future__ import annotations

import glob as _glob
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from indep_seg.data import decode as _decode
from indep_seg.data import example as _example
from indep_seg.data.files import DataError, find_folder_layout, plan_folder

__all__ = [
    "read_image_folder",
    "read_tfrecords",
    "read_synthetic",
    "read_tfds",
    "read_dataset",
    "resolve_tfrecord_files",
    "MIN_FILES_FOR_FILE_SHARDING",
]

MIN_FILES_FOR_FILE_SHARDING = 8
AUTOTUNE = tf.data.AUTOTUNE


def _with_shard_policy(ds, policy):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    options.deterministic = True
    return ds.with_options(options)


def _policy_for(num_files: int):
    if num_files >= MIN_FILES_FOR_FILE_SHARDING:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


# ----------------------------------------------------------------------------- folders


def read_image_folder(images_dir, boxes_csv=None, masks_dir=None, *, full_check: bool = False):
    """Image files (+ optional `boxes.csv` and masks folder) as a dataset of decoded elements.

    Every file is checked before the dataset is built (header, truncation marker, mask
    aspect ratio, boxes inside the image; `full_check=True` also decodes every file), and the
    first problem raises `DataError` naming the file (and CSV row). A photo whose mask has
    another size (same aspect ratio within 2 %) is resized to the mask's size and its CSV
    boxes are scaled with it (../shared/datasets/README.md).

    Args:
        images_dir: folder of .jpg/.jpeg/.png/.bmp/.gif files.
        boxes_csv: optional CSV of `filename,x0,y0,x1,y1` rows (pixels of the photo file). With
            it, photos that have neither a row nor a mask are left out (a UserWarning counts
            them; none left at all is a DataError).
        masks_dir: optional folder of masks matched by file stem (8-bit masks are thresholded
            at 127, 0/1 masks taken as class ids).
    """
    plan = plan_folder(images_dir, masks_dir, boxes_csv, full_check=full_check)
    plan.raise_if_problems()
    items = plan.items
    if plan.unboxed:
        what = (
            f"{len(plan.unboxed)} photo(s) of {images_dir} have no row in {boxes_csv} (and no mask)"
        )
        if not items:
            raise DataError(f"{boxes_csv}: {what}: no photo to read; add a row per object")
        warnings.warn(f"{what}: they are not used", UserWarning, stacklevel=2)
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([it.boxes for it in items]).reshape(-1, 4)
        if items
        else np.zeros([0, 4], np.float32),
        [len(it.boxes) for it in items],
    )
    table = {
        "image_path": [it.image_path for it in items],
        "mask_path": [it.mask_path or "" for it in items],
        "height": np.array([it.height for it in items], np.int32),
        "width": np.array([it.width for it in items], np.int32),
        "boxes": boxes,
        "source_id": [it.source_id for it in items],
    }

    def load(row):
        contents = tf.io.read_file(row["image_path"])
        has_mask = tf.strings.length(row["mask_path"]) > 0

        def with_mask():
            mask = _decode.decode_mask(tf.io.read_file(row["mask_path"]))
            image = _decode.decode_photo_to_size(contents, row["height"], row["width"])
            return image, mask

        def without_mask():
            image = _decode.decode_photo(contents)
            return image, tf.zeros(tf.concat([tf.shape(image)[:2], [1]], 0), tf.uint8)

        image, mask = tf.cond(has_mask, with_mask, without_mask)
        image.set_shape([None, None, 3])
        mask.set_shape([None, None, 1])
        return {
            "image": image,
            "mask": mask,
            "has_mask": has_mask,
            "boxes": _decode.finalize_boxes(row["boxes"], mask, has_mask),
            "source_id": row["source_id"],
        }

    ds = tf.data.Dataset.from_tensor_slices(table).map(
        load, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    return _with_shard_policy(ds, tf.data.experimental.AutoShardPolicy.DATA)


# ----------------------------------------------------------------------------- TFRecords

_SHARD_RE = re.compile(r"^(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")


def resolve_tfrecord_files(pattern) -> list[str]:
    """Files of a TFRecord spec: a glob, a comma-separated list, a list, or a folder of
    `*.tfrecord`.

    Raises `DataError` when nothing matches or when a `PREFIX-i-of-N` shard set is incomplete.
    """
    if isinstance(pattern, (list, tuple)):
        patterns = [os.fspath(p) for p in pattern]
    else:
        patterns = [p for p in os.fspath(pattern).split(",") if p]
    files = []
    for p in patterns:
        if os.path.isdir(p):
            p = os.path.join(p, "*.tfrecord")
        matched = (
            sorted(tf.io.gfile.glob(p))
            if any(c in p for c in "*?[")
            else ([p] if tf.io.gfile.exists(p) else [])
        )
        if not matched:
            raise DataError(f"{p}: no TFRecord files match")
        files.extend(matched)
    files = sorted(set(files))
    sets = {}
    for f in files:
        m = _SHARD_RE.match(f)
        if m:
            sets.setdefault((m["prefix"], int(m["count"])), set()).add(int(m["index"]))
    for (prefix, count), indices in sets.items():
        if len(indices) != count:
            missing = sorted(set(range(count)) - indices)
            raise DataError(
                f"{prefix}-*-of-{count:05d}.tfrecord: incomplete shard set, {len(indices)} of "
                f"{count} "
                f"present (missing {prefix}-{missing[0]:05d}-of-{count:05d}.tfrecord"
                f"{' and more' if len(missing) > 1 else ''})"
            )
    return files


def read_tfrecords(pattern, *, shuffle_files: bool = False, seed: int | None = None):
    """Sharded TFRecords written by `tfrecords_tools` (tensorflow/models keys) as decoded elements.

    Shards are interleaved in parallel (deterministic order), records parsed and decoded with
    `num_parallel_calls=AUTOTUNE`. Auto-shard policy: FILE with >= 8 files, else DATA.
    """
    files = resolve_tfrecord_files(pattern)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    ds = ds.map(_example.decode_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _with_shard_policy(ds, _policy_for(len(files)))


# ----------------------------------------------------------------------------- synthetic


def read_synthetic(num_images: int = 1000, seed: int = 0, size: int = 128):
    """The embedded synthetic dataset (`indep_seg.data.synthetic`) as decoded elements."""
    from indep_seg.data import synthetic

    return synthetic.read_synthetic(num_images=num_images, seed=seed, size=size)


# ----------------------------------------------------------------------------- tfds


def _tfds_adapter(features: dict):
    """A function mapping one tfds example (dict) to the decoded element."""
    keys = set(features.keys())
    mask_key = next((k for k in ("mask", "segmentation_mask") if k in keys), None)
    box_key = None
    if (
        "objects" in keys
        and hasattr(features["objects"], "keys")
        and "bbox" in features["objects"].keys()
    ):
        box_key = ("objects", "bbox")
    elif "bbox" in keys:
        box_key = ("bbox",)
    id_key = next(
        (k for k in ("source_id", "image/filename", "file_name", "filename", "id") if k in keys),
        None,
    )

    def adapt(ex):
        image = ex["image"]
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        image = tf.cast(image, tf.uint8)
        image.set_shape([None, None, 3])
        hw = tf.shape(image)[:2]
        if mask_key is not None:
            raw = tf.cast(ex[mask_key], tf.uint8)
            if raw.shape.rank == 2:
                raw = raw[..., tf.newaxis]
            if mask_key == "segmentation_mask":
                mask = tf.cast(tf.equal(raw, 1), tf.uint8)  # oxford_iiit_pet trimap: 1 = pet
            else:
                mask = _decode.binarize_mask(raw)
            has_mask = tf.constant(True)
        else:
            mask = tf.zeros(tf.concat([hw, [1]], 0), tf.uint8)
            has_mask = tf.constant(False)
        mask.set_shape([None, None, 1])
        if box_key is not None:
            b = ex
            for k in box_key:
                b = b[k]
            b = tf.reshape(
                tf.cast(b, tf.float32), [-1, 4]
            )  # tfds: normalised ymin, xmin, ymax, xmax
            h = tf.cast(hw[0], tf.float32)
            w = tf.cast(hw[1], tf.float32)
            boxes = tf.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=-1)
        else:
            boxes = tf.zeros([0, 4], tf.float32)
        sid = (
            tf.strings.as_string(ex[id_key])
            if id_key is not None and ex[id_key].dtype != tf.string
            else (ex[id_key] if id_key is not None else tf.constant(""))
        )
        return {
            "image": image,
            "mask": mask,
            "has_mask": has_mask,
            "boxes": _decode.finalize_boxes(boxes, mask, has_mask),
            "source_id": sid,
        }

    return adapt


def read_tfds(name: str, split: str = "train", data_dir=None, manual_dir=None):
    """A tfds dataset as decoded elements. Nothing is downloaded.

    Maps `image`, a mask (`mask`, or `segmentation_mask` whose class 1 is the foreground, as
    in oxford_iiit_pet) and boxes (`objects/bbox` or `bbox`, normalised ymin, xmin, ymax, xmax)
    to the common element. The dataset must already be prepared in `data_dir`, except for
    builders with manual data such as `image_mask_folder` (`indep_seg.data.tfds_builder`), which
    are prepared from `manual_dir` on first use.
    """
    import tensorflow_datasets as tfds

    from indep_seg.data import tfds_builder  # noqa: F401  (registers image_mask_folder)

    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a tfds dataset name, got {name!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise DataError(f"tfds:{name}: unknown or unloadable tfds dataset ({e})") from None
    prepared = tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))
    if not prepared:
        if manual_dir is None:
            raise DataError(
                f"tfds:{name}: not prepared in {builder.data_dir}; nothing is downloaded at run "
                "time: "
                "prepare it first (tfds build) or, for image_mask_folder, pass a manual_dir"
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(manual_dir),
                download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
            )
        )
    if split not in builder.info.splits and "[" not in split:
        raise DataError(
            f"tfds:{name}: no split {split!r} (has {sorted(builder.info.splits.keys())})"
        )
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(
        _tfds_adapter(builder.info.features), num_parallel_calls=AUTOTUNE, deterministic=True
    )
    try:
        num_files = builder.info.splits[split].num_shards
    except Exception:
        num_files = 1
    return _with_shard_policy(ds, _policy_for(num_files))


# ----------------------------------------------------------------------------- dispatcher


def read_dataset(
    spec,
    *,
    seed: int = 0,
    synthetic_size: int = 128,
    tfds_data_dir=None,
    tfds_manual_dir=None,
    full_check: bool = False,
):
    """The one entry point behind every trainer's `--data`.

    `spec` is one of:
    - `synthetic` or `synthetic:N`: the embedded dataset, N images (default 1000) of side
      `synthetic_size`, dataset seed `seed`;
    - `tfds:NAME` or `tfds:NAME:SPLIT` (default split `train`);
    - a TFRecord file, glob (`data/train-*.tfrecord`), comma-separated list, or a folder of
      `*.tfrecord` files;
    - a dataset folder: images directly inside (with an optional `boxes.csv`), or `images/`
      (or `rgb/`) with optional `masks/` (or `figure_ground/`) and `boxes.csv` (e.g. the folder
      written by `write_synthetic_dataset`, or ../shared/datasets/weizmann_horse).
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(
            f"spec: expected a folder, a TFRecord glob, 'tfds:NAME[:split]' or "
            f"'synthetic[:N]', got {spec!r}"
        )
    spec = os.fspath(spec)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        n = 1000
        if ":" in spec:
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                raise ValueError(
                    f"spec: expected 'synthetic:N' with an integer N, got {spec!r}"
                ) from None
        return read_synthetic(num_images=n, seed=seed, size=synthetic_size)
    if spec.startswith("tfds:"):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError(f"spec: expected 'tfds:NAME' or 'tfds:NAME:SPLIT', got {spec!r}")
        return read_tfds(
            parts[1],
            parts[2] if len(parts) == 3 else "train",
            data_dir=tfds_data_dir,
            manual_dir=tfds_manual_dir,
        )
    if os.path.isdir(spec):
        if _glob.glob(os.path.join(spec, "*.tfrecord")):
            return read_tfrecords(spec)
        images_dir, masks_dir, boxes_csv = find_folder_layout(spec)
        return read_image_folder(
            images_dir, boxes_csv=boxes_csv, masks_dir=masks_dir, full_check=full_check
        )
    if (
        any(c in spec for c in "*?[,")
        or spec.endswith((".tfrecord", ".tfrecords"))
        or os.path.isfile(spec)
    ):
        return read_tfrecords(spec)
    raise DataError(
        f"{spec}: no such folder or file (expected a folder, a TFRecord glob, "
        "'tfds:NAME[:split]' or 'synthetic[:N]')"
    )
