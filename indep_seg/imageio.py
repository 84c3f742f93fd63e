"""Image files, the package's one home for reading and writing them: listing (`list_images`),
reading as 8-bit RGB (`read_image`), as a boolean mask (`read_mask`) or, for any 8/16-bit grey /
RGB / RGBA layout, as float RGB in [0, 1] (`load_image`, `to_rgb_float`: the counting image), and
atomic PNG writing (`write_png`).

No TensorFlow here: the command line imports it before deciding whether TensorFlow is needed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "list_images",
    "read_image",
    "read_mask",
    "load_image",
    "to_rgb_float",
    "write_png",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(paths) -> list[Path]:
    """Files given directly, plus the image files (by suffix) directly inside given folders.

    Raises:
        FileNotFoundError: a path does not exist (named in the message).
        ValueError: a folder holds no image file.
    """
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(
                c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise ValueError(f"{p}: folder holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


_PIL_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
)


def _decode(path, convert, message):
    """`convert(opened PIL image)` of the file at `path`; a ValueError `message.format(path=...,
    error=...)`
    when PIL cannot read it (every reader below goes through here)."""
    try:
        with Image.open(path) as im:
            im.load()
            return convert(im)
    except _PIL_ERRORS as e:
        raise ValueError(message.format(path=path, error=f"{type(e).__name__}: {e}")) from None


def read_image(path) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB (grey and RGBA converted); ValueError naming the file if unreadable."""
    return _decode(
        path, lambda im: np.asarray(im.convert("RGB")), "{path}: cannot read the image ({error})"
    )


def read_mask(path, threshold: int = 127) -> np.ndarray:
    """Boolean `[H, W]` mask: grey value > `threshold` (JPEG masks: 127)."""
    return _decode(
        path,
        lambda im: np.asarray(im.convert("L")) > threshold,
        "{path}: cannot read the mask ({error})",
    )


def to_rgb_float(array, name: str = "image") -> np.ndarray:
    """Convert an image array to float32 ``[H, W, 3]`` in [0, 1].

    Handles grayscale ``[H, W]`` / ``[H, W, 1]`` (replicated to 3 channels), RGB, RGBA /
    gray+alpha (alpha dropped: composited over black, as a transparent pixel shows nothing),
    8-bit, 16-bit, integer and float inputs (float must already be in [0, 1]).
    """
    a = np.asarray(array)
    if a.dtype == object or a.dtype == np.bool_ and a.ndim not in (2, 3):
        raise TypeError(f"{name}: expected an image array, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"{name}: expected an image [H, W] or [H, W, C] with C in 1..4, got shape {a.shape}"
        )
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty image, got shape {a.shape}")
    if a.dtype == np.bool_:
        f = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        if a.dtype == np.uint8:
            scale = 255.0
        elif a.dtype == np.uint16 or (a.max(initial=0) > 255 and a.max(initial=0) <= 65535):
            scale = 65535.0
            # 16-bit images that use only part of the range (e.g. 12-bit cameras) are stretched.
            mx = float(a.max(initial=0))
            if 0 < mx < 4096:
                scale = 4095.0 if mx > 255 else 255.0
        else:
            scale = float(max(a.max(initial=1), 1))
        if a.min(initial=0) < 0:
            raise ValueError(f"{name}: expected non-negative pixel values, got min {a.min()}")
        f = a.astype(np.float32) / scale
    elif np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32)
        if not np.all(np.isfinite(f)):
            raise ValueError(f"{name}: expected finite pixel values, got NaN or Inf")
        if f.min() < -1e-5 or f.max() > 1 + 1e-5:
            raise ValueError(
                f"{name}: expected float pixel values in [0, 1], got [{f.min():.4g}, {f.max():.4g}]"
            )
    else:
        raise TypeError(f"{name}: expected an integer or float image, got dtype {a.dtype}")
    c = f.shape[-1]
    if c in (2, 4):  # drop alpha, compositing over black
        alpha = f[..., -1:]
        f = f[..., :-1] * alpha
        c -= 1
    if c == 1:
        f = np.repeat(f, 3, axis=-1)
    return np.clip(f, 0.0, 1.0).astype(np.float32)


def _native_array(im) -> np.ndarray:
    """The pixels in their own depth: palette and exotic modes to RGB(A), 16-bit kept as uint16."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return arr.astype(np.uint16)
    if im.mode == "I":
        return arr.astype(np.int64)
    return arr


def load_image(path) -> np.ndarray:
    """Read an image file -> float32 ``[H, W, 3]`` in [0, 1] (see `to_rgb_float`).

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing or unreadable.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image: file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"image: expected an image file, got a directory: {path}")
    arr = _decode(path, _native_array, "image: cannot read {path} as an image ({error})")
    return to_rgb_float(arr, name=f"image {path}")


def write_png(path, array) -> Path:
    """Writes uint8 `[H, W]`, `[H, W, 3]` or `[H, W, 4]` as PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(np.asarray(array)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
