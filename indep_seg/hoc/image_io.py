"""Reading the one training image: every common PNG/JPEG/TIFF layout becomes float32 RGB in [0, 1]."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["load_image", "to_rgb_float"]


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
        raise ValueError(f"{name}: expected an image [H, W] or [H, W, C] with C in 1..4, got shape {a.shape}")
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
            raise ValueError(f"{name}: expected float pixel values in [0, 1], got [{f.min():.4g}, {f.max():.4g}]")
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
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "LA":
                pass
            elif im.mode == "1":
                im = im.convert("L")
            arr = np.asarray(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = arr.astype(np.uint16)
            elif im.mode == "I":
                arr = arr.astype(np.int64)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        raise ValueError(f"image: cannot read {path} as an image ({e})") from None
    return to_rgb_float(arr, name=f"image {path}")
