"""Picture grids, the one home of the package's tilers: `tile_rows` (rows of tiles, the training
previews of every model), `tile_images` (one batch in a near-square grid), `titled_grid` (column
titles over rows of tiles) and the titled galleries of masks (`gallery_image`, `save_gallery`: one
row per case, columns photo | mask (cut-out) | [reference]).

Used for the galleries of best, median and worst cases that a run writes into its directory
(ranked without ground truth) and that the benchmarks write beside their figures (ranked by IoU).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["tile_rows", "tile_images", "gallery_image", "save_gallery", "titled_grid"]


def _rgb(x):
    """uint8 RGB `[..., H, W, 3]` from uint8 or float in [0, 1] (NaN -> 0), grey `[H, W]` /
    `[..., 1]` repeated, RGBA's alpha dropped."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        x = (np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, -1)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    return x[..., :3]


def tile_rows(
    rows,
    gap: int = 2,
    min_cell: int = 0,
    margin: int | None = None,
    fill: int = 255,
    columns: int | None = None,
    titles=None,
):
    """Rows of tiles -> one uint8 `[H', W', 3]` image, one row of cells per entry of `rows`.

    Args:
        rows: each a batch `[N, H, W, C]` or a list of `[H, W, C]` / `[H, W]` tiles (C = 1, 3 or
            4; uint8, or float in [0, 1], clipped), all of the first tile's size.
        gap: pixels between cells (and around them unless `margin` says otherwise).
        min_cell: cells are enlarged by pixel repetition to at least this many pixels a side.
        margin: pixels around the grid (default: `gap`).
        fill: grey value of gutters and of missing cells (255 white, 0 black).
        columns: cell columns of the grid (default: the longest row's length).
        titles: optional name of each row, written in a band at the left (the training
            previews: what each row shows).
    """
    rows = [[_rgb(t) for t in r] for r in rows]
    if not rows or not rows[0]:
        raise ValueError("rows: expected at least one row with at least one tile")
    h, w = rows[0][0].shape[:2]
    k = max(1, int(np.ceil(min_cell / h))) if min_cell else 1
    if k > 1:
        rows = [[t.repeat(k, axis=0).repeat(k, axis=1) for t in r] for r in rows]
        h, w = h * k, w * k
    margin = gap if margin is None else margin
    ncol = max(max(len(r) for r in rows), columns or 0)
    canvas = np.full(
        (2 * margin + len(rows) * (h + gap) - gap, 2 * margin + ncol * (w + gap) - gap, 3),
        fill,
        np.uint8,
    )
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            if tile.shape[:2] != (h, w):
                raise ValueError(
                    f"rows[{i}][{j}]: expected a {h // k}x{w // k} tile like the first, "
                    f"got {tile.shape[1] // k}x{tile.shape[0] // k}"
                )
            y, x = margin + i * (h + gap), margin + j * (w + gap)
            canvas[y : y + h, x : x + w] = tile
    if titles is None:
        return canvas
    return _row_titles(canvas, list(titles), len(rows), h, gap, margin, fill)


def _row_titles(canvas, titles, nrows, h, gap, margin, fill):
    """`canvas` with a band at its left naming each of its `nrows` rows of height `h`."""
    if len(titles) != nrows:
        raise ValueError(f"titles: expected one per row ({nrows}), got {len(titles)}")
    band = 6 * max((len(str(t)) for t in titles), default=0) + 8
    out = Image.new("RGB", (canvas.shape[1] + band, canvas.shape[0]), (fill,) * 3)
    out.paste(Image.fromarray(canvas), (band, 0))
    draw = ImageDraw.Draw(out)
    ink = (0, 0, 0) if fill > 127 else (255, 255, 255)
    for i, title in enumerate(titles):
        draw.text((4, margin + i * (h + gap) + max(h // 2 - 6, 0)), str(title), fill=ink)
    return np.asarray(out)


def tile_images(images, columns: int | None = None, padding: int = 1, fill: int = 0):
    """One batch `[N, H, W, C]` (C in 1, 3, 4; float in [0, 1] or uint8) in a near-square grid
    (`columns` per row, default ceil(sqrt(N))), `padding` pixels between cells, none around."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] == 0:
        raise ValueError(
            f"images: expected [N, H, W, C] with N > 0 and C in 1, 3, 4, got shape {arr.shape}"
        )
    cols = columns or int(np.ceil(np.sqrt(arr.shape[0])))
    return tile_rows(
        [arr[r : r + cols] for r in range(0, arr.shape[0], cols)],
        gap=padding,
        margin=0,
        fill=fill,
        columns=cols,
    )


def gallery_image(images, masks, references=None, captions=None, title="", cell=128):
    """A uint8 `[H, W, 3]` grid: column titles, one row per image with its caption.

    Columns: the photo, the photo with the mask's outside dimmed and its outline in red
    ("mask"), the binarised mask, and the reference mask when `references` is given.
    """
    headers = ["photo", "mask on photo", "mask > 0.5"] + (
        ["ground truth"] if references is not None else []
    )
    n, cols = len(images), len(headers)
    pad, head, cap = 4, 18, 14
    top = head + (16 if title else 0)
    w = cols * (cell + pad) + pad
    h = top + n * (cell + cap + pad) + pad
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0))
    for c, name in enumerate(headers):
        draw.text((pad + c * (cell + pad), top - head + 3), name, fill=(0, 0, 0))
    for r in range(n):
        img = _rgb(images[r])
        m = np.asarray(masks[r], np.float32).reshape(img.shape[:2])
        b = m > 0.5
        over = (img.astype(np.float32) * (0.35 + 0.65 * b[..., None])).astype(np.uint8)
        edge = b ^ np.pad(b, 1, mode="edge")[1:-1, 2:] | b ^ np.pad(b, 1, mode="edge")[2:, 1:-1]
        over[edge] = (255, 0, 0)
        tiles = [img, over, _rgb(b.astype(np.float32))]
        if references is not None:
            tiles.append(_rgb(np.asarray(references[r], np.float32).reshape(img.shape[:2])))
        y = top + r * (cell + cap + pad)
        for c, t in enumerate(tiles):
            tile = Image.fromarray(t).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (pad + c * (cell + pad), y))
        if captions is not None:
            draw.text((pad, y + cell + 1), str(captions[r])[:120], fill=(60, 60, 60))
    return np.asarray(canvas)


def save_gallery(path, images, masks, references=None, captions=None, title=""):
    """Writes `gallery_image(...)` as a PNG (temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Image.fromarray(gallery_image(images, masks, references, captions, title)).save(
        tmp, format="PNG"
    )
    os.replace(tmp, path)
    return path


def titled_grid(rows, headers, pad: int = 2, head: int = 16) -> np.ndarray:
    """Rows of equally sized tiles (uint8 `[H, W, 3]` / `[H, W]`, or floats in [0, 1]) under a
    band of column titles -> one uint8 `[H', W', 3]` image with white gutters.

    Used wherever a picture shows columns side by side (the demo's panel, `indep-seg evaluate`'s
    grid), so that the picture says what each column is.
    """
    rows = [[_rgb(t)[..., :3] for t in r] for r in rows]
    h, w = rows[0][0].shape[:2]
    ncol = max(len(headers), max(len(r) for r in rows))
    canvas = Image.new(
        "RGB", (ncol * (w + pad) + pad, head + len(rows) * (h + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(headers):
        draw.text((pad + c * (w + pad) + 2, 3), str(name), fill=(0, 0, 0))
    for i, r in enumerate(rows):
        for j, tile in enumerate(r):
            canvas.paste(Image.fromarray(tile), (pad + j * (w + pad), head + pad + i * (h + pad)))
    return np.asarray(canvas)
