"""Counting (indep_seg.hoc.counting): targets from the generator's layers, peaks, whole-image
count."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.hoc import counting
from indep_seg.hoc.evaluate import mask_statistics


def gaussian_blobs(h, w, centres, sigma):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.zeros((h, w), np.float32)
    for x, y in centres:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(img, 0, 1)[..., None], 3, -1)


def oracle_counter():
    """A 'counter' whose heatmap is the gray level: exact on images of unit-peak Gaussian blobs."""
    inp = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 1, use_bias=False)
    model = keras.Model(inp, conv(inp))
    conv.kernel.assign(np.full((1, 1, 3, 1), 1 / 3, np.float32))
    return model


CENTRES = [
    (12, 14),
    (40, 10),
    (70, 20),
    (100, 15),
    (20, 60),
    (55, 50),
    (90, 64),
    (30, 100),
    (80, 105),
]


def test_count_synthetic_image_with_known_number_of_blobs():
    sigma = 3.0
    img = gaussian_blobs(120, 120, CENTRES, sigma)
    res = counting.count_image(oracle_counter(), img, window=32, resolution=32, sigma=sigma)
    assert res["count"] == len(CENTRES)
    assert res["mass"] == pytest.approx(len(CENTRES), abs=0.05)
    found = np.array(res["centres"])
    for x, y in CENTRES:
        assert np.min(np.hypot(found[:, 0] - x, found[:, 1] - y)) <= 1.0


def test_count_rescales_to_the_window():
    """The same blobs at twice the size, counted with a window of 64 (-> 32): same count, centres in
    full-resolution pixels."""
    sigma = 3.0
    img = gaussian_blobs(240, 240, [(2 * x, 2 * y) for x, y in CENTRES], 2 * sigma)
    res = counting.count_image(oracle_counter(), img, window=64, resolution=32, sigma=sigma)
    assert res["count"] == len(CENTRES)
    found = np.array(res["centres"])
    for x, y in CENTRES:
        assert np.min(np.hypot(found[:, 0] - 2 * x, found[:, 1] - 2 * y)) <= 2.0


def test_peaks_strongest_first():
    heat = np.zeros((20, 20))
    heat[5, 5], heat[15, 12], heat[5, 6] = 0.9, 0.6, 0.8
    p = counting.peaks(heat, sigma=1.0, threshold=0.3)
    assert p[:, :2].tolist() == [[5, 5], [12, 15]]


class _FixedGAN:
    """generate() output of two opaque 2x2 blocks, the second covering the first or not."""

    def __init__(self, overlap):
        m = np.zeros((1, 2, 16, 16), np.float32)
        m[0, 0, 4:6, 4:6] = 1
        m[0, 1, 4:6, 4:6] = 1
        shifts = np.array([[[0, 0], [0, 0] if overlap else [6, 2]]], np.int32)
        warped = np.zeros_like(m)
        warped[0, 0, 4:6, 4:6] = 1
        warped[
            0,
            1,
            4 + shifts[0, 1, 1] : 6 + shifts[0, 1, 1],
            4 + shifts[0, 1, 0] : 6 + shifts[0, 1, 0],
        ] = 1
        vis = warped.copy()
        vis[0, 0] *= 1 - warped[0, 1]
        rgba = np.concatenate([np.ones(m.shape + (3,), np.float32), m[..., None]], -1)
        wrgba = np.concatenate([np.ones(m.shape + (3,), np.float32), warped[..., None]], -1)
        self.out = dict(
            layers=tf.constant(rgba),
            warped=tf.constant(wrgba),
            shifts=tf.constant(shifts),
            visibility=tf.constant(vis[..., None]),
        )


def test_centre_targets_from_layers_and_visibility():
    heat, centres, weights = counting.centre_targets(_FixedGAN(overlap=False).out, sigma=1.0)
    np.testing.assert_allclose(centres[0].numpy(), [[4.5, 4.5], [10.5, 6.5]], atol=1e-4)
    np.testing.assert_allclose(weights[0].numpy(), [1, 1])
    assert heat.shape == (1, 16, 16, 1)
    assert float(tf.reduce_sum(heat)) == pytest.approx(2 * 2 * math.pi, rel=0.05)
    # fully hidden under the top layer: the bottom instance does not count
    _, _, weights = counting.centre_targets(_FixedGAN(overlap=True).out, sigma=1.0)
    np.testing.assert_allclose(weights[0].numpy(), [0, 1])


def test_save_load_round_trip(tmp_path):
    c = counting.build_counter(4)
    counting.save_counter(tmp_path / "counter", c, {"window": 20, "resolution": 16, "sigma": 2.0})
    c2, meta = counting.load_counter(tmp_path)  # a model dir holding counter/
    x = np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(c(x), c2(x), atol=1e-6)
    assert meta["window"] == 20
    with pytest.raises(FileNotFoundError, match="no counter found"):
        counting.load_counter(tmp_path / "nothing")


def test_mask_statistics_components_and_area_units():
    m = np.zeros((3, 10, 10), np.float32)
    m[0, 2:5, 2:5] = 1  # one blob of 9 px
    m[1, 0:3, 0:3] = 1
    m[1, 6:9, 6:9] = 1  # two equal blobs: not one dominant component
    st = mask_statistics(m, pixel_scale=4.0)  # m[2] is empty
    assert st["one_object_fraction"] == pytest.approx(1 / 3)
    assert st["empty_fraction"] == pytest.approx(1 / 3)
    assert st["median_area"] == pytest.approx(36.0)  # 9 px x 4 full-resolution px each


def test_jitter_instance_gain_scales_each_instance_and_keeps_masks():
    from indep_seg.composition import composite_layers

    r = 8
    warped = np.zeros((1, 2, r, r, 4), np.float32)
    warped[0, 0, :, :4, :3], warped[0, 0, :, :4, 3] = 0.5, 1.0  # instance 0: left half
    warped[0, 1, :, 4:, :3], warped[0, 1, :, 4:, 3] = 0.4, 1.0  # instance 1: right half
    bg = np.full((1, r, r, 3), 0.1, np.float32)
    comp, extras = composite_layers(warped, background=bg, return_layers=True)
    out = dict(warped=tf.constant(warped), composite=comp, **extras)
    same = counting.jitter_instance_gain(out, bg, 0.0)
    np.testing.assert_allclose(same["composite"], comp, atol=1e-6)
    got = counting.jitter_instance_gain(out, bg, 0.7, seed=tf.constant([3, 4]))
    np.testing.assert_allclose(got["visibility"], extras["visibility"])
    np.testing.assert_allclose(got["warped"][..., 3], warped[..., 3])
    g0 = float(got["composite"][0, 0, 0, 0]) / 0.5
    g1 = float(got["composite"][0, 0, 7, 0]) / 0.4
    for g in (g0, g1):
        assert math.exp(-0.7) - 1e-6 <= g <= math.exp(0.7) + 1e-6
    assert abs(g0 - g1) > 1e-3  # one gain per instance
    np.testing.assert_allclose(got["composite"][0, :, :4], 0.5 * g0, atol=1e-6)  # uniform over it
    np.testing.assert_allclose(got["composite"][0, :, 4:], 0.4 * g1, atol=1e-6)


def test_to_gray_replicates_the_channel_mean():
    x = tf.constant([[[0.3, 0.6, 0.9]]])
    np.testing.assert_allclose(counting.to_gray(x), [[[0.6, 0.6, 0.6]]], atol=1e-6)


def test_dihedral_augment_moves_images_and_targets_together():
    """Each example gets one of the 8 symmetries of the square, the same for its image and its
    target: a bright pixel and its Gaussian stay at the same place; over many draws all 8 occur."""
    from indep_seg.hoc.counting import dihedral_augment

    n, r = 256, 16
    x = np.zeros((n, r, r, 3), np.float32)
    x[:, 3, 11] = 1.0  # an off-centre instance, asymmetric in every way
    yy, xx = np.mgrid[:r, :r]
    heat = (
        np.exp(-((xx - 11) ** 2 + (yy - 3) ** 2) / 2.0)[None, ..., None]
        .repeat(n, 0)
        .astype(np.float32)
    )
    ax, ah = dihedral_augment(tf.constant(x), tf.constant(heat), seed=3)
    ax, ah = ax.numpy(), ah.numpy()
    assert ax.shape == x.shape and ah.shape == heat.shape
    pos_x = [np.unravel_index(np.argmax(a[..., 0]), (r, r)) for a in ax]
    pos_h = [np.unravel_index(np.argmax(h[..., 0]), (r, r)) for h in ah]
    assert pos_x == pos_h
    # the 8 images of (y, x) = (3, 11) under the symmetries of the square
    images = {(3, 11), (3, 4), (12, 11), (12, 4), (11, 3), (4, 3), (11, 12), (4, 12)}
    assert set(pos_x) == images
    np.testing.assert_allclose(
        np.sort(ah.reshape(n, -1), 1), np.sort(heat.reshape(n, -1), 1), atol=1e-30
    )  # TF flushes denormals


def test_match_instance_contrast_sets_each_contrast_keeps_texture_and_holes():
    """Instance contrasts land in [low, high] (log-uniform), the texture's relative shape and the
    masks stay; a layer darker than the background (a generator's hole) is left as it was."""
    from indep_seg.composition import composite_layers

    r, bgv = 8, 0.1
    warped = np.zeros((64, 3, r, r, 4), np.float32)
    warped[:, 0, :, :3, 0] = 0.5
    warped[:, 0, :, :3, 0][:, :, 0] = 0.3  # textured: two levels, contrasts 0.4 and 0.2
    warped[:, 0, :, :3, 3] = 1.0
    warped[:, 1, :, 3:6, 0], warped[:, 1, :, 3:6, 3] = 0.9, 1.0
    warped[:, 2, :, 6:, 0], warped[:, 2, :, 6:, 3] = 0.02, 1.0  # darker than the background
    warped[..., 1] = warped[..., 2] = warped[..., 0]
    bg = np.full((64, r, r, 3), bgv, np.float32)
    comp, extras = composite_layers(warped, background=bg, return_layers=True)
    out = dict(warped=tf.constant(warped), composite=comp, **extras)
    lo, hi = 0.05, 0.5
    got = counting.match_instance_contrast(out, tf.constant(bg), lo, hi, seed=tf.constant([1, 2]))
    c = got["composite"].numpy()[..., 0]
    np.testing.assert_allclose(got["visibility"], extras["visibility"])
    c0 = c[:, :, :3].mean(axis=(1, 2)) - bgv  # mask-weighted mean contrast of layer 0
    c1 = c[:, :, 3:6].mean(axis=(1, 2)) - bgv
    for cc in (c0, c1):
        assert cc.min() >= lo - 1e-5 and cc.max() <= hi + 1e-5
        # log-uniform: about half below the geometric mean of the bounds
        assert 0.3 < np.mean(cc < math.sqrt(lo * hi)) < 0.7
    assert np.corrcoef(c0, c1)[0, 1] < 0.5  # one draw per instance
    ratio = (c[:, :, 0] - bgv).mean(1) / (c[:, :, 1] - bgv).mean(1)  # texture: 0.2 / 0.4
    np.testing.assert_allclose(ratio, 0.5, atol=1e-4)
    np.testing.assert_allclose(c[:, :, 6:], 0.02, atol=1e-6)  # the hole is untouched
    with pytest.raises(ValueError, match="low, high"):
        counting.match_instance_contrast(out, tf.constant(bg), 0.5, 0.1)


def test_gaussian_blur_matches_scipy_per_example():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = rng.random((3, 12, 15, 2)).astype(np.float32)
    sig = np.array([0.5, 1.0, 2.0], np.float32)
    radius = 6
    got = counting.gaussian_blur(tf.constant(x), tf.constant(sig), radius).numpy()
    for b in range(3):
        for ch in range(2):
            ref = ndimage.gaussian_filter(
                x[b, ..., ch].astype(np.float64),
                float(sig[b]),
                mode="reflect",
                truncate=radius / float(sig[b]),
            )
            np.testing.assert_allclose(got[b, ..., ch], ref, atol=1e-5)


def test_blur_augment_identity_without_blur_or_noise_and_keeps_range():
    x = tf.random.stateless_uniform((4, 8, 8, 3), [0, 1])
    np.testing.assert_allclose(counting.blur_augment(x, 0.0, 0.0), x)
    y = counting.blur_augment(x, 1.5, 0.3, seed=5).numpy()
    assert y.shape == x.shape and y.min() >= 0.0 and y.max() <= 1.0
    flat = counting.blur_augment(tf.fill((2, 8, 8, 3), 0.4), 2.0, 0.0).numpy()
    np.testing.assert_allclose(flat, 0.4, atol=1e-6)  # blur keeps a flat image


def test_count_calibrates_by_the_mass_of_one_single_instance():
    """A counter that answers every instance with twice the mass of one target Gaussian (broader
    blobs: sigma sqrt(2) x the counter's) counts 2N raw; calibrated on the image's own single
    instances it counts N. A response outside the limits is not 'corrected'."""
    sigma = 3.0
    img = gaussian_blobs(120, 120, CENTRES, sigma * math.sqrt(2))
    res = counting.count_image(oracle_counter(), img, window=32, resolution=32, sigma=sigma)
    assert res["count_raw"] == pytest.approx(2 * len(CENTRES), rel=0.03)
    assert res["calibration"] == pytest.approx(2.0, rel=0.05)
    assert res["calibration_instances"] == len(CENTRES)
    assert res["count"] == len(CENTRES)
    raw = counting.count_image(
        oracle_counter(), img, window=32, resolution=32, sigma=sigma, calibrate=False
    )
    assert raw["count"] == 2 * len(CENTRES) and raw["calibration"] is None
    capped = counting.count_image(
        oracle_counter(), img, window=32, resolution=32, sigma=sigma, calibration_limits=(0.5, 1.5)
    )
    assert capped["count"] == 2 * len(CENTRES) and capped["calibration"] is None


def test_single_instance_mass_needs_enough_single_instances():
    sigma = 3.0
    img = gaussian_blobs(120, 120, CENTRES[:3], sigma)
    heat = img[..., 0]
    cal, n = counting.single_instance_mass(heat, img, sigma)
    assert cal is None and n == 3
    cal, n = counting.single_instance_mass(heat, img, sigma, min_singles=3)
    assert cal == pytest.approx(1.0, rel=0.03) and n == 3
