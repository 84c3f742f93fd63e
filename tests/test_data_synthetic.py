"""The embedded synthetic dataset: determinism, exact masks and boxes, statistics, files,
clusters."""

import colorsys
import os

import numpy as np
import pytest

from indep_seg.data import synthetic


def _tight_box(mask):
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def test_same_seed_and_index_give_identical_images_in_any_order():
    a = [synthetic.generate_example(i, seed=3, size=64) for i in (0, 1, 2)]
    b = [synthetic.generate_example(i, seed=3, size=64) for i in (2, 1, 0)][::-1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
        np.testing.assert_array_equal(x["boxes"], y["boxes"])
    other = synthetic.generate_example(0, seed=4, size=64)
    assert np.abs(other["image"].astype(int) - a[0]["image"].astype(int)).mean() > 5


def test_masks_are_exact_and_boxes_are_their_tight_boxes_with_partial_fill():
    shapes = set()
    for i in range(40):
        e = synthetic.generate_example(i, seed=0, size=96)
        assert e["image"].shape == (96, 96, 3) and e["image"].dtype == np.uint8
        assert e["mask"].shape == (96, 96, 1) and set(np.unique(e["mask"])) <= {0, 1}
        box = e["boxes"][0]
        assert list(box) == _tight_box(e["mask"][..., 0] > 0)
        x0, y0, x1, y1 = (int(v) for v in box)
        fill = e["mask"][y0:y1, x0:x1].mean()
        assert synthetic.FILL_RANGE[0] - 0.02 <= fill <= synthetic.FILL_RANGE[1] + 0.02, (
            i,
            e["shape"],
            fill,
        )
        # Background pixels remain around the box: the box never covers the whole image.
        assert (x1 - x0) * (y1 - y0) < 0.5 * 96 * 96
        shapes.add(e["shape"])
    assert len(shapes) >= 5


def test_objects_are_more_saturated_than_backgrounds():
    obj_sat, bg_sat = [], []
    for i in range(20):
        e = synthetic.generate_example(i, seed=1, size=64)
        hsv = np.array(
            [colorsys.rgb_to_hsv(*p) for p in e["image"].reshape(-1, 3) / 255.0]
        ).reshape(64, 64, 3)
        m = e["mask"][..., 0] > 0
        obj_sat.append(hsv[..., 1][m].mean())
        bg_sat.append(hsv[..., 1][~m].mean())
    assert np.mean(obj_sat) > np.mean(bg_sat) + 0.2


def test_read_synthetic_matches_generate_example():
    ds = synthetic.read_synthetic(num_images=3, seed=5, size=48)
    for i, e in enumerate(ds.as_numpy_iterator()):
        ref = synthetic.generate_example(i, seed=5, size=48)
        np.testing.assert_array_equal(e["image"], ref["image"])
        np.testing.assert_array_equal(e["mask"], ref["mask"])
        np.testing.assert_array_equal(e["boxes"], ref["boxes"])
        assert e["has_mask"] and e["source_id"] == f"synthetic-5-{i:06d}.png".encode()


def test_written_files_read_back_identically(tmp_path):
    from indep_seg.data import read_dataset

    paths = synthetic.write_synthetic_dataset(tmp_path / "syn", num_images=4, seed=2, size=40)
    assert sorted(os.listdir(paths["images"])) == [f"{i:06d}.png" for i in range(4)]
    rows = open(paths["boxes_csv"]).read().splitlines()
    assert rows[0] == "filename,x0,y0,x1,y1" and len(rows) == 5
    for i, e in enumerate(read_dataset(tmp_path / "syn").as_numpy_iterator()):
        ref = synthetic.generate_example(i, seed=2, size=40)
        np.testing.assert_array_equal(e["image"], ref["image"])
        np.testing.assert_array_equal(e["mask"], ref["mask"])
        np.testing.assert_array_equal(e["boxes"], ref["boxes"])
    assert not [f for f in os.listdir(paths["images"]) if ".tmp-" in f]


def test_cluster_image_has_many_similar_non_overlapping_instances(tmp_path):
    image, labels = synthetic.make_cluster_image(size=128, num_objects=25, radius=5.0, seed=0)
    assert image.shape == (128, 128, 3) and labels.dtype == np.uint16
    ids = np.unique(labels)[1:]
    assert list(ids) == list(range(1, len(ids) + 1)) and len(ids) >= 20
    areas = np.bincount(labels.ravel())[1:]
    assert areas.min() > 0.3 * np.pi * 25 and areas.max() < 3.0 * np.pi * 25
    grey = image.mean(axis=-1)
    assert grey[labels > 0].mean() > grey[labels == 0].mean() + 60
    paths = synthetic.write_cluster_image(tmp_path, size=64, num_objects=5, radius=4.0, seed=1)
    from PIL import Image

    back = np.asarray(Image.open(paths["instances"]))
    ref_image, ref_labels = synthetic.make_cluster_image(64, 5, 4.0, 1)
    np.testing.assert_array_equal(back, ref_labels)
    np.testing.assert_array_equal(np.asarray(Image.open(paths["image"])), ref_image)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(index=-1), "index"), (dict(index=0, size=8), "size"), (dict(index=1.5), "index")],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.generate_example(**kwargs)
