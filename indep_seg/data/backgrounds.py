"""Background provider of the box-level application (Dai et al. 2019, "Background Provider").

The paper builds background instances "by sampling patches from scene-specific natural images"
with no foreground. The default here takes them from the training photos themselves, outside
their boxes, *at the scale of the crops*: DESIGN.md section 7 found that patches cut outside the
boxes and resized to the crop size were ~10x blurrier than the crops (boxes cover a median 66 % of
a horse photo), and the discriminator then learned "sharp = real" instead of the object.

`scale_matched_backgrounds` rescales each photo so that its crop window becomes R x R (the same
resampling the crops get), keeps the window's pixels outside the box, and fills the box with the
photo's own outside-box pixels of the same rows (or columns), mirror-tiled: texture, sharpness,
colours and the vertical layout of the scene (sky above, ground below) match a real crop, and no
foreground pixel is used. `folder_backgrounds` takes random crops of a folder of background images
instead (the paper's choice for CelebA and birds).

Both build the fixed bank `[K, R, R, 3]` that the box-level trainer writes into its shards once
and streams (`indep_seg.data.box_seg_stream`). `indep_seg.providers.NaturalPatchSampler` is the
same paper provider (Fig. 4, case 3) in its in-graph form: fresh RGBA patches of an in-memory bank
at every call, for a model that draws its layers in its train step; its docstring says why the
box-level bank is not drawn from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from indep_seg import checks
from indep_seg.box_crop import box_window

__all__ = ["scale_matched_backgrounds", "folder_backgrounds", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _reflect_indices(length: int, n: int, offset: int) -> np.ndarray:
    k = (np.arange(length) + offset) % (2 * n)
    return np.where(k < n, k, 2 * n - 1 - k)


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return tf.image.resize(image[None], (h, w), method="bilinear", antialias=True)[0].numpy()


def _one_background(image, box, resolution, margin, min_strip, rng):
    """Scale-matched background of one photo's window, or None when too little lies outside."""
    H, W = image.shape[:2]
    window = box_window(np.asarray([box], np.float32), margin, False).numpy()[0]
    sx = resolution / (window[2] - window[0])
    sy = resolution / (window[3] - window[1])
    h2, w2 = max(1, int(round(H * sy))), max(1, int(round(W * sx)))
    if h2 * w2 > 4096 * 4096:
        return None
    scaled = _resize(image, h2, w2)
    # The box in scaled pixels, grown by one pixel: resampling blends the box's edge into
    # its neighbours, and no foreground pixel may reach a background.
    bx0, by0 = int(np.floor(box[0] * sx)) - 1, int(np.floor(box[1] * sy)) - 1
    bx1, by1 = int(np.ceil(box[2] * sx)) + 1, int(np.ceil(box[3] * sy)) + 1
    bx0, bx1 = np.clip([bx0, bx1], 0, w2)
    by0, by1 = np.clip([by0, by1], 0, h2)
    horizontal = np.concatenate([scaled[:, :bx0], scaled[:, bx1:]], axis=1)  # [h2, n, 3]
    vertical = np.concatenate([scaled[:by0], scaled[by1:]], axis=0)  # [n, w2, 3]
    filled = scaled.copy()
    if horizontal.shape[1] >= min_strip and horizontal.shape[1] >= vertical.shape[0] / 2:
        idx = _reflect_indices(bx1 - bx0, horizontal.shape[1], int(rng.integers(0, 1 << 16)))
        filled[:, bx0:bx1] = horizontal[:, idx]
    elif vertical.shape[0] >= min_strip:
        idx = _reflect_indices(by1 - by0, vertical.shape[0], int(rng.integers(0, 1 << 16)))
        filled[by0:by1] = vertical[idx]
    else:
        return None
    # The window in scaled pixels, black outside the photo (as `crop_to_window` does).
    wx0, wy0 = int(round(window[0] * sx)), int(round(window[1] * sy))
    out = np.zeros((resolution, resolution, 3), np.float32)
    ys0, xs0 = max(0, wy0), max(0, wx0)
    ys1, xs1 = min(h2, wy0 + resolution), min(w2, wx0 + resolution)
    if ys1 > ys0 and xs1 > xs0:
        out[ys0 - wy0 : ys1 - wy0, xs0 - wx0 : xs1 - wx0] = filled[ys0:ys1, xs0:xs1]
    return out


def scale_matched_backgrounds(
    images,
    boxes,
    resolution: int,
    margin: float = 0.0,
    variants: int = 2,
    min_strip: int = 6,
    seed: int = 0,
):
    """Backgrounds without foreground, at the scale and sharpness of the box crops.

    Args:
        images: sequence of `[H, W, 3]` float images in [0, 1] (sizes may differ).
        boxes: one box `x0, y0, x1, y1` per image (pixels; the object's box).
        resolution: crop side R.
        margin: the crop margin (the same as the crops').
        variants: backgrounds per photo (different mirror-tiling phases).
        min_strip: fewest outside-box pixels (at crop scale) beside the box, left + right (or
            above + below), for a photo to be used.
        seed: random seed of the tiling phases.

    Returns:
        `(backgrounds [K, R, R, 3] float32, source_index [K] int)`; photos whose boxes leave
        too little outside are skipped.

    Raises:
        ValueError naming the argument on empty inputs, mismatched lengths or empty boxes.
    """
    resolution = checks.check_int(resolution, "resolution", minimum=2)
    variants = checks.check_int(variants, "variants", minimum=1)
    min_strip = checks.check_int(min_strip, "min_strip", minimum=1)
    if len(images) == 0:
        raise ValueError("images: expected at least one image, got none")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) != len(images):
        raise ValueError(f"boxes: expected one box per image ({len(images)}), got {len(boxes)}")
    rng = np.random.default_rng(seed)
    out, src = [], []
    for i, (image, box) in enumerate(zip(images, boxes)):
        image = np.asarray(image, np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"images[{i}]: expected [H, W, 3], got shape {image.shape}")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"boxes[{i}]: empty box {box.tolist()} (expected x1 > x0, y1 > y0)")
        for _ in range(variants):
            bg = _one_background(image, box, resolution, margin, min_strip, rng)
            if bg is None:
                break
            out.append(bg)
            src.append(i)
    if not out:
        from indep_seg.data.files import DataError

        raise DataError(
            "images: no photo has enough pixels outside its box for a background "
            f"(min_strip={min_strip}): the boxes cover (almost) the whole photos; give boxes "
            "around the objects only, or pass a background folder instead "
            "(--override background=FOLDER, photos of the scenes without the objects)"
        )
    return np.stack(out), np.asarray(src, np.int64)


def folder_backgrounds(folder, resolution: int, per_image: int = 4, seed: int = 0):
    """Random square crops (1/2 to all of the shorter side) of every image in `folder`, at R x R.

    The offline form of Dai et al.'s natural-patch background provider (Fig. 4, case 3): a fixed
    bank for the box-level trainer's shards, `per_image` crops of each photo with a side relative
    to that photo, so photos of any size give one scene scale. The in-graph form, fresh fixed-size
    RGBA patches at every call, is `indep_seg.providers.NaturalPatchSampler`.

    Returns `[K, R, R, 3]` float32. Raises ValueError naming the folder when it holds no image,
    and naming the file when one cannot be decoded.
    """
    from PIL import Image

    from indep_seg.data.files import DataError  # a ValueError: bad user data, named

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"background folder (--override background=...): {folder} is not a directory"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(
            f"background folder: {folder} holds no image ({', '.join(IMAGE_EXTENSIONS)})"
        )
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        try:
            image = np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise DataError(f"background folder: cannot read {f}: {e}") from e
        h, w = image.shape[:2]
        for _ in range(per_image):
            side = int(rng.integers(max(1, min(h, w) // 2), min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append(_resize(image[y : y + side, x : x + side], resolution, resolution))
    return np.stack(out).astype(np.float32)
