"""PNG previews of decoded elements: image | mask overlay with boxes, a few per row."""

from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["preview_tiles", "save_preview"]

COLUMN_TITLES = ("photo + boxes", "mask overlay (red)")


def _fit(image, tile):
    from PIL import Image

    h, w = image.shape[:2]
    s = tile / max(h, w)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    canvas = Image.new("RGB", (tile, tile), (24, 24, 24))
    oy, ox = (tile - nh) // 2, (tile - nw) // 2
    canvas.paste(pil, (ox, oy))
    return canvas, s, ox, oy


def preview_tiles(element, tile: int = 160):
    """Two PIL tiles for one decoded element: the image with its boxes, and the mask overlay."""
    from PIL import ImageDraw

    image = np.asarray(element["image"], np.uint8)
    mask = np.asarray(element.get("mask", np.zeros(image.shape[:2] + (1,), np.uint8)))
    has_mask = bool(np.asarray(element.get("has_mask", mask.any())))
    boxes = np.asarray(element.get("boxes", np.zeros([0, 4])), np.float32).reshape(-1, 4)
    m = (mask[..., 0] > 0).astype(np.float32)[..., None]
    if has_mask:
        overlay = image * (1 - 0.55 * m) + np.array([255, 40, 40], np.float32) * 0.55 * m
        overlay = (overlay * (0.5 + 0.5 * m) + 0 * (1 - m)).astype(np.uint8)
    else:
        overlay = (image * 0.35).astype(np.uint8)
    left, s, ox, oy = _fit(image, tile)
    right, _, _, _ = _fit(overlay, tile)
    for canvas in (left, right):
        draw = ImageDraw.Draw(canvas)
        for x0, y0, x1, y1 in boxes:
            draw.rectangle(
                [ox + x0 * s, oy + y0 * s, ox + x1 * s - 1, oy + y1 * s - 1],
                outline=(255, 230, 0),
                width=2,
            )
    if not has_mask:
        ImageDraw.Draw(right).text((4, 4), "no mask", fill=(255, 255, 255))
    return left, right


def save_preview(
    elements, path, tile: int = 160, columns: int = 4, title_key: str = "source_id"
) -> str:
    """Writes a PNG grid of `(image + boxes, mask overlay)` pairs, `columns` pairs per row (atomic).

    A band of column titles on top ("photo + boxes", "mask overlay") says what each column is;
    each pair is captioned with its `title_key` (the file name)."""
    from PIL import Image, ImageDraw

    elements = list(elements)
    if not elements:
        raise ValueError("elements: expected at least one element to preview, got none")
    columns = max(1, min(int(columns), len(elements)))
    rows = (len(elements) + columns - 1) // columns
    label_h, head_h = 14, 16
    cell_w, cell_h = 2 * tile + 6, tile + label_h + 6
    sheet = Image.new("RGB", (columns * cell_w, head_h + rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c in range(columns):
        draw.text((c * cell_w + 2, 2), COLUMN_TITLES[0], fill=(0, 0, 0))
        draw.text((c * cell_w + tile + 2, 2), COLUMN_TITLES[1], fill=(0, 0, 0))
    for i, e in enumerate(elements):
        r, c = divmod(i, columns)
        left, right = preview_tiles(e, tile)
        x, y = c * cell_w, head_h + r * cell_h
        sheet.paste(left, (x, y + label_h))
        sheet.paste(right, (x + tile, y + label_h))
        name = e.get(title_key, "")
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        elif hasattr(name, "numpy"):
            name = name.numpy().decode("utf-8", "replace")
        elif isinstance(name, np.ndarray):
            name = (
                name.item().decode("utf-8", "replace")
                if isinstance(name.item(), bytes)
                else str(name.item())
            )
        draw.text((x + 2, y + 1), str(name)[:40], fill=(0, 0, 0))
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)
    return path
