"""The box shards' batched steps give what the per-box rules give (issues #18, #20).

`make_crops` crops a photo's boxes in one compiled call; it must give exactly the floats of the
eager per-box crop rule (`box_window` + `crop_to_window`), for photos of any size, without
retracing. `Reservoir` must draw exactly the sample of Algorithm R as it was written before.
"""

import numpy as np
import tensorflow as tf

from indep_seg.box_crop import box_window, crop_to_window
from indep_seg.data.box_seg_stream import Reservoir, reservoir_sample
from indep_seg.training.experiments.box_seg import _group_by_photo, _photo_crop_fn, make_crops


def _items(seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for k, (h, w) in enumerate([(37, 52), (80, 61), (45, 45)]):
        photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for j in range(2 if k == 1 else 1):  # the second photo has two boxes (two csv rows)
            x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            box = [x0, y0, x0 + rng.uniform(4, w / 2), y0 + rng.uniform(4, h / 2)]
            items.append((f"p{k}#{j}", photo, box))
    return items


def _eager_crop(image, box, resolution, margin):
    img = tf.convert_to_tensor(np.asarray(image, np.float32)[None] / 255.0)
    window = box_window(np.asarray([box], np.float32), margin, False)
    return crop_to_window(img, window, resolution).numpy()[0]


def test_make_crops_equals_the_eager_crop_rule_box_by_box():
    items = _items()
    for margin in (0.0, 0.2):
        got = make_crops(items, 16, margin)
        want = np.stack([_eager_crop(im, b, 16, margin) for _, im, b in items])
        assert got.shape == (4, 16, 16, 3) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_make_crops_compiles_once_for_photos_of_any_size():
    crop = _photo_crop_fn(12, 0.1)
    make_crops(_items(1), 12, 0.1)
    make_crops(_items(2), 12, 0.1)
    assert crop.experimental_get_tracing_count() == 1


def test_group_by_photo_joins_consecutive_boxes_of_one_photo_only():
    a, b = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    items = [("a#1", a, [0, 0, 1, 1]), ("a#2", a, [1, 1, 2, 2]), ("b", b, [0, 0, 2, 2])]
    items.append(("a#3", a, [2, 2, 3, 3]))  # the same photo again, after another: a new group
    groups = _group_by_photo(items)
    assert [len(boxes) for _, boxes in groups] == [2, 1, 1]
    assert groups[0][0] is a and groups[1][0] is b and groups[2][0] is a
    assert groups[0][1] == [[0, 0, 1, 1], [1, 1, 2, 2]]


def _algorithm_r(values, count, seed):
    """The sampler as box_seg wrote it before `Reservoir` (the reference)."""
    rng = np.random.default_rng(seed)
    sample = []
    for n, value in enumerate(values, start=1):
        if len(sample) < count:
            sample.append(value)
        else:
            j = int(rng.integers(0, n))
            if j < count:
                sample[j] = value
    return sample


def test_reservoir_draws_the_sample_of_algorithm_r():
    for seed in (0, 3):
        for count, n in ((5, 3), (5, 40), (1, 17)):
            want = _algorithm_r(range(n), count, seed)
            assert reservoir_sample(range(n), count, seed) == want
            r = Reservoir(count, seed)
            for v in range(n):
                slot = r.slot()  # only the kept values need to be built
                if slot is not None:
                    r.put(slot, v)
            assert r.items == want
    assert len(set(reservoir_sample(range(1000), 50, 1))) == 50
