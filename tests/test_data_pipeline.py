"""box_crop_pipeline: crop geometry, black outside the image, per-box elements, augmentation,
determinism."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.data import box_crop_pipeline, read_synthetic


def _element(image, mask, boxes, sid="x"):
    return {
        "image": tf.constant(image, tf.uint8),
        "mask": tf.constant(mask, tf.uint8),
        "has_mask": tf.constant(True),
        "boxes": tf.constant(boxes, tf.float32),
        "source_id": tf.constant(sid),
    }


def _scene():
    """60x80 blue image with a red object (left half) / green (right half) at rows 20:40, cols
    10:50."""
    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 2] = 255
    image[20:40, 10:30] = (255, 0, 0)
    image[20:40, 30:50] = (0, 255, 0)
    mask = np.zeros((60, 80, 1), np.uint8)
    mask[20:40, 10:50] = 1
    return image, mask


def _ds(elements):
    return (
        tf.data.Dataset.from_tensors(elements[0])
        if len(elements) == 1
        else tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda *t: tf.stack(t), *elements)
        )
    )


def test_box_crop_is_the_box_resized():
    image, mask = _scene()
    ds = tf.data.Dataset.from_tensors(_element(image, mask, [[10, 20, 50, 40]]))
    # 20 output pixels over a 40x20 box: samples at x = 10.5 + 2i, y = 20 + i (pixel centres),
    # exact.
    (e,) = box_crop_pipeline(ds, 20, supersample=1).as_numpy_iterator()
    assert e["image"].shape == (20, 20, 3) and e["image"].dtype == np.float32
    np.testing.assert_allclose(e["mask"], 1.0)
    np.testing.assert_allclose(
        e["image"][:, :10], np.broadcast_to([1, 0, 0], (20, 10, 3)), atol=1e-6
    )
    np.testing.assert_allclose(
        e["image"][:, 10:], np.broadcast_to([0, 1, 0], (20, 10, 3)), atol=1e-6
    )
    # With antialiasing (supersample 2) the edge rows blend in the background, as resampling should.
    (e,) = box_crop_pipeline(ds, 16).as_numpy_iterator()
    assert e["mask"][1:-1].min() == 1.0 and 0.85 < e["mask"][0].min() < 1.0
    np.testing.assert_array_equal(e["box"], [10, 20, 50, 40])
    np.testing.assert_array_equal(e["window"], [10, 20, 50, 40])


def test_square_margin_window_and_black_outside_the_image():
    image, mask = _scene()
    ds = tf.data.Dataset.from_tensors(_element(image, mask, [[10, 20, 50, 40]]))
    (e,) = box_crop_pipeline(ds, 24, margin=0.25, square=True).as_numpy_iterator()
    # half-side 0.75 * 40 = 30 around (30, 30): window [0, 0, 60, 60], 2.5 px per output pixel.
    np.testing.assert_allclose(e["window"], [0, 0, 60, 60])
    m = e["mask"][..., 0]
    assert m[9:15, 5:19].min() > 0.99 and m[:7].max() < 0.01 and m[:, :3].max() < 0.01
    # Corner object: the window leaves the image, filled with black (no reflection).
    image2 = np.full((40, 40, 3), 200, np.uint8)
    mask2 = np.zeros((40, 40, 1), np.uint8)
    mask2[0:10, 0:20] = 1
    ds2 = tf.data.Dataset.from_tensors(_element(image2, mask2, [[0, 0, 20, 10]]))
    (e2,) = box_crop_pipeline(ds2, 30, margin=0.25, square=True, supersample=1).as_numpy_iterator()
    np.testing.assert_allclose(e2["window"], [-5, -10, 25, 20])
    np.testing.assert_allclose(e2["image"][:10], 0.0, atol=1e-6)
    np.testing.assert_allclose(e2["image"][:, :5], 0.0, atol=1e-6)
    np.testing.assert_allclose(e2["image"][11:, 6:], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(e2["mask"][11:19, 6:24], 1.0)


def test_one_element_per_box_in_order():
    image, mask = _scene()
    ds = tf.data.Dataset.from_tensors(
        _element(image, mask, [[10, 20, 30, 40], [30, 20, 50, 40], [0, 0, 8, 8]])
    )
    els = list(box_crop_pipeline(ds, 8).as_numpy_iterator())
    assert len(els) == 3
    np.testing.assert_allclose(els[0]["image"][..., 0], 1.0)  # red half
    np.testing.assert_allclose(els[1]["image"][..., 1], 1.0)  # green half
    np.testing.assert_allclose(els[2]["image"][..., 2], 1.0)  # blue background
    assert els[2]["mask"].max() == 0.0


def test_augmentation_keeps_image_and_mask_aligned_and_flips():
    image, mask = _scene()
    ds = tf.data.Dataset.from_tensors(_element(image, mask, [[10, 20, 50, 40]])).repeat(24)
    els = list(
        box_crop_pipeline(ds, 32, margin=0.1, augment=True, jitter=0.1, seed=3).as_numpy_iterator()
    )
    flipped = 0
    for e in els:
        m = e["mask"][..., 0]
        fg, bg = m > 0.99, m < 0.01
        assert fg.sum() > 100 and bg.sum() > 50
        assert e["image"][..., 2][fg].max() < 0.01  # no blue background under the mask
        assert e["image"][..., 2][bg].min() > 0.99  # only background outside it
        cols = np.nonzero(fg.any(axis=0))[0]
        left = e["image"][:, cols[0] + 1][fg[:, cols[0] + 1]]
        flipped += int(left[:, 1].mean() > 0.5)  # green on the left: flipped
    assert 4 <= flipped <= 20
    # Jitter moves and scales the window: the masks are not all the same.
    assert np.std([e["mask"].mean() for e in els]) > 0.005


def test_deterministic_under_a_seed_and_cache_changes_nothing():
    ds = read_synthetic(num_images=6, seed=0, size=48)

    def run(seed, cache):
        p = box_crop_pipeline(
            ds, 16, augment=True, batch_size=4, shuffle_buffer=6, seed=seed, cache=cache, repeat=2
        )
        return [b["image"] for b in p.as_numpy_iterator()]

    a, b, c = run(1, False), run(1, True), run(2, False)
    assert len(a) == 3  # 12 crops in batches of 4
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_batches_have_static_shapes_with_drop_remainder():
    ds = read_synthetic(num_images=5, seed=0, size=40)
    p = box_crop_pipeline(ds, 12, batch_size=2, drop_remainder=True)
    assert p.element_spec["image"].shape.as_list() == [2, 12, 12, 3]
    assert p.element_spec["mask"].shape.as_list() == [2, 12, 12, 1]
    assert len(list(p)) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resolution=2), "resolution"),
        (dict(resolution=16, jitter=0.9), "jitter"),
        (dict(resolution=16, batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        box_crop_pipeline(read_synthetic(2, size=40), **kwargs)
    with pytest.raises(ValueError, match="missing keys"):
        box_crop_pipeline(tf.data.Dataset.range(3), 16)


def test_background_crops_avoid_the_boxes_and_keep_the_box_window_size():
    from indep_seg.data import background_crop_pipeline

    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 2] = 255
    image[20:40, 30:50] = (255, 0, 0)  # the object, inside its box
    mask = np.zeros((60, 80, 1), np.uint8)
    mask[20:40, 30:50] = 1
    ds = tf.data.Dataset.from_tensors(_element(image, mask, [[30, 20, 50, 40]]))
    els = list(background_crop_pipeline(ds, 10, repeat=12, seed=0).as_numpy_iterator())
    assert len(els) == 12
    windows = np.array([e["window"] for e in els])
    np.testing.assert_allclose(windows[:, 2] - windows[:, 0], 20, atol=1e-4)
    np.testing.assert_allclose(windows[:, 3] - windows[:, 1], 20, atol=1e-4)
    for e in els:
        x0, y0, x1, y1 = e["window"]
        assert x1 <= 30 + 1e-4 or x0 >= 50 - 1e-4 or y1 <= 20 + 1e-4 or y0 >= 40 - 1e-4
        assert 0 <= x0 and x1 <= 80 + 1e-4 and 0 <= y0 and y1 <= 60 + 1e-4
        np.testing.assert_allclose(e["image"][..., 2], 1.0)  # only background
    assert len({tuple(np.round(w)) for w in windows}) > 4  # new places every epoch
    # A box too large to leave room for a background window: dropped, not faked.
    big = tf.data.Dataset.from_tensors(_element(image, mask, [[5, 5, 75, 55]]))
    assert list(background_crop_pipeline(big, 8)) == []
