"""indep_seg.hoc: image reading, estimates, patch extraction geometry, disk / inpainted
backgrounds."""

import numpy as np
import pytest
from PIL import Image

from indep_seg.hoc import (
    disk_background,
    estimate_from_image,
    extract_patches,
    inpaint_background,
    load_image,
    otsu_threshold,
    rescale_image,
)
from indep_seg.hoc.estimate import foreground_components, half_maximum_areas, layers_and_padding
from indep_seg.hoc.patches import disk_mask, random_patch_dataset


def _blobs(h=96, w=96, centres=((20, 20), (60, 30), (40, 70)), r=6, level=0.8, bg=0.05):
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), bg, np.float32)
    for x, y in centres:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = level
    return np.repeat(img[..., None], 3, -1)


def test_extract_patches_geometry_without_resize():
    img = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    p = extract_patches(img, window=10, resolution=10, stride=5, flips=False)
    # rows y = 0, 5, 10; cols x = 0, 5, 10, 15, 20
    assert p.shape == (3 * 5, 10, 10, 3)
    np.testing.assert_array_equal(p[0], img[:10, :10])
    np.testing.assert_array_equal(p[1], img[:10, 5:15])
    np.testing.assert_array_equal(p[5 + 2], img[5:15, 10:20])


def test_extract_patches_flips_and_resize():
    img = np.zeros((8, 8, 3), np.float32)
    img[:4, :4] = 1.0  # top-left quadrant white
    p = extract_patches(img, window=8, resolution=2, stride=8, flips=True)
    assert p.shape == (4, 2, 2, 3)
    # area resize 8 -> 2: each output pixel averages a 4x4 block
    np.testing.assert_allclose(p[0, ..., 0], [[1, 0], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(p[1, ..., 0], [[0, 1], [0, 0]], atol=1e-6)  # horizontal flip
    np.testing.assert_allclose(p[2, ..., 0], [[0, 0], [1, 0]], atol=1e-6)  # vertical flip
    np.testing.assert_allclose(p[3, ..., 0], [[0, 0], [0, 1]], atol=1e-6)  # both


def test_rescale_image_scale():
    img = np.ones((60, 90, 3), np.float32) * 0.5
    s = rescale_image(img, window=30, resolution=10)
    assert s.shape == (20, 30, 3)
    np.testing.assert_allclose(s, 0.5, atol=1e-6)


@pytest.mark.parametrize("window", [40, 41, 100])
def test_window_larger_than_image_is_a_clear_error(window):
    img = np.zeros((40, 30, 3), np.float32)
    with pytest.raises(ValueError, match=r"window: .*smaller than the window"):
        extract_patches(img, window=window, resolution=16)
    with pytest.raises(ValueError, match="window"):
        rescale_image(img, window=window, resolution=16)


def test_disk_background_default_radius_and_values():
    patches = np.ones((2, 64, 64, 3), np.float32)
    bg = disk_background(patches)
    c = 31.5
    yy, xx = np.mgrid[:64, :64]
    inside = (yy - c) ** 2 + (xx - c) ** 2 <= 20.0**2
    assert np.all(bg[:, inside] == 0)
    assert np.all(bg[:, ~inside] == 1)
    # radius scales with the resolution: 20/64 of it
    small = disk_background(np.ones((1, 32, 32, 3), np.float32))
    assert abs((small[0, ..., 0] == 0).sum() - np.pi * 10**2) < 0.1 * np.pi * 10**2
    assert disk_mask(4, 0).sum() == 0  # radius 0, centre between pixels: no pixel
    assert disk_mask(5, 0).sum() == 1  # radius 0, centre on a pixel: that pixel


def test_disk_background_tensor_input():
    import tensorflow as tf

    bg = disk_background(tf.ones((1, 16, 16, 3)), radius=4)
    assert float(tf.reduce_sum(1 - bg[0, ..., 0])) == pytest.approx(disk_mask(16, 4).sum())


def test_inpaint_background_removes_instances_keeps_background():
    img = _blobs()
    out = inpaint_background(img, seed=0)
    assert out.shape == img.shape
    assert out.max() < 0.2  # no bright instance left
    np.testing.assert_allclose(out[0:5, 80:95], img[0:5, 80:95])  # far background untouched


def test_otsu_and_estimates():
    img = _blobs(r=6)
    t = otsu_threshold(img[..., 0])
    assert 0.05 < t < 0.8
    est = estimate_from_image(img)
    assert est.instance_width == pytest.approx(
        13, abs=2
    )  # the disk is 13 px wide; Otsu edges shave ~1 px
    assert est.window == round(1.5 * est.instance_width)
    # Otsu + 3x3 opening keeps the disk minus its corners: about pi r^2
    assert est.median_area == pytest.approx(np.pi * 36, rel=0.2)
    assert est.coverage == pytest.approx(3 * np.pi * 36 / 96**2, rel=0.2)
    assert est.a == pytest.approx(est.median_area / est.window**2)
    # a flat disk's half-maximum extent is the disk itself, as Otsu's is
    assert est.median_area == pytest.approx(est.otsu_median_area, rel=0.2)
    assert est.background == "inpaint" and not est.dense


def test_estimate_constant_image_is_a_clear_error():
    with pytest.raises(ValueError, match="no foreground"):
        estimate_from_image(np.zeros((32, 32, 3), np.float32))


def test_layers_and_padding_density():
    # dense (paper): density >= N gives p ~ R/2
    n, p = layers_and_padding(10.0, 64, num_layers=10)
    assert (n, p) == (10, 32)
    # sparse: N q = density with q = (R / 2p)^2
    n, p = layers_and_padding(1.5, 32)
    assert n == 5
    assert n * min(1, 32 / (2 * p)) ** 2 == pytest.approx(1.5, rel=0.1)


def test_random_patch_dataset_shapes_and_disk():
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    ds = random_patch_dataset(img, 16, 4, background="disk", seed=1)
    b = next(iter(ds))
    assert b["real"].shape == (4, 16, 16, 3) and b["background"].shape == (4, 16, 16, 3)
    assert float(np.asarray(b["background"])[:, 8, 8].max()) == 0.0


@pytest.mark.parametrize(
    "mode,dtype,maxval",
    [
        ("L", np.uint8, 255),
        ("RGBA", np.uint8, 255),
        ("I;16", np.uint16, 65535),
        ("LA", np.uint8, 255),
    ],
)
def test_load_image_modes(tmp_path, mode, dtype, maxval):
    h, w = 12, 10
    if mode == "RGBA":
        arr = np.zeros((h, w, 4), dtype)
        arr[..., 0] = maxval
        arr[..., 3] = maxval
        arr[0, 0, 3] = 0  # transparent pixel -> black
    elif mode == "LA":
        arr = np.full((h, w, 2), maxval, dtype)
    else:
        arr = np.full((h, w), maxval // 2, dtype)
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    (Image.fromarray(arr) if mode == "I;16" else Image.fromarray(arr, mode=mode)).save(path)
    out = load_image(path)
    assert out.shape == (h, w, 3) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    if mode == "RGBA":
        np.testing.assert_allclose(out[1, 1], [1, 0, 0])
        np.testing.assert_allclose(out[0, 0], [0, 0, 0])
    elif mode in ("L", "I;16"):
        np.testing.assert_allclose(out, (maxval // 2) / maxval, atol=1e-3)


def test_load_image_16bit_partial_range_is_stretched(tmp_path):
    arr = np.zeros((8, 8), np.uint16)
    arr[0, 0] = 4000  # a 12-bit camera
    Image.fromarray(arr).save(tmp_path / "cam.png")
    assert load_image(tmp_path / "cam.png").max() == pytest.approx(4000 / 4095, abs=1e-4)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)


def test_half_maximum_areas_do_not_depend_on_brightness():
    """Mesas I = bg + P clip(2 (R - r) / R, 0, 1) (a plateau of radius R/2, a linear rim to R): the
    half-maximum contour is r = 3R/4 whatever P (area 9 pi R^2 / 16), while one global Otsu
    threshold t keeps r < R (1 - t / 2P): a dim instance loses its rim."""
    h = w = 120
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 0.05, np.float32)
    R = 16
    for (x, y), p in zip(((30, 30), (90, 30), (30, 90), (90, 90)), (0.9, 0.8, 0.35, 0.3)):
        r = np.hypot(xx - x, yy - y)
        img += (p * np.clip(2 * (R - r) / R, 0, 1)).astype(np.float32)
    _, labels, otsu_areas, _ = foreground_components(img, smooth_sigma=0.0)
    assert len(otsu_areas) == 4
    half = half_maximum_areas(img, labels, smooth_sigma=0.0, reach=8)
    assert half == pytest.approx(np.full(4, 9 * np.pi * R * R / 16), rel=0.05)
    assert otsu_areas.max() / otsu_areas.min() > 1.3  # Otsu: the dim mesas shrink
    assert half_maximum_areas(img, np.zeros_like(labels)).shape == (0,)


def _noisy_bright_and_dim(seed=0):
    """Background 0.07 + noise 0.02, three bright discs (0.8) and three dim ones (0.2)."""
    rng = np.random.default_rng(seed)
    bright = _blobs(h=128, w=128, centres=((20, 20), (60, 30), (100, 100)), r=7, level=0.8, bg=0.0)
    dim = _blobs(h=128, w=128, centres=((30, 90), (90, 40), (64, 64)), r=7, level=0.2, bg=0.0)
    img = 0.07 + np.maximum(bright, dim) + rng.normal(0, 0.02, (128, 128, 1)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def test_significant_foreground_finds_dim_instances_otsu_misses():
    from indep_seg.hoc.estimate import significant_foreground

    img = _noisy_bright_and_dim()
    fg = significant_foreground(img)
    otsu = foreground_components(img)[0]
    for x, y in ((30, 90), (90, 40), (64, 64)):  # the dim discs
        assert fg[y, x] and not otsu[y, x]
    assert fg[20, 20] and fg[100, 100]
    assert fg[5:12, 40:50].mean() < 0.05  # background stays background


def test_inpaint_background_removes_dim_instances_too():
    img = _noisy_bright_and_dim()
    out = inpaint_background(img, seed=0)
    for x, y in ((30, 90), (90, 40), (64, 64), (20, 20)):
        assert (
            abs(float(out[y - 3 : y + 4, x - 3 : x + 4].mean()) - 0.07) < 0.02
        )  # filled at background level


def test_instance_contrast_range_spans_dim_to_bright():
    from indep_seg.hoc.estimate import instance_contrast_range

    rng = np.random.default_rng(1)
    levels = [0.5, 0.6, 0.7]
    img = np.full((64, 200, 3), 0.1, np.float32)
    for i, lv in enumerate(levels):
        img[26:38, 10 + 40 * i : 22 + 40 * i] = lv
    img = np.clip(img + rng.normal(0, 0.005, img.shape), 0, 1).astype(np.float32)
    low, high = instance_contrast_range(img, smooth_sigma=0.0, upper_percentile=100)
    assert high == pytest.approx(0.6, abs=0.01)  # brightest minus background
    assert otsu_threshold(img[..., 0]) < 0.45  # every square above Otsu
    fg_mean = np.mean(levels)
    assert low == pytest.approx(0.25 * (fg_mean - 0.1), abs=0.01)
    with pytest.raises(ValueError, match="constant"):
        instance_contrast_range(np.full((8, 8, 3), 0.5, np.float32))
