"""indep_seg.gallery: the one home of the picture tilers (issue #20). The former local tilers are
kept here verbatim as references the shared ones must still equal."""

import math

import numpy as np
import pytest

from indep_seg.gallery import tile_images, tile_rows, titled_grid


def _old_to_grid(rows, border=2):  # indep_seg.models.foreground_seg_gan.to_grid, before
    rows = [np.asarray(r, np.float32) for r in rows]
    rows = [np.repeat(r, 3, -1) if r.shape[-1] == 1 else r for r in rows]
    n, h, w = rows[0].shape[:3]
    grid = np.ones((len(rows) * (h + border) + border, n * (w + border) + border, 3), np.float32)
    for i, r in enumerate(rows):
        for j in range(n):
            y, x = border + i * (h + border), border + j * (w + border)
            grid[y : y + h, x : x + w] = r[j]
    return (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)


def _old_tile_rows(rows, gap=2, min_cell=64):  # indep_seg.models.hoc_gan.tile_rows, before
    rows = [np.clip(np.asarray(r, np.float32), 0, 1) for r in rows]
    k = max(1, int(np.ceil(min_cell / rows[0].shape[1])))
    if k > 1:
        rows = [r.repeat(k, axis=1).repeat(k, axis=2) for r in rows]
    n, h, w = rows[0].shape[:3]
    canvas = np.ones((len(rows) * (h + gap) + gap, n * (w + gap) + gap, 3), np.float32)
    for i, r in enumerate(rows):
        for j in range(min(n, r.shape[0])):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            canvas[y : y + h, x : x + w] = r[j]
    return (canvas * 255 + 0.5).astype(np.uint8)


def _old_image_grid(images, columns=None, padding=1):  # indep_seg.training.loop.image_grid, before
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        arr = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(
            np.uint8
        )
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    n, h, w, _ = arr.shape
    cols = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.zeros((rows * (h + padding) - padding, cols * (w + padding) - padding, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[
            r * (h + padding) : r * (h + padding) + h, c * (w + padding) : c * (w + padding) + w
        ] = arr[i]
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_tile_rows_equals_the_former_to_grid(rng):
    rows = [
        rng.uniform(-0.2, 1.2, (5, 6, 7, 3)),
        rng.uniform(size=(5, 6, 7, 1)),
        rng.uniform(size=(5, 6, 7, 3)),
    ]
    for border in (0, 2, 3):
        np.testing.assert_array_equal(tile_rows(rows, gap=border), _old_to_grid(rows, border))


@pytest.mark.parametrize("min_cell", [0, 16, 64])
def test_tile_rows_equals_the_former_hoc_tile_rows(rng, min_cell):
    rows = [rng.uniform(size=(3, 16, 16, 3)), rng.uniform(size=(3, 16, 16, 3))]
    np.testing.assert_array_equal(
        tile_rows(rows, gap=2, min_cell=min_cell), _old_tile_rows(rows, 2, min_cell)
    )


@pytest.mark.parametrize("n, columns, channels", [(5, 3, 1), (4, None, 3), (7, None, 4), (1, 2, 3)])
def test_tile_images_equals_the_former_loop_image_grid(rng, n, columns, channels):
    images = rng.uniform(-0.1, 1.1, (n, 4, 5, channels)).astype(np.float32)
    images[0, 0, 0] = np.nan
    np.testing.assert_array_equal(tile_images(images, columns), _old_image_grid(images, columns))
    u8 = (rng.uniform(size=(n, 4, 5, channels)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(
        tile_images(u8, columns, padding=2), _old_image_grid(u8, columns, 2)
    )


def test_tile_rows_bad_input_is_named():
    with pytest.raises(ValueError, match="rows: expected at least one row"):
        tile_rows([])
    with pytest.raises(
        ValueError, match=r"rows\[1\]\[0\]: expected a 4x4 tile like the first, got 5x4"
    ):
        tile_rows([np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3))])
    with pytest.raises(ValueError, match="images: expected"):
        tile_images(np.zeros((2, 4, 4, 2)))


def test_titled_grid_has_a_title_band():
    grid = titled_grid([[np.zeros((8, 8, 3), np.uint8)] * 2], ["a", "b"], pad=2, head=16)
    assert grid.shape == (16 + 8 + 4, 2 * 10 + 2, 3)


def test_tile_rows_row_titles(rng):
    """Titles add a band at the left with text in it; the tiles right of it are unchanged."""
    rows = [rng.uniform(size=(2, 8, 8, 3)), rng.uniform(size=(2, 8, 8, 3))]
    plain = tile_rows(rows)
    titled = tile_rows(rows, titles=["image", "mask"])
    band = titled.shape[1] - plain.shape[1]
    assert band == 6 * len("image") + 8 and titled.shape[0] == plain.shape[0]
    np.testing.assert_array_equal(titled[:, band:], plain)
    assert (titled[:, :band] < 128).any()  # ink of the titles on the white band
    with pytest.raises(ValueError, match="titles: expected one per row"):
        tile_rows(rows, titles=["only one"])
