"""Folders of images, masks and `boxes.csv`: listing, matching and validation (no TensorFlow).

One *plan* of a folder is a list of `FolderItem`s (image file, optional mask file, boxes in the
pixel frame of the decoded element) plus the problems found; the folder reader, the TFRecord
converters and the tfds builder all start from the same plan, so they agree on every file.

Conventions (shared with ../shared/datasets/README.md):
- images and masks are matched by file stem (`horse001.jpg` <-> `horse001.png`);
- a mask may have another size than its photo but the same aspect ratio (relative difference
  <= `ASPECT_TOLERANCE`): the photo is then resized to the mask's size, and the boxes of
  `boxes.csv` (given in the photo's pixels) are scaled with it;
- `boxes.csv` has rows `filename,x0,y0,x1,y1` (pixels, x1/y1 exclusive, optional header row,
  several rows per file for several boxes); a box must be non-empty and inside the image.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

__all__ = [
    "DataError",
    "FolderItem",
    "FolderPlan",
    "IMAGE_EXTENSIONS",
    "ASPECT_TOLERANCE",
    "list_images",
    "read_boxes_csv",
    "probe_image",
    "plan_folder",
    "find_folder_layout",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
#: Largest relative difference of aspect ratios between a photo and its mask.
ASPECT_TOLERANCE = 0.02
#: Folder names recognised by `find_folder_layout` (images dir, masks dir).
IMAGE_DIR_NAMES = ("images", "rgb", "image", "img")
MASK_DIR_NAMES = ("masks", "figure_ground", "mask", "labels")


class DataError(ValueError):
    """Bad input data; the message names the file (and row) at fault."""


@dataclasses.dataclass
class FolderItem:
    """One image of a folder, validated.

    Attributes:
        image_path: the photo file.
        mask_path: its mask file or None.
        boxes: float32 `[K, 4]` pixel boxes x0, y0, x1, y1 in the frame of the decoded element
            (the mask's size when the photo is resized to it); `K = 0` means "from the mask, or
            the whole image" (decided at decode time).
        height, width: size of the decoded element.
        photo_size: (height, width) of the photo file.
        source_id: the image's file name relative to its folder.
    """

    image_path: str
    mask_path: str | None
    boxes: np.ndarray
    height: int
    width: int
    photo_size: tuple
    source_id: str

    @property
    def needs_resize(self) -> bool:
        return tuple(self.photo_size) != (self.height, self.width)


@dataclasses.dataclass
class FolderPlan:
    """The validated items of a folder, its problems, and the photos that `boxes.csv` leaves out.

    Attributes:
        items: `FolderItem`s to read.
        problems: `[(file, reason)]`, one per bad file or row.
        unboxed: photos without a `boxes.csv` row and without a mask: with a `boxes.csv`, a
            photo that has no row is not used (as in a flat folder for training), never given the
            whole photo as its box.
    """

    items: list
    problems: list  # [(file, reason)]
    unboxed: list = dataclasses.field(default_factory=list)

    def raise_if_problems(self):
        if self.problems:
            first_file, first_reason = self.problems[0]
            more = (
                f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
            )
            raise DataError(f"{first_file}: {first_reason}{more}")


def list_images(directory) -> list[str]:
    """Sorted image files of `directory` (by extension); errors on empty folders and duplicate
    stems."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: not a directory")
    files = sorted(
        f
        for f in os.listdir(directory)
        if not f.startswith(".")
        and f.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(directory, f))
    )
    if not files:
        raise DataError(f"{directory}: empty folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
    seen = {}
    for f in files:
        stem = os.path.splitext(f)[0]
        if stem in seen:
            raise DataError(
                f"{os.path.join(directory, f)}: duplicate name: {seen[stem]} has the same stem "
                f"{stem!r}"
            )
        seen[stem] = f
    return [os.path.join(directory, f) for f in files]


def read_boxes_csv(path) -> tuple[dict, list]:
    """Parses `boxes.csv`: returns `({filename: [(row_number, [x0, y0, x1, y1]), ...]}, problems)`.

    Rows are `filename,x0,y0,x1,y1`; a first row whose coordinates are not numbers is a header.
    Every bad row is a problem `("PATH row N", reason)`; row numbers are 1-based lines.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: boxes file not found")
    boxes, problems = {}, []
    with open(path, newline="", encoding="utf-8") as f:
        for row_number, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path} row {row_number}"
            if len(row) != 5:
                problems.append(
                    (where, f"expected 5 fields filename,x0,y0,x1,y1, got {len(row)}: {row!r}")
                )
                continue
            name = row[0].strip()
            try:
                coords = [float(c) for c in row[1:]]
            except ValueError:
                if row_number == 1:
                    continue  # header
                problems.append((where, f"coordinates are not numbers: {row[1:]!r}"))
                continue
            if not name:
                problems.append((where, "empty filename"))
                continue
            if not all(math.isfinite(c) for c in coords):
                problems.append((where, f"coordinates are not finite: {coords}"))
                continue
            x0, y0, x1, y1 = coords
            if not (x1 > x0 and y1 > y0):
                problems.append(
                    (where, f"empty box {coords} for {name} (expected x1 > x0 and y1 > y0)")
                )
                continue
            boxes.setdefault(name, []).append((row_number, coords))
    return boxes, problems


def _jpeg_or_png_truncated(path: str, fmt: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1024))
        tail = f.read()
    if fmt == "JPEG":
        return b"\xff\xd9" not in tail
    if fmt == "PNG":
        return b"IEND" not in tail
    return False


def probe_image(path, full: bool = False) -> tuple[int, int, str]:
    """`(height, width, format)` of an image file, raising `DataError` naming the file if
    unreadable.

    Checks the header, and for JPEG/PNG that the end-of-image marker is present (a cheap
    truncation check); `full=True` decodes the whole file.
    """
    from PIL import Image

    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            fmt = img.format or "?"
            if full:
                img.load()
    except Exception as e:  # PIL raises many types for bad files
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if fmt in ("JPEG", "PNG") and _jpeg_or_png_truncated(path, fmt):
        raise DataError(f"{path}: truncated {fmt} file (no end-of-image marker)")
    if w < 1 or h < 1:
        raise DataError(f"{path}: empty image ({w}x{h})")
    return h, w, fmt


def find_folder_layout(directory):
    """`(images_dir, masks_dir or None, boxes_csv or None)` of a dataset folder.

    Recognised: a folder of images (with an optional `boxes.csv`), or a folder with an images
    sub-folder (`images/`, `rgb/`, ...) and optionally a masks sub-folder (`masks/`,
    `figure_ground/`, ...) and `boxes.csv` (at the top or in the images folder).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: not a directory")
    images_dir = next(
        (
            os.path.join(directory, n)
            for n in IMAGE_DIR_NAMES
            if os.path.isdir(os.path.join(directory, n))
        ),
        directory,
    )
    masks_dir = next(
        (
            os.path.join(directory, n)
            for n in MASK_DIR_NAMES
            if os.path.isdir(os.path.join(directory, n))
        ),
        None,
    )
    boxes_csv = next(
        (
            p
            for p in (os.path.join(directory, "boxes.csv"), os.path.join(images_dir, "boxes.csv"))
            if os.path.isfile(p)
        ),
        None,
    )
    return images_dir, masks_dir, boxes_csv


def plan_folder(images_dir, masks_dir=None, boxes_csv=None, full_check: bool = False) -> FolderPlan:
    """Lists, matches and validates a folder; returns a `FolderPlan` (items + problems).

    Folder-level errors (missing or empty folder, duplicate stems) raise `DataError` at once;
    per-file problems (unreadable image, missing mask, other aspect ratio, box outside the
    image, bad CSV rows) are collected so that a converter can skip them (`--skip-bad`); call
    `plan.raise_if_problems()` to stop at the first one. With a `boxes_csv`, a photo that has
    neither a row nor a mask is left out and listed in `plan.unboxed`.
    """
    images = list_images(images_dir)
    masks = {}
    if masks_dir is not None:
        for m in list_images(masks_dir):
            masks[os.path.splitext(os.path.basename(m))[0]] = m
    problems = []
    csv_boxes = {}
    if boxes_csv is not None:
        csv_boxes, csv_problems = read_boxes_csv(boxes_csv)
        problems.extend(csv_problems)
        names = {os.path.basename(p) for p in images}
        for name, rows in csv_boxes.items():
            if name not in names:
                problems.append(
                    (f"{boxes_csv} row {rows[0][0]}", f"{name} is not an image of {images_dir}")
                )
    items, unboxed = [], []
    for path in images:
        name = os.path.basename(path)
        try:
            ph, pw, _ = probe_image(path, full=full_check)
        except DataError as e:
            problems.append((path, str(e).split(": ", 1)[1]))
            continue
        h, w = ph, pw
        mask_path = None
        if masks_dir is not None:
            mask_path = masks.get(os.path.splitext(name)[0])
            if mask_path is None:
                problems.append((path, f"no mask with the same stem in {masks_dir}"))
                continue
            try:
                h, w, _ = probe_image(mask_path, full=full_check)
            except DataError as e:
                problems.append((mask_path, str(e).split(": ", 1)[1]))
                continue
            if (h, w) != (ph, pw):
                ratio_photo, ratio_mask = pw / ph, w / h
                if abs(ratio_photo / ratio_mask - 1.0) > ASPECT_TOLERANCE:
                    problems.append(
                        (
                            path,
                            (
                                f"mask {mask_path} is {w}x{h} (aspect {ratio_mask:.3f}) but the "
                                "photo is "
                                f"{pw}x{ph} (aspect {ratio_photo:.3f}): aspect ratios differ by "
                                "more than "
                                f"{ASPECT_TOLERANCE:.0%}"
                            ),
                        )
                    )
                    continue
        if boxes_csv is not None and mask_path is None and name not in csv_boxes:
            unboxed.append(path)
            continue
        boxes = []
        bad = None
        for row_number, (x0, y0, x1, y1) in csv_boxes.get(name, []):
            if x0 < 0 or y0 < 0 or x1 > pw or y1 > ph:
                bad = (
                    f"{boxes_csv} row {row_number}",
                    f"box {[x0, y0, x1, y1]} of {name} lies outside the {pw}x{ph} image",
                )
                break
            sx, sy = w / pw, h / ph
            boxes.append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
        if bad is not None:
            problems.append(bad)
            continue
        items.append(
            FolderItem(
                image_path=path,
                mask_path=mask_path,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                height=h,
                width=w,
                photo_size=(ph, pw),
                source_id=name,
            )
        )
    return FolderPlan(items=items, problems=problems, unboxed=unboxed)
