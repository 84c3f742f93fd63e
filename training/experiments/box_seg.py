"""`box_seg` / `box_seg_paper`: box-level foreground segmentation (Dai et al. 2019, application 1).

One `train_fn` runs both phases of the paper:
1. adversarial training of the UNet (`ForegroundSegGAN`, eq. 6-7) on the box crops, with
   scale-matched backgrounds from outside the boxes (or a background folder);
2. data distillation (`Distiller`, eq. 8) of the chosen adversarial snapshot into a student.
The adversarial snapshot is chosen by an UNSUPERVISED criterion (the most confident masks among
the stable, non-collapsed snapshots, on a fixed probe set of crops; `SnapshotSelector`): ground
truth is never used. The run ends with
`Segmenter(student).save(model_dir / "segmenter")`.

Data (`--data`): an image folder with `boxes.csv` (`filename,x0,y0,x1,y1`, several rows per file
allowed; names relative to the folder or to its `images/` subfolder), none (the embedded synthetic
dataset of `indep_seg.data.synthetic` is written into the run directory), an image folder with masks
(`--override masks=MASK_DIR` or `ctx.extra["masks"]`; boxes
are taken from the masks, the pixel labels are never used), or TFRecords read through
`indep_seg.data.read_dataset` when the data module provides it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from indep_seg.box_crop import box_window, crop_to_window, mask_box
from indep_seg.data.backgrounds import folder_backgrounds, scale_matched_backgrounds
from indep_seg.data.files import DataError
from indep_seg.imageio import read_image, read_mask
from indep_seg.models.distiller import Distiller
from indep_seg.models.foreground_seg_gan import ForegroundSegGAN
from indep_seg.networks.sn_discriminator import SNDiscriminator
from indep_seg.networks.unet import UNet
from indep_seg.optimizers import FusedAdam
from indep_seg.presets import (
    build_box_seg_discriminator,
    build_box_seg_unet,
    effective_area_a,
    preset_options,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
UNBOUNDED_STEPS = 10**9  # a time budget alone bounds the run
#: Seconds per photo of the end-of-run `evidence_report` (a forward pass and the colour
#: histograms): 200 photos took 48 s after a 30-minute horse run's budget on this 2-core machine
#: (session 15), which the budget now leaves for it.
EVIDENCE_SECONDS_PER_IMAGE = 0.25


@dataclasses.dataclass
class BoxSegConfig:
    """Options of the box-level experiment (the `box_seg` preset; see `box_seg_paper`)."""

    resolution: int = 64
    margin: float = 0.0  # crop = box grown by margin x size on each side (paper: 0)
    unet: str = "small"  # UNET_PRESETS name
    unet_filters: str = ""  # "32,64,128,256,256" overrides the preset's widths
    upsampling: str = "conv_bilinear"  # "transpose" (paper), "bilinear", "conv_bilinear"
    bn_momentum: float = 0.9
    bn_synchronized: bool = (
        False  # UNet BN over the global batch under tf.distribute (box_seg_tiny: True)
    )
    bias_before_bn: bool = True  # box_seg_tiny: False (see UNet)
    discriminator: str = "small"  # SN_DISCRIMINATOR_PRESETS name
    d_head: str = "dense"  # "conv" (Table 1) or "dense"
    d_downsample: int = 2  # D judges 2x average-pooled images (real and fake alike)
    area_lambda: float = 1000.0  # Table 3
    area_a: float = 0.35  # a for a crop equal to the box; scaled by 1/(1+2 margin)^2
    area_mode: str = "two_sided"  # eq. 7 as printed, or "above"
    box_prior_weight: float = 0.5  # box tightness prior (BoxInst), not in the paper
    pairwise_weight: float = 1.0  # colour-affinity smoothness prior (BoxInst), not in the paper
    adversarial_weight: float = 1.0  # 0: ablation without the adversarial term
    prior: str = "grabcut"  # per-image box prior (indep_seg.box_prior), "none": the paper
    prior_weight: float = 1.0  # weight of the prior consistency term in eq. (7)
    area_from_prior: bool = True  # a of eq. (7) per image: the prior's share of its box
    # share of the boxes whose priors anchor the network: those with the highest prior_score
    # (the collection's own quantile); the rest weigh 0 in the consistency term. 1: every prior.
    # 0.5 was tried on the tuning halves (session 16, docs/box_seg_notes.md): better where the
    # prior is unsure on the horses, worse on ECSSD's many kinds of object; not the default
    prior_confident_share: float = 1.0
    area_clip: str = "0.1,0.95"  # range of the per-image a
    batch_size: int = 32
    d_learning_rate: float = 6e-4  # paper: 2e-4 (with 4e-4 for G the small D stayed near chance)
    g_learning_rate: float = 2e-4  # paper: 4e-4
    steps: int = 3000  # adversarial + distillation steps (when --steps is not given)
    adversarial_fraction: float = 0.8  # share of the steps / time budget for phase 1
    distill_learning_rate: float = 1e-4
    distill_label: str = "carve"  # label of a composite: "carve" = the teacher's mask of the
    # photo that was carved, or "composite" = teacher(composite)
    distill_real_fraction: float = 0.0
    distill_init: str = "teacher"  # student starts from "teacher" weights or "scratch"
    background: str = "scale_matched"  # or a folder of background images
    background_variants: int = 2
    snapshot_every: int = 100
    probe_images: int = 96
    masks: str = ""  # mask folder: boxes from masks
    max_images: int = 0  # 0 = all
    log_every: int = 50
    evidence_images: int = 200  # photos of the end-of-run unsupervised report (0: none)


def box_seg_config() -> BoxSegConfig:
    """The `box_seg` preset: the core's model options (`indep_seg.presets`), this class's defaults
    for the rest of the run."""
    return BoxSegConfig(**preset_options("box_seg"))


def paper_config() -> BoxSegConfig:
    """Table 1 networks and Table 3 hyperparameters (128x128, lambda 1000, a 0.25, crop = box):
    the core's `box_seg_paper` options (`indep_seg.presets`) and the paper's run settings."""
    return BoxSegConfig(
        **{
            **preset_options("box_seg_paper"),
            "distill_label": "composite",
            "distill_learning_rate": 2e-4,
            "steps": 20000,
            "snapshot_every": 500,
        }
    )


# ------------------------------------------------------------------------------------- data
class BoxSegDataError(DataError):
    """Bad user data: the message names the file (and row)."""


def _read_photo(path: Path) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` (`imageio.read_image`); an unreadable file is a BoxSegDataError."""
    try:
        return read_image(path)
    except ValueError as e:
        reason = str(e).removeprefix(f"{path}: cannot read the image ")
        raise BoxSegDataError(f"{path}: cannot read image {reason}") from None


def _read_box_mask(path: Path) -> np.ndarray:
    """Boolean `[H, W]` mask, grey > 127 (`imageio.read_mask`); unreadable: BoxSegDataError."""
    try:
        return read_mask(path)
    except ValueError as e:
        raise BoxSegDataError(str(e)) from None


BOXES_CSV_HELP = (
    "boxes.csv rows are filename,x0,y0,x1,y1 in pixels of the photo (x1, y1 exclusive; "
    "filename as in the folder, e.g. cat1.jpg,40,30,210,180; several rows per photo "
    "for several objects)"
)


def _describe_data_spec(spec: str) -> tuple[str, str]:
    """`(layout, where the boxes come from)` of a `read_dataset` spec, for the train log."""
    from indep_seg.data.files import find_folder_layout

    if spec == "synthetic" or spec.startswith("synthetic:"):
        return "embedded synthetic dataset", "the generator"
    if spec.startswith("tfds:"):
        return "TensorFlow Datasets " + spec[5:], "the dataset's boxes (or its masks)"
    if os.path.isdir(spec) and not list(Path(spec).glob("*.tfrecord")):
        images_dir, masks_dir, boxes_csv = find_folder_layout(spec)
        layout = (
            "flat folder of photos"
            if os.path.samefile(images_dir, spec)
            else f"{Path(images_dir).name}/ photos"
        ) + (f" + {Path(masks_dir).name}/ masks" if masks_dir else "")
        return layout, (boxes_csv if boxes_csv else f"the masks in {masks_dir}")
    return "TFRecords", "the records' boxes (or their masks)"


def _load_box_data_via_data_layer(spec: str, max_images: int = 0, log=None):
    """`(name, uint8 image, box)` items from `indep_seg.data.read_dataset(spec)` (boxes only)."""
    return list(_iter_box_data_via_data_layer(spec, max_images, log))


def _data_layer_sources(spec: str) -> tuple[str, str, bool, list]:
    """`(layout, box source, is TFRecords, sources)` of a data-layer spec; TFRecords are listed
    file by file, so that a bad record is reported with its file."""
    from indep_seg.data import DataError
    from indep_seg.data.readers import resolve_tfrecord_files

    try:
        layout, source = _describe_data_spec(spec)
        tfrecords = layout == "TFRecords" and (
            os.path.exists(spec) or any(c in spec for c in "*?[,")
        )
        return layout, source, tfrecords, resolve_tfrecord_files(spec) if tfrecords else [spec]
    except (DataError, ValueError) as e:
        raise BoxSegDataError(f"--data {spec}: {e}") from None


def _read_data_layer_source(source_spec: str, tfrecords: bool) -> tf.data.Dataset:
    """The decoded elements of one source: a TFRecord file, or any `read_dataset` spec."""
    from indep_seg.data import read_dataset
    from indep_seg.data.example import decode_example

    if not tfrecords:
        return read_dataset(source_spec)
    return tf.data.TFRecordDataset(source_spec).map(
        decode_example, num_parallel_calls=tf.data.AUTOTUNE
    )


def _data_layer_error(source_spec: str, e: Exception) -> BoxSegDataError:
    """The BoxSegDataError, naming the file, for an error raised while reading `source_spec`."""
    if isinstance(e, tf.errors.DataLossError):
        return BoxSegDataError(
            f"{source_spec}: truncated or corrupt TFRecord file ({e.message.strip()[:200]})"
        )
    if isinstance(e, tf.errors.InvalidArgumentError):
        msg = e.message.strip()
        if "is required but could not be found" in msg:
            msg = (
                f"a record lacks a feature box_seg needs ({msg.split(' is required')[0]}; "
                "records are read with the keys of `indep-seg tfrecords`: image/encoded, "
                "image/height, image/width, image/object/bbox/* or a mask)"
            )
        return BoxSegDataError(f"{source_spec}: {msg[:400]}")
    return BoxSegDataError(f"--data {source_spec}: {e}")


def _iter_box_data_via_data_layer(spec: str, max_images: int = 0, log=None):
    """`_load_box_data_via_data_layer` one item at a time (streamed: memory holds one photo)."""
    from indep_seg.data import DataError

    layout, source, tfrecords, sources = _data_layer_sources(spec)
    count, photos = 0, 0
    for source_spec in sources:
        try:
            it = _read_data_layer_source(source_spec, tfrecords).as_numpy_iterator()
            while not (max_images and count >= max_images):
                element = next(it, None)
                if element is None:
                    break
                name = element["source_id"].decode("utf-8", "replace")
                photos += 1
                for k, box in enumerate(element["boxes"]):
                    if max_images and count >= max_images:
                        break
                    count += 1
                    yield (f"{name}#{k}", element["image"], [float(v) for v in box])
        except (DataError, ValueError, tf.errors.OpError) as e:
            raise _data_layer_error(source_spec, e) from None
    if not count:
        raise BoxSegDataError(f"--data: no usable image/box pair in {spec}")
    if log is not None:
        log(f"--data {spec}: layout {layout}; {photos} photos, {count} boxes from {source}")


def load_box_data(data, masks=None, max_images=0, skip_bad=False, log=print):
    """Reads photos and boxes: returns a list of `(name, uint8 image [H, W, 3], box [4])`.

    The whole data set in memory: the trainer streams `iter_box_data` instead.
    """
    return list(iter_box_data(data, masks, max_images, skip_bad, log))


def _is_flat_csv_folder(folder: Path) -> bool:
    """A folder of photos holding its own `boxes.csv` (no `images/` subfolder)."""
    from indep_seg.data.files import IMAGE_DIR_NAMES

    return (
        folder.is_dir()
        and (folder / "boxes.csv").is_file()
        and not any((folder / n).is_dir() for n in IMAGE_DIR_NAMES)
    )


def _refuse_photos_without_boxes(folder: Path) -> None:
    """A BoxSegDataError for a folder of photos with no boxes.csv, no masks and no TFRecords."""
    from indep_seg.data.files import MASK_DIR_NAMES, find_folder_layout

    if (
        not folder.is_dir()
        or list(folder.glob("*.tfrecord"))
        or any((folder / n).is_dir() for n in MASK_DIR_NAMES)
        or find_folder_layout(folder)[2] is not None
    ):
        return
    images_dir = find_folder_layout(folder)[0]
    photos = [p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    raise BoxSegDataError(
        f"--data {folder}: no boxes: box_seg needs a box around each object, and {images_dir} "
        f"holds {len(photos)} photo(s) but no boxes.csv. Write {folder / 'boxes.csv'} "
        f"({BOXES_CSV_HELP}), or pass --masks MASK_DIR (one mask per photo with the same file "
        "stem; only their boxes are used)"
    )


class _ItemProblems:
    """A bad item of a folder: an error, or with `skip_bad` a logged warning and a count."""

    def __init__(self, skip_bad: bool, log):
        self.skip_bad, self.log, self.count = skip_bad, log, 0

    def __call__(self, msg: str) -> None:
        if not self.skip_bad:
            raise BoxSegDataError(msg)
        self.count += 1
        self.log(f"warning: {msg} (skipped)")


def _mask_item(photo: Path, mask_path: Path, problem):
    """`(photo name, image, box of its mask)`, the photo resized to its mask's size; None (after
    `problem`) when either file is unreadable, the aspect ratios differ or the mask is empty."""
    from PIL import Image

    try:
        image = _read_photo(photo)
        mask = _read_box_mask(mask_path)
    except BoxSegDataError as e:
        problem(str(e))
        return None
    if mask.shape != image.shape[:2]:
        ra, rb = mask.shape[1] / mask.shape[0], image.shape[1] / image.shape[0]
        if abs(ra - rb) > 0.02 * max(ra, rb):
            problem(
                f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} does "
                f"not match photo {photo.name} {image.shape[1]}x{image.shape[0]}"
            )
            return None
        image = np.asarray(
            Image.fromarray(image).resize((mask.shape[1], mask.shape[0]), Image.BILINEAR)
        )
    box = mask_box(mask)
    if box is None:
        problem(f"{mask_path}: empty mask, no box")
        return None
    return (photo.name, image, box)


def _iter_mask_items(data: Path, masks, max_images: int, problem):
    """The photos of `data` with a mask of the same stem in `masks`, one box (the mask's) each."""
    masks = Path(masks)
    if not masks.is_dir():
        raise BoxSegDataError(f"--masks: {masks} is not a directory")
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    count = 0
    for photo in sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        if max_images and count >= max_images:
            break
        if photo.stem not in by_stem:
            problem(f"{photo}: no mask named {photo.stem}.* in {masks}")
            continue
        item = _mask_item(photo, by_stem[photo.stem], problem)
        if item is not None:
            count += 1
            yield item


def _csv_row_numbers(where: str, row: list, problem):
    """The four numbers `[x0, y0, x1, y1]` of a boxes.csv row, or None (after `problem`)."""
    if len(row) != 5:
        problem(f"{where}: expected 5 fields filename,x0,y0,x1,y1, got {len(row)}")
        return None
    try:
        return [float(v) for v in row[1:]]
    except ValueError:
        problem(f"{where}: box values must be numbers, got {row[1:]}")
        return None


def _box_fits(where: str, box: list, path: Path, image: np.ndarray, problem) -> bool:
    """Whether a row's box is non-empty and inside its photo (if not: `problem`, False)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:
        problem(f"{where}: empty box {box} (expected x1 > x0 and y1 > y0)")
        return False
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        problem(
            f"{where}: box {box} leaves the image {path.name} ({w}x{h}): boxes are "
            f"pixels of the photo with 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}; "
            "fix or remove the row"
        )
        return False
    return True


def _csv_row_photo(data: Path, where: str, filename: str, cache: dict, problem):
    """`(path, image)` of a boxes.csv row's photo (in `data` or `data/images`), or None (after
    `problem`); `cache` keeps the last photo read (rows of one photo usually follow each other)."""
    path = data / filename
    if not path.is_file() and (data / "images" / filename).is_file():
        path = data / "images" / filename  # indep_seg.data.synthetic layout
    if not path.is_file():
        problem(f"{where}: image {path} not found")
        return None
    if path not in cache:
        cache.clear()
        try:
            cache[path] = _read_photo(path)
        except BoxSegDataError as e:
            problem(f"{where}: {e}")
            return None
    return path, cache[path]


def _iter_csv_items(data: Path, max_images: int, problem):
    """`(photo name#row, image, box)` for each row of `data/boxes.csv`."""
    csv_path = data / "boxes.csv"
    if not csv_path.is_file():
        raise BoxSegDataError(
            f"--data {data}: no boxes.csv ({BOXES_CSV_HELP}); "
            "or pass --masks MASK_DIR to take the boxes from masks"
        )
    cache, count = {}, 0
    with open(csv_path, newline="") as fh:
        for row_no, row in enumerate(csv.reader(fh), start=1):
            if max_images and count >= max_images:
                break
            if not row or (row_no == 1 and row[0].strip().lower() == "filename"):
                continue
            where = f"{csv_path} row {row_no}"
            box = _csv_row_numbers(where, row, problem)
            if box is None:
                continue
            photo = _csv_row_photo(data, where, row[0].strip(), cache, problem)
            if photo is None or not _box_fits(where, box, *photo, problem):
                continue
            count += 1
            yield (f"{photo[0].name}#{row_no}", photo[1], box)


def _summarise_folder_items(data: Path, masks, names: list, bad: int, log) -> None:
    """Log what was read from a folder (or raise when nothing usable was)."""
    if not names:
        raise BoxSegDataError(
            f"--data: no usable image/box pair in {data}"
            + (f" ({bad} bad item(s) skipped)" if bad else "")
        )
    if bad:
        log(f"{bad} bad item(s) skipped")
    used = {n.rsplit("#", 1)[0] for n in names}
    if masks:
        log(
            f"--data {data}: layout photos + --masks {masks}; {len(used)} photos, "
            f"{len(names)} boxes from the masks (one box per mask; the mask pixels are never used)"
        )
        return
    unused = len({p.name for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS} - used)
    log(
        f"--data {data}: layout flat folder of photos + boxes.csv; {len(used)} photos, "
        f"{len(names)} boxes from {data / 'boxes.csv'}"
        + (f" ({unused} photo(s) without a row are not used)" if unused else "")
    )


def iter_box_data(data, masks=None, max_images=0, skip_bad=False, log=print):
    """Photos and boxes one `(name, uint8 image [H, W, 3], box [4])` at a time (memory: one photo).

    `data` is an image folder with `boxes.csv` (one row per box), or an image folder together
    with `masks` (a folder with one mask per photo, same stem; boxes from the masks, a photo is
    resized to its mask's size). Errors name the file and row; with `skip_bad` they are
    warnings and the item is skipped.

    Any other `--data` spec of `indep_seg.data.read_dataset` (a dataset folder with `images/`
    and `boxes.csv` or `masks/`, TFRecords from `indep-seg tfrecords`, `tfds:NAME`,
    `synthetic:N`) goes through the data layer; its masks, if any, are never used here.
    """
    folder = Path(str(data))
    if not masks and not _is_flat_csv_folder(folder):
        _refuse_photos_without_boxes(folder)
        yield from _iter_box_data_via_data_layer(str(data), max_images, log=log)
        return
    data = Path(data)
    if not data.is_dir():
        raise BoxSegDataError(f"--data: {data} is not a directory")
    problem = _ItemProblems(skip_bad, log)
    items = (
        _iter_mask_items(data, masks, max_images, problem)
        if masks
        else _iter_csv_items(data, max_images, problem)
    )
    names = []  # item names (for the summary), not the images
    for item in items:
        names.append(item[0])
        yield item
    _summarise_folder_items(data, masks, names, problem.count, log)


def _group_by_photo(items):
    """`(image, [boxes])` for each run of consecutive items that share one photo (the rows of a
    photo in boxes.csv, the boxes of a record), in order."""
    groups = []
    for _, image, box in items:
        if groups and groups[-1][0] is image:
            groups[-1][1].append(box)
        else:
            groups.append((image, [box]))
    return groups


@functools.lru_cache(maxsize=8)
def _photo_crop_fn(resolution: int, margin: float):
    """The experiment's crop rule (`box_window(box, margin)` + `crop_to_window`) compiled for
    one photo `[H, W, 3]` in [0, 1] and its boxes `[K, 4]`: one graph call per photo instead of a
    hundred eager TensorFlow ops per box (the same floats as the eager ops)."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
        ]
    )
    def crop(image, boxes):
        images = tf.repeat(image[tf.newaxis], tf.shape(boxes)[0], axis=0)
        return crop_to_window(images, box_window(boxes, margin, False), resolution)

    return crop


def make_crops(items, resolution, margin):
    """Box crops `[N, R, R, 3]` float32 with the experiment's crop rule (`box_window`)."""
    crop = _photo_crop_fn(int(resolution), float(margin))
    out = [
        crop(np.asarray(image, np.float32) / 255.0, np.asarray(boxes, np.float32)).numpy()
        for image, boxes in _group_by_photo(items)
    ]
    return np.concatenate(out).astype(np.float32)


def make_backgrounds(items, cfg: BoxSegConfig, seed=0):
    """Backgrounds `[K, R, R, 3]`: scale-matched ones cut outside the items' boxes, or crops of
    the `cfg.background` folder."""
    if cfg.background == "scale_matched":
        bgs, _ = scale_matched_backgrounds(
            [np.asarray(im, np.float32) / 255.0 for _, im, _ in items],
            [b for _, _, b in items],
            cfg.resolution,
            cfg.margin,
            variants=cfg.background_variants,
            seed=seed,
        )
        return bgs
    return folder_backgrounds(cfg.background, cfg.resolution, seed=seed)


def _prior_shares(priors, margin: float) -> np.ndarray:
    """Each prior's object share of its box (`[N, R, R, 1]` crops whose box is 1/(1+2 margin)^2
    of the crop)."""
    return priors.mean(axis=(1, 2, 3)) * (1.0 + 2.0 * margin) ** 2


def _prior_share_text(shares) -> str:
    """The log's summary of the priors' object shares of their boxes."""
    return (
        f"object share of its box {np.percentile(shares, 10):.2f} / {np.median(shares):.2f} / "
        f"{np.percentile(shares, 90):.2f} (10th / 50th / 90th percentile)"
    )


def make_priors(items, cfg: BoxSegConfig, log=print):
    """Per-image priors `[N, R, R, 1]`, area targets a `[N]` and the priors' label-free scores
    `[N]` (`indep_seg.box_prior.prior_score`; None, None, None without a prior)."""
    if cfg.prior == "none":
        return None, None, None
    if cfg.prior != "grabcut":
        raise ValueError(f"prior: expected 'grabcut' or 'none', got {cfg.prior!r}")
    from indep_seg.box_prior import box_priors

    t = time.time()
    priors, scores = box_priors(items, cfg.resolution, cfg.margin, return_scores=True)
    lo, hi = (float(v) for v in cfg.area_clip.split(","))
    inner = _prior_shares(priors, cfg.margin)
    areas = np.clip(inner, lo, hi) / (1.0 + 2.0 * cfg.margin) ** 2
    log(
        f"box prior (GrabCut from each box): {len(priors)} priors in {time.time() - t:.1f} s; "
        + _prior_share_text(inner)
    )
    return priors, areas.astype(np.float32), scores


def make_dataset(crops, backgrounds, batch_size, seed=0, priors=None, areas=None):
    """Infinite stream of `{"image", "background"}` batches, both shuffled and flipped at random.

    With `priors` (`[N, R, R, 1]`) the image batches also carry `"prior"` (flipped with its crop)
    and, with `areas` (`[N]`), `"area"`: the per-image a of eq. (7)."""

    def stream(array, s):
        ds = tf.data.Dataset.from_tensor_slices(array).repeat()
        # reshuffle_each_iteration=False: every iterator (preview, fit under any strategy) sees the
        # same
        # stream; the shuffle follows repeat(), so there are no epochs it could reshuffle
        ds = ds.shuffle(min(len(array), 2048), seed=s, reshuffle_each_iteration=False)
        # stateless flip keyed by (seed, position in the stream): a stateful one under a parallel
        # map
        # gives each run other flips (no exact resume, N replicas != 1 device)
        return ds.enumerate().map(
            lambda i, x: tf.image.stateless_random_flip_left_right(
                x, seed=tf.stack([tf.cast(s, tf.int64), i])
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    if priors is None:
        ds = tf.data.Dataset.zip(
            {"image": stream(crops, seed), "background": stream(backgrounds, seed + 1)}
        )
        return ds.batch(batch_size, drop_remainder=True).prefetch(4)
    stacked = np.concatenate([crops, priors], axis=-1)  # one flip for the crop and its prior
    has_area = areas is not None
    if not has_area:
        areas = np.zeros(len(crops), np.float32)
    planes = stacked.shape[-1]
    area_plane = np.broadcast_to(
        np.asarray(areas, np.float32)[:, None, None, None], stacked.shape[:3] + (1,)
    )
    stacked = np.concatenate([stacked, area_plane], axis=-1)

    def split(x, bg):
        out = {"image": x[..., :3], "prior": x[..., 3:planes], "background": bg}
        if has_area:
            out["area"] = x[0, 0, planes]
        return out

    ds = tf.data.Dataset.zip((stream(stacked, seed), stream(backgrounds, seed + 1))).map(split)
    return ds.batch(batch_size, drop_remainder=True).prefetch(4)


def _jpeg(image) -> bytes:
    """JPEG bytes (quality 95) of a uint8 photo."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _shard_settings(cfg: BoxSegConfig, data, masks, seed) -> dict:
    """What the prepared shards depend on: a run resumed with the same settings reuses them (the
    prior's method included: shards made by another version of `box_prior` are made again)."""
    from indep_seg import box_prior

    return {
        "data": str(data),
        "masks": str(masks or ""),
        "resolution": cfg.resolution,
        "margin": cfg.margin,
        "prior": cfg.prior,
        "area_clip": cfg.area_clip,
        "background": cfg.background,
        "background_variants": cfg.background_variants,
        "max_images": cfg.max_images,
        "seed": int(seed),
        "probe_images": cfg.probe_images,
        "evidence_images": cfg.evidence_images,
        "prior_method": {
            "candidates": [list(c) for c in box_prior.PRIOR_CANDIDATES],
            "tightness_power": box_prior.PRIOR_TIGHTNESS_POWER,
            "small_mask_meet": box_prior.SMALL_MASK_MEET,
            "core_seed_scale": box_prior.CORE_SEED_SCALE,
            "low_range": box_prior.LOW_RANGE,
            "clean": box_prior.PRIOR_CLEAN,
            "clean_tightness_slack": box_prior.CLEAN_TIGHTNESS_SLACK,
            "clean_scale": box_prior.CLEAN_SCALE,
            "clean_photo_detail": box_prior.CLEAN_PHOTO_DETAIL,
        },
        "version": 2,  # 2: records hold the prior's score
    }


def _chunk_backgrounds(batch, cfg: BoxSegConfig, seed: int, index: int, empty):
    """`(backgrounds of the chunk number `index`, DataError or None)`: a background folder gives
    its crops with the first chunk only; a chunk whose photos have no room for a scale-matched
    background gives `empty` and the error (a problem only when no chunk has any)."""
    if cfg.background != "scale_matched":
        return (make_backgrounds(batch, cfg, seed=seed) if index == 0 else empty), None
    try:
        return make_backgrounds(batch, cfg, seed=seed + 1009 * index), None
    except DataError as e:
        return empty, e


class _BoxChunks:
    """The chunks `write_box_seg_shards` writes, computed `chunk_size` boxes at a time.

    Iterating reads the items once, offers each photo to the evidence `reservoir` (its JPEG record
    is made only when it is kept) and yields `{"crops", "source_ids", "priors", "areas",
    "backgrounds"}` per chunk (`make_crops`, `make_priors`, `make_backgrounds`); afterwards
    `shares`, `areas` and `scores` hold every box's prior share of its box, area target a and
    prior score."""

    def __init__(self, items, cfg: BoxSegConfig, seed: int, chunk_size: int, reservoir):
        self.items, self.cfg, self.seed, self.chunk_size = items, cfg, seed, chunk_size
        self.reservoir = reservoir
        self.shares: list[float] = []  # one float a box, as areas and scores
        self.areas: list[float] = []
        self.scores: list[float] = []
        self.backgrounds = 0
        self.no_background = None

    def __iter__(self):
        batch, index = [], 0
        for item in self.items:
            batch.append(item)
            self._offer_evidence(item)
            if len(batch) == self.chunk_size:
                yield self._chunk(batch, index)
                batch, index = [], index + 1
        if batch:
            yield self._chunk(batch, index)
        if not self.backgrounds and self.no_background is not None:
            raise self.no_background

    def _offer_evidence(self, item) -> None:
        if self.reservoir.count <= 0:
            return
        slot = self.reservoir.slot()
        if slot is not None:
            name, image, box = item
            self.reservoir.put(slot, (name, _jpeg(image), image.shape[:2], box))

    def _chunk(self, batch, index: int) -> dict:
        crops = make_crops(batch, self.cfg.resolution, self.cfg.margin)
        priors, areas, scores = make_priors(batch, self.cfg, log=lambda *a: None)
        bgs, missing = _chunk_backgrounds(batch, self.cfg, self.seed, index, crops[:0])
        if missing is not None:
            self.no_background = missing
        self.backgrounds += len(bgs)
        if priors is not None:
            self.shares.extend(_prior_shares(priors, self.cfg.margin).tolist())
            self.areas.extend(np.asarray(areas, np.float64).tolist())
            self.scores.extend(np.asarray(scores, np.float64).tolist())
        return {
            "crops": crops,
            "source_ids": [n for n, _, _ in batch],
            "priors": priors,
            "areas": areas,
            "prior_scores": scores,
            "backgrounds": bgs,
        }


def _write_evidence(folder: Path, records) -> str | None:
    """The kept evidence photos as `folder/evidence.tfrecord` (JPEG, the data layer's record
    format), written atomically; its name, or None when there is none."""
    from indep_seg.data.example import make_example

    if not records:
        return None
    tmp = folder / f"evidence.tfrecord.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for name, jpeg, (h, w), box in records:
            writer.write(make_example(jpeg, "jpeg", h, w, name, boxes=[box]).SerializeToString())
    os.replace(tmp, folder / "evidence.tfrecord")
    return "evidence.tfrecord"


def _area_stats(areas) -> dict:
    """The manifest's summary of the area targets a (empty without priors)."""
    if not areas:
        return {}
    return {"area_min": min(areas), "area_max": max(areas), "area_mean": float(np.mean(areas))}


def _score_stats(scores) -> dict:
    """The manifest's percentiles 0, 1, ..., 100 of the priors' scores (empty without priors):
    `prior_score_threshold` reads the collection's quantiles from them."""
    if not scores:
        return {}
    return {"prior_score_percentiles": np.percentile(scores, np.arange(101)).tolist()}


def prior_score_threshold(manifest, confident_share: float) -> float | None:
    """The prior score at and above which a box's prior anchors the network: the collection's
    `1 - confident_share` quantile (`_score_stats`), so that `confident_share` of the boxes are
    kept. None (every prior weighs 1) at a share of 1 or without scores."""
    if not 0.0 < confident_share <= 1.0:
        raise ValueError(
            f"prior_confident_share: expected a share in (0, 1], got {confident_share}"
        )
    percentiles = manifest.get("prior_score_percentiles")
    if confident_share >= 1.0 or not percentiles:
        return None
    return float(np.interp(100.0 * (1.0 - confident_share), np.arange(101), percentiles))


def prepare_box_shards(
    data,
    cfg: BoxSegConfig,
    directory,
    *,
    masks=None,
    skip_bad=False,
    seed=0,
    chunk_size=32,
    records_per_shard=None,
    log=print,
):
    """The run's box shards (`indep_seg.data.box_seg_stream`), written once from `data`, streamed.

    Photos are read one at a time (`iter_box_data`: folders, TFRecords, tfds, synthetic); every
    `chunk_size` boxes the crops (`make_crops`), priors and areas (`make_priors`) and backgrounds
    (`make_backgrounds`) are computed and appended to the shards, so memory holds one chunk, not the
    data set. A uniform random sample of `evidence_images` photos (seeded, reservoir sampling) is
    written beside them as `evidence.tfrecord` (JPEG, the data layer's record format) for the
    end-of-run evidence report. A complete set made with the same settings is reused.

    Returns the manifest of `read_box_seg_shards` (absolute file names; `"evidence_file"` or None).
    """
    from indep_seg.data.box_seg_stream import (
        RECORDS_PER_SHARD,
        Reservoir,
        read_box_seg_shards,
        write_box_seg_shards,
    )

    directory = Path(directory)
    settings = _shard_settings(cfg, data, masks, seed)
    manifest = read_box_seg_shards(directory, info=settings)
    if manifest is not None:
        log(
            f"box shards: reusing {manifest['boxes']} boxes, {manifest['backgrounds']} backgrounds "
            f"in {directory}"
        )
        return manifest
    t = time.time()
    items = iter_box_data(data, masks=masks, max_images=cfg.max_images, skip_bad=skip_bad, log=log)
    reservoir = Reservoir(cfg.evidence_images, seed)
    chunks = _BoxChunks(items, cfg, seed, chunk_size, reservoir)
    manifest = write_box_seg_shards(
        chunks,
        directory,
        resolution=cfg.resolution,
        prior=cfg.prior != "none",
        area=cfg.prior != "none",
        records_per_shard=records_per_shard or RECORDS_PER_SHARD,
        info=settings,
        finish=lambda folder: {
            "evidence_file": _write_evidence(folder, reservoir.items),
            **_area_stats(chunks.areas),
            **_score_stats(chunks.scores),
        },
    )
    if chunks.shares:
        log(
            f"box prior (GrabCut from each box): {len(chunks.shares)} priors; "
            + _prior_share_text(chunks.shares)
        )
    log(
        f"box shards: {manifest['boxes']} boxes, {manifest['backgrounds']} backgrounds in "
        f"{len(manifest['crop_files'])} + {len(manifest['background_files'])} file(s) in "
        f"{directory}, written in {time.time() - t:.1f} s"
    )
    return read_box_seg_shards(directory, info=settings)


def read_evidence_items(manifest) -> list:
    """The evidence photos kept by `prepare_box_shards`: `[(name, uint8 image, box)]`."""
    if not manifest.get("evidence_file"):
        return []
    path = Path(manifest["crop_files"][0]).parent / manifest["evidence_file"]
    return [(n.rsplit("#", 1)[0], im, b) for n, im, b in _iter_box_data_via_data_layer(str(path))]


# ------------------------------------------------------------------------------------ models
def build_unet(cfg: BoxSegConfig, name="unet") -> UNet:
    """The UNet of `cfg` (the builder `ForegroundSegGAN.from_preset` uses)."""
    return build_box_seg_unet(dataclasses.asdict(cfg), name=name)


def build_discriminator(cfg: BoxSegConfig) -> SNDiscriminator:
    return build_box_seg_discriminator(dataclasses.asdict(cfg))


def effective_a(cfg: BoxSegConfig) -> float:
    """a follows the crop margin: the box is 1/(1+2 margin)^2 of the crop."""
    return effective_area_a(dataclasses.asdict(cfg))


# ------------------------------------------------------------------------- checkpoint choice
class SnapshotSelector:
    """Unsupervised choice of the adversarial snapshot: never looks at ground truth.

    At every snapshot the masks of a fixed probe set of crops are predicted (inference mode):
    confidence = mean |2m - 1| (masks that have decided), stability = mean IoU of the binarised
    masks with those of the previous snapshot, and the mean mask area. A snapshot is eligible when
    it is stable (stability >= `min_stability`: the masks no longer churn) and its area is within
    `area_tolerance` of a (not collapsed to empty or full); among eligible snapshots the most
    confident is kept (ties: the later one). If none is eligible, the highest
    confidence x stability is kept.

    History: a first version kept the highest confidence x stability; on the 30-minute horse run
    stability dipped from 0.96 (step 2300) to 0.92-0.93 (steps 2700-3100) while the masks kept
    improving, so that rule would have kept step 2300 had the run stopped at 3100 (it recovered
    to pick the last step, 3163). See docs/box_seg_notes.md.
    """

    def __init__(
        self, probe, path=None, a=None, min_stability=0.9, area_tolerance=0.1, max_degenerate=0.25
    ):
        self.probe = probe
        self.prev = None
        self.a = a
        self.min_stability = float(min_stability)
        self.area_tolerance = float(area_tolerance)
        self.max_degenerate = float(max_degenerate)
        self.best_key = None
        self.best_score = -1.0
        self.best_step = None
        self.best_weights = None
        self.path = path
        self.history = []

    def __call__(self, segmenter, step):
        m = segmenter.predict(self.probe, batch_size=64, verbose=0)
        b = m > 0.5
        confidence = float(np.mean(np.abs(2 * m - 1)))
        if self.prev is None:
            stability = 0.0
        else:
            inter = np.logical_and(b, self.prev).sum(axis=(1, 2, 3))
            union = np.logical_or(b, self.prev).sum(axis=(1, 2, 3))
            stability = float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))
        self.prev = b
        area = float(m.mean())
        degenerate = self.degenerate_share(b)
        eligible = (
            stability >= self.min_stability
            and degenerate <= self.max_degenerate
            and (self.a is None or abs(area - self.a) <= self.area_tolerance)
        )
        score = confidence if eligible else confidence * stability
        key = (int(eligible), score)
        rec = {
            "step": int(step),
            "confidence": confidence,
            "stability": stability,
            "eligible": bool(eligible),
            "score": score,
            "mask_mean": area,
            "degenerate": degenerate,
        }
        self.history.append(rec)
        if self.best_key is None or key >= self.best_key:
            self.best_key, self.best_score, self.best_step = key, score, int(step)
            self.best_weights = [w.copy() for w in segmenter.get_weights()]
            if self.path is not None:
                segmenter.save_weights(str(self.path))
        return rec

    @staticmethod
    def degenerate_share(binary_masks):
        """Share of masks `[N, R, R, 1]` (crops of their boxes) that no object mask looks like:
        empty, full, or a frame of background carved inside the box (`box_prior.is_degenerate`)."""
        from indep_seg.box_prior import is_degenerate

        r_h, r_w = binary_masks.shape[1:3]
        return float(np.mean([is_degenerate(m[..., 0], (0, 0, r_w, r_h)) for m in binary_masks]))


class _SnapshotCallback(keras.callbacks.Callback):
    """Calls `fn(step)` every `every` training steps of this `fit`."""

    def __init__(self, every, fn):
        super().__init__()
        self.every, self.fn, self.step = every, fn, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self.fn(self.step)


# ------------------------------------------------------------------------------------ train
@dataclasses.dataclass
class _BoxSegRun:
    """What the steps of one `train_box_seg` call share: settings, folders, clock and shards."""

    cfg: BoxSegConfig
    ctx: object
    name: str
    extra: dict
    log: object
    model_dir: Path
    out_dir: Path  # model_dir, or this worker's scratch folder (multi-worker, non-chief)
    t_start: float
    shards: dict | None = None

    @property
    def per_image_area(self) -> bool:
        """Whether a of eq. (7) is each box's own (from its prior) rather than `effective_a`."""
        return bool(self.shards["prior"]) and self.cfg.area_from_prior

    @property
    def area_target(self) -> float:
        """The area the snapshot choice expects: the mean per-image a, or `effective_a`."""
        return float(self.shards["area_mean"]) if self.per_image_area else effective_a(self.cfg)

    @property
    def prior_threshold(self) -> float | None:
        """The prior score below which a box's prior does not anchor the network
        (`prior_score_threshold` of `prior_confident_share`), None: every prior anchors."""
        if not self.shards["prior"]:
            return None
        return prior_score_threshold(self.shards, self.cfg.prior_confident_share)

    def remaining_minutes(self, reserve_seconds: float = 0.0) -> float | None:
        """Minutes left of `--budget-minutes` (at least 0.05) after `reserve_seconds` kept for
        what follows, None without a budget."""
        budget = self.ctx.budget_minutes
        if budget is None:
            return None
        return max(0.05, budget - (time.time() - self.t_start + reserve_seconds) / 60)

    def evidence_reserve_seconds(self) -> float:
        """The time the end-of-run `evidence_report` needs (`EVIDENCE_SECONDS_PER_IMAGE` per
        photo, at most a tenth of the budget): the distillation phase leaves it, so that the
        run ends within `--budget-minutes`."""
        if self.ctx.budget_minutes is None:
            return 0.0
        need = EVIDENCE_SECONDS_PER_IMAGE * self.cfg.evidence_images
        return min(need, 6.0 * self.ctx.budget_minutes)

    def dataset_fn(self, seed: int, with_prior: bool = True):
        """`dataset_fn(start_step)` of `run_fit`: the shards' batches (`box_seg_dataset`)."""
        from indep_seg.data.box_seg_stream import box_seg_dataset

        def dataset_fn(start_step=0):
            return box_seg_dataset(
                self.shards["crop_files"],
                self.shards["background_files"],
                self.cfg.batch_size,
                resolution=self.cfg.resolution,
                seed=seed,
                prior=with_prior and bool(self.shards["prior"]),
                area=with_prior and self.per_image_area,
                prior_threshold=self.prior_threshold if with_prior else None,
                start_batch=int(start_step),
            )

        return dataset_fn

    def fit_options(self, on_snapshot) -> dict:
        """The `run_fit` options both phases share; `on_snapshot(step)` every `snapshot_every`."""
        every = max(self.cfg.snapshot_every, 500)
        return {
            "checkpoint_every": every,
            "log_every": self.cfg.log_every,
            "image_every": every,
            "callbacks": [_SnapshotCallback(self.cfg.snapshot_every, on_snapshot)],
            "verbose": bool(self.extra.get("verbose", True)),
        }


def _start_run(cfg: BoxSegConfig, ctx, name: str) -> _BoxSegRun:
    """The run's folders: every worker of a multi-worker run runs `train_box_seg`; only the chief
    writes into model_dir, the others into a scratch folder removed at the end."""
    from indep_seg.training.strategy import worker_dir

    t_start = time.time()
    prior_score_threshold({}, cfg.prior_confident_share)  # a bad share fails before any work
    model_dir = Path(ctx.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    out_dir = worker_dir(model_dir, ctx.strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = ctx.extra or {}
    return _BoxSegRun(cfg, ctx, name, extra, extra.get("log", print), model_dir, out_dir, t_start)


def _training_data(run: _BoxSegRun):
    """`--data`, or the embedded synthetic dataset (objects on textured backgrounds, boxes.csv)
    written into the run's folder."""
    if run.ctx.data is not None:
        return run.ctx.data
    from indep_seg.data.synthetic import write_synthetic_dataset

    data = run.out_dir / "default_data"
    if not (data / "boxes.csv").is_file():
        write_synthetic_dataset(data, num_images=200, seed=run.ctx.seed)
    run.log(f"{run.name}: no --data given; training on the embedded synthetic dataset in {data}")
    return data


def _log_prepared(run: _BoxSegRun) -> None:
    """One log line: the crops, backgrounds and a the run trains on."""
    cfg, shards = run.cfg, run.shards
    a_text = (
        f"a per image {shards['area_min']:.2f}-{shards['area_max']:.2f} (mean "
        f"{shards['area_mean']:.2f})"
        if run.per_image_area
        else f"a = {effective_a(cfg):.3f}"
    )
    run.log(
        f"{run.name}: {shards['boxes']} crops, {shards['backgrounds']} backgrounds at "
        f"{cfg.resolution}px, {a_text}, prepared in {time.time() - run.t_start:.1f} s"
    )
    if run.prior_threshold is not None:
        run.log(
            f"{run.name}: the priors scoring at least {run.prior_threshold:.3f} (the top "
            f"{cfg.prior_confident_share:.0%} of the collection) anchor the network; the rest "
            "weigh 0 in the prior-consistency term"
        )


def _phase_steps(cfg: BoxSegConfig, ctx) -> tuple[int, int]:
    """`(adversarial steps, distillation steps)`; `--budget-minutes` without `--steps`: the
    phases share the budget, however many steps fit."""
    total_steps = (
        UNBOUNDED_STEPS
        if ctx.steps is None and ctx.budget_minutes is not None
        else ctx.resolve_steps(cfg.steps)
    )
    adv_steps = int(round(total_steps * cfg.adversarial_fraction))
    return adv_steps, total_steps - adv_steps


class _SnapshotLog:
    """Every snapshot of both phases: scored by the `selector` (adversarial phase), extended by
    the benchmark's `study(net, phase, step)` hook (which never selects), logged and appended to
    `snapshots.jsonl`."""

    def __init__(self, run: _BoxSegRun, selector: SnapshotSelector):
        self.run, self.selector = run, selector
        self.study = run.extra.get("study_fn")
        self.records: list[dict] = []

    def __call__(self, step: int, phase: str, net) -> None:
        rec = self.selector(net, step) if phase == "adversarial" else {"step": step}
        if self.study is not None:
            rec.update(self.study(net, phase, step))
        rec["phase"] = phase
        rec["seconds"] = round(time.time() - self.run.t_start, 1)
        self.records.append(rec)
        self.run.log(json.dumps(rec))
        with open(self.run.out_dir / "snapshots.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def _compiled_gan(run: _BoxSegRun) -> tuple[ForegroundSegGAN, UNet]:
    """Phase 1's model (eq. 6-7) and its UNet, built and compiled in the strategy's scope."""
    cfg = run.cfg
    with run.ctx.strategy.scope():
        unet = build_unet(cfg)
        gan = ForegroundSegGAN(
            unet,
            build_discriminator(cfg),
            area_lambda=cfg.area_lambda,
            area_a=effective_a(cfg),
            area_mode=cfg.area_mode,
            d_downsample=cfg.d_downsample,
            box_prior_weight=cfg.box_prior_weight,
            box_margin=cfg.margin,
            pairwise_weight=cfg.pairwise_weight,
            adversarial_weight=cfg.adversarial_weight,
            prior_weight=cfg.prior_weight if run.shards["prior"] else 0.0,
            seed=run.ctx.seed,
        )
        gan.compile(
            d_optimizer=FusedAdam(cfg.d_learning_rate, beta_1=0.5, beta_2=0.999),
            g_optimizer=FusedAdam(cfg.g_learning_rate, beta_1=0.5, beta_2=0.999),
        )
    return gan, unet


def _adversarial_phase(run: _BoxSegRun, steps: int, snapshots: _SnapshotLog):
    """Phase 1: `run_fit` of the GAN into `model_dir/adversarial`, its share of the budget;
    returns `(gan, unet, run_fit's result)` (the UNet as trained, not yet the chosen one)."""
    from indep_seg.training.loop import run_fit

    gan, unet = _compiled_gan(run)
    budget = run.remaining_minutes()
    adv_ctx = dataclasses.replace(
        run.ctx,
        model_dir=run.model_dir / "adversarial",
        budget_minutes=None if budget is None else budget * run.cfg.adversarial_fraction,
    )
    adv = run_fit(
        gan,
        run.dataset_fn(run.ctx.seed),
        adv_ctx,
        total_steps=steps,
        **run.fit_options(lambda s: snapshots(s, "adversarial", unet)),
    )
    snapshots(adv["step"], "adversarial", unet)
    return gan, unet, adv


def _choose_snapshot(run: _BoxSegRun, unet: UNet, selector: SnapshotSelector, adv: dict):
    """Loads the selector's choice into `unet`; returns `(result, the last weights)`."""
    last_weights = unet.get_weights()
    if selector.best_weights is not None:
        unet.set_weights(selector.best_weights)
    run.log(
        f"{run.name}: adversarial phase {adv['step']} steps; chosen snapshot step "
        f"{selector.best_step} (score {selector.best_score:.3f})"
    )
    result = {
        "adversarial_steps": int(adv["step"]),
        "selected_step": selector.best_step,
        "adversarial_seconds": adv.get("seconds"),
    }
    return result, last_weights


def _compiled_distiller(cfg: BoxSegConfig, unet: UNet, seed: int) -> Distiller:
    """Phase 2's model (eq. 8): a frozen copy of `unet` teaches a student (from the teacher's
    weights or from scratch); call inside the strategy's scope."""
    teacher = build_unet(cfg, name="teacher")
    teacher.set_weights(unet.get_weights())
    student = build_unet(cfg, name="student")
    if cfg.distill_init == "teacher":
        student.set_weights(unet.get_weights())
    distiller = Distiller(
        teacher,
        student,
        label=cfg.distill_label,
        real_fraction=cfg.distill_real_fraction,
        seed=seed,
    )
    distiller.compile(FusedAdam(cfg.distill_learning_rate, beta_1=0.5, beta_2=0.999))
    return distiller


def _distillation_phase(run: _BoxSegRun, unet: UNet, steps: int, snapshots, sample):
    """Phase 2: `run_fit` of the distiller into `model_dir/distill` with the rest of the budget;
    writes `distill.png`; returns `(student, steps trained)`."""
    from indep_seg.training.loop import run_fit, write_png

    with run.ctx.strategy.scope():
        distiller = _compiled_distiller(run.cfg, unet, run.ctx.seed)
    student = distiller.student
    dctx = dataclasses.replace(
        run.ctx,
        model_dir=run.model_dir / "distill",
        budget_minutes=run.remaining_minutes(run.evidence_reserve_seconds()),
    )
    dist = run_fit(
        distiller,
        run.dataset_fn(run.ctx.seed + 7, with_prior=False),
        dctx,
        total_steps=steps,
        **run.fit_options(lambda s: snapshots(s, "distill", student)),
    )
    snapshots(dist["step"], "distill", student)
    write_png(run.out_dir / "distill.png", distiller.image_grid(sample))
    return student, int(dist["step"])


def _save_segmenter(run: _BoxSegRun, net: UNet, phase: str, chosen, folder: str):
    """The `Segmenter` artifact of `net`, saved as `out_dir/folder`."""
    from indep_seg.segmenter import Segmenter

    segmenter = Segmenter(
        net.as_functional(),
        run.cfg.resolution,
        run.cfg.margin,
        False,
        run.name,
        {"phase": phase, "selected_step": chosen},
    )
    segmenter.save(run.out_dir / folder)
    return segmenter


def _remove_worker_scratch(run: _BoxSegRun) -> None:
    """A non-chief worker's scratch folder goes (and model_dir/.workers once every worker is
    done); the chief keeps model_dir."""
    import shutil

    from indep_seg.training.strategy import is_chief

    if is_chief(run.ctx.strategy):
        return
    shutil.rmtree(run.out_dir, ignore_errors=True)
    try:
        run.out_dir.parent.rmdir()
    except OSError:
        pass


def train_box_seg(cfg: BoxSegConfig, ctx, name="box_seg") -> dict:
    """Both phases (adversarial, then distillation); ends with the Segmenter artifact.

    The data set is streamed: photos are read one at a time into the run's box shards (crops,
    priors, areas, backgrounds; once, reused on resume; each worker writes its own copy), which
    both phases read through tf.data. Phase 1 trains the GAN and keeps the snapshot the
    `SnapshotSelector` chooses without ground truth; phase 2 distills it into a student; an
    evidence report (`evidence_report`) closes the run.
    """
    from indep_seg.data.box_seg_stream import sample_box_records
    from indep_seg.training.loop import write_png

    run = _start_run(cfg, ctx, name)
    run.shards = prepare_box_shards(
        _training_data(run),
        cfg,
        run.out_dir / "box_shards",
        masks=run.extra.get("masks") or cfg.masks or None,
        skip_bad=bool(run.extra.get("skip_bad")),
        seed=ctx.seed,
        log=run.log,
    )
    probe = sample_box_records(
        run.shards["crop_files"], cfg.resolution, cfg.probe_images, seed=ctx.seed
    )
    _log_prepared(run)
    adv_steps, distill_steps = _phase_steps(cfg, ctx)
    selector = SnapshotSelector(
        probe, run.out_dir / "adversarial_selected.weights.h5", a=run.area_target
    )
    snapshots = _SnapshotLog(run, selector)

    gan, unet, adv = _adversarial_phase(run, adv_steps, snapshots)
    result, last_weights = _choose_snapshot(run, unet, selector, adv)
    sample = next(iter(run.dataset_fn(ctx.seed)().take(1)))
    write_png(run.out_dir / "adversarial_selected.png", gan.image_grid(sample))
    chosen = result["selected_step"]
    _save_segmenter(run, unet, "adversarial", chosen, "segmenter_adversarial")
    final_net, phase = unet, "adversarial"
    if distill_steps > 0 and (ctx.budget_minutes is None or run.remaining_minutes() > 0.2):
        final_net, result["distill_steps"] = _distillation_phase(
            run, unet, distill_steps, snapshots, sample
        )
        phase = "distill"
    final = _save_segmenter(run, final_net, phase, chosen, "segmenter")
    if cfg.evidence_images > 0:
        result["evidence"] = evidence_report(
            final,
            read_evidence_items(run.shards),
            run.out_dir,
            max_images=cfg.evidence_images,
            seed=ctx.seed,
            log=run.log,
        )
    result["seconds"] = round(time.time() - run.t_start, 1)
    result["phase"] = phase
    run.extra["study_log"] = snapshots.records
    run.extra["last_adversarial_weights"] = last_weights
    _remove_worker_scratch(run)
    return result


def evidence_report(segmenter, items, model_dir, refine=None, max_images=200, seed=0, log=print):
    """What a run can say about its own masks without ground truth; writes `evidence.json` and
    `gallery.png` (best, median and worst masks by colour contrast) into `model_dir`.

    On up to `max_images` photos: the share of degenerate masks (`box_prior.is_degenerate`) and
    the mean colour contrast with the known background outside the box
    (`box_prior.colour_contrast`) of the masks, of the inscribed ellipse and of the filled box.
    Masks that separate from the background no better than the ellipse did not learn the
    objects: the report says so (`"beats_ellipse": false`) and the log warns.
    """
    from indep_seg.box_prior import mask_evidence
    from indep_seg.gallery import save_gallery

    model_dir = Path(model_dir)
    idx = np.random.default_rng(seed).permutation(len(items))[:max_images]
    masks = segmenter.predict([items[i][1] for i in idx], [items[i][2] for i in idx], refine=refine)
    ev = [mask_evidence(items[i][1], m, items[i][2]) for i, m in zip(idx, masks)]
    c = np.asarray([e["contrast"] for e in ev])
    report = {
        "images": int(len(ev)),
        "refine": refine,
        "contrast": round(float(c.mean()), 4),
        "contrast_ellipse": round(float(np.mean([e["contrast_ellipse"] for e in ev])), 4),
        "contrast_box": round(float(np.mean([e["contrast_box"] for e in ev])), 4),
        "degenerate_share": round(float(np.mean([e["degenerate"] for e in ev])), 4),
    }
    report["beats_ellipse"] = bool(report["contrast"] > report["contrast_ellipse"])
    tmp = model_dir / f".evidence.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, model_dir / "evidence.json")
    order = np.argsort(c)
    n = len(order)
    pick = list(order[::-1][:4]) + list(order[max(0, n // 2 - 2) : n // 2 + 2]) + list(order[:4])
    labels = ["highest"] * 4 + ["median"] * 4 + ["lowest"] * 4
    save_gallery(
        model_dir / "gallery.png",
        [ev[i]["crop"] for i in pick],
        [ev[i]["crop_mask"] for i in pick],
        captions=[f"{lab} contrast {c[i]:.2f} {items[idx[i]][0]}" for lab, i in zip(labels, pick)],
        title="masks ranked by colour contrast with the background outside the box (no labels)",
    )
    log(
        f"unsupervised evidence on {len(ev)} photos: colour contrast of the masks "
        f"{report['contrast']:.3f} "
        f"(ellipse {report['contrast_ellipse']:.3f}, box {report['contrast_box']:.3f}), "
        f"degenerate masks {100 * report['degenerate_share']:.0f} %; gallery: "
        f"{model_dir / 'gallery.png'}"
    )
    if not report["beats_ellipse"]:
        log(
            "WARNING: the masks separate from the background outside the boxes no better than the "
            "ellipse inscribed in each box: this run did not learn the objects; use "
            "`indep-seg segment --refine grabcut`, more time, or check the boxes"
        )
    return report


def train_box_seg_paper(cfg, ctx):
    return train_box_seg(cfg, ctx, name="box_seg_paper")


try:
    from indep_seg.training.registry import register_experiment

    register_experiment(
        "box_seg",
        box_seg_config(),
        train_box_seg,
        "box-level foreground masks, independence prior + distillation "
        "(Dai et al. 2019, application 1), small preset for 2 CPU cores",
    )
    register_experiment(
        "box_seg_paper",
        paper_config(),
        train_box_seg_paper,
        "box_seg with the paper's Table 1 networks and Table 3 hyperparameters",
    )
except ImportError:  # pragma: no cover
    pass
