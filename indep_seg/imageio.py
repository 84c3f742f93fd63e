"""Image files: listing, reading (8-bit RGB, masks), atomic PNG writing, grids.

No TensorFlow here: the command line imports it before deciding whether TensorFlow is needed."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image", "read_mask", "write_png", "image_grid"]

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
            found = sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{p}: folder holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def read_image(path) -> np.ndarray:
    """`[H, W, 3]` uint8 RGB (grey and RGBA converted); ValueError naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None


def read_mask(path, threshold: int = 127) -> np.ndarray:
    """Boolean `[H, W]` mask: grey value > `threshold` (JPEG masks: 127)."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("L")) > threshold
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the mask ({type(e).__name__}: {e})") from None


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


def image_grid(rows, pad: int = 2) -> np.ndarray:
    """Rows of equally sized `[H, W, 3]` uint8 tiles -> one uint8 image, white gutters."""
    rows = [list(r) for r in rows]
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            tile = np.asarray(tile)
            if tile.ndim == 2:
                tile = np.repeat(tile[..., None], 3, axis=-1)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = tile[..., :3]
    return grid
