"""Readers: folder layouts, box sources, mask thresholds and resizing, the dispatcher, bad input."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from indep_seg.data import (
    DataError,
    decode,
    plan_folder,
    read_dataset,
    read_image_folder,
    read_tfrecords,
)

WEIZMANN = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "weizmann_horse"
)


def _save(path, array, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def _photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_folder_with_csv_boxes_mask_boxes_and_whole_image_fallback(tmp_path):
    img = tmp_path / "images"
    a, b, c = _photo(30, 40, 0), _photo(20, 20, 1), _photo(10, 12, 2)
    _save(str(img / "a.png"), a)
    _save(str(img / "b.png"), b)
    _save(str(img / "c.png"), c)
    # no boxes.csv, no mask: the whole image is the box
    els = list(read_image_folder(img).as_numpy_iterator())
    assert [e["source_id"] for e in els] == [b"a.png", b"b.png", b"c.png"]
    np.testing.assert_array_equal(els[1]["boxes"], [[0, 0, 20, 20]])
    assert (
        not els[1]["has_mask"] and els[1]["mask"].shape == (20, 20, 1) and not els[1]["mask"].any()
    )
    # with boxes.csv, photos without a row (and without a mask) are left out and listed
    (img / "boxes.csv").write_text("filename,x0,y0,x1,y1\na.png,1,2,11,12\na.png,5,5,40,30\n")
    with pytest.warns(UserWarning, match=r"2 photo\(s\) of .* have no row in .*boxes.csv"):
        els = list(read_image_folder(img, boxes_csv=img / "boxes.csv").as_numpy_iterator())
    assert [e["source_id"] for e in els] == [b"a.png"]
    np.testing.assert_array_equal(els[0]["image"], a)
    np.testing.assert_array_equal(els[0]["boxes"], [[1, 2, 11, 12], [5, 5, 40, 30]])
    plan = plan_folder(img, None, img / "boxes.csv")
    assert [os.path.basename(p) for p in plan.unboxed] == ["b.png", "c.png"] and not plan.problems
    # no photo has a row: one clear error, not an empty dataset
    (img / "boxes.csv").write_text("filename,x0,y0,x1,y1\n")
    with pytest.raises(DataError, match=r"boxes.csv: 3 photo\(s\) .* no photo to read"):
        read_image_folder(img, boxes_csv=img / "boxes.csv")


def test_masks_thresholded_resized_photo_and_scaled_boxes(tmp_path):
    photo = _photo(30, 40)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:50] = 250
    mask[0, 0] = 100  # below 127: background (JPEG-like noise)
    _save(str(tmp_path / "rgb" / "h1.png"), photo)
    _save(str(tmp_path / "figure_ground" / "h1.png"), mask)
    (e,) = read_dataset(tmp_path).as_numpy_iterator()
    assert e["has_mask"] and e["image"].shape == (60, 80, 3) and e["mask"].shape == (60, 80, 1)
    np.testing.assert_array_equal(e["mask"][..., 0], (mask > 127).astype(np.uint8))
    np.testing.assert_array_equal(e["boxes"], [[20, 10, 50, 30]])  # the mask's tight box
    ref = tf.image.resize(photo.astype(np.float32), [60, 80], antialias=True).numpy()
    np.testing.assert_array_equal(e["image"], np.clip(np.round(ref), 0, 255).astype(np.uint8))
    # CSV boxes are in the photo's pixels and are scaled to the mask's size.
    (tmp_path / "boxes.csv").write_text("h1.png,2,3,12,13\n")
    (e,) = read_dataset(tmp_path).as_numpy_iterator()
    np.testing.assert_array_equal(e["boxes"], [[4, 6, 24, 26]])


def test_zero_one_masks_are_class_ids():
    m = tf.constant([[[0], [1]], [[1], [0]]], tf.uint8)
    np.testing.assert_array_equal(decode.binarize_mask(m).numpy(), m.numpy())
    m255 = tf.constant([[[0], [128]], [[127], [255]]], tf.uint8)
    np.testing.assert_array_equal(decode.binarize_mask(m255).numpy()[..., 0], [[0, 1], [0, 1]])


def test_large_jpeg_is_decoded_with_dct_scaling_to_the_mask_size(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(small).resize((640, 480), Image.NEAREST))
    _save(str(tmp_path / "images" / "p.jpg"), big, quality=95)
    _save(str(tmp_path / "masks" / "p.png"), np.full((60, 80), 255, np.uint8))
    (e,) = read_dataset(tmp_path).as_numpy_iterator()
    assert e["image"].shape == (60, 80, 3)
    ref = np.asarray(Image.fromarray(small).resize((80, 60), Image.BOX)).astype(int)
    # DCT-scaled (ratio 4) then antialiased resize stays close to an exact box-filter downsampling.
    assert np.abs(e["image"].astype(int) - ref)[8:-8, 8:-8].mean() < 12


def test_dispatcher_specs_and_shard_policies(tmp_path):
    DATA, FILE = (
        tf.data.experimental.AutoShardPolicy.DATA,
        tf.data.experimental.AutoShardPolicy.FILE,
    )
    syn = read_dataset("synthetic:3", synthetic_size=40)
    assert syn.cardinality().numpy() == 3
    assert syn.options().experimental_distribute.auto_shard_policy == DATA
    _save(str(tmp_path / "imgs" / "x.png"), _photo(8, 8))
    ds = read_dataset(tmp_path / "imgs")
    assert ds.options().experimental_distribute.auto_shard_policy == DATA
    for spec in ("tfds:", "synthetic:many", 42):
        with pytest.raises(ValueError, match="spec"):
            read_dataset(spec)
    with pytest.raises(DataError, match="no such folder"):
        read_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="not prepared"):
        read_dataset("tfds:image_mask_folder", tfds_data_dir=str(tmp_path / "tfds"))
    # TFRecords: FILE policy from 8 shards on, DATA below.
    from indep_seg.data.example import make_example

    png = tf.io.encode_png(_photo(4, 4)).numpy()
    for n, policy in ((2, DATA), (8, FILE)):
        for i in range(n):
            with tf.io.TFRecordWriter(str(tmp_path / f"r{n}-{i:05d}-of-{n:05d}.tfrecord")) as w:
                w.write(make_example(png, "png", 4, 4, f"{i}").SerializeToString())
        ds = read_dataset(str(tmp_path / f"r{n}-*.tfrecord"))
        assert ds.options().experimental_distribute.auto_shard_policy == policy
        assert len(list(ds)) == n


def test_incomplete_shard_set_is_refused(tmp_path):
    for i in (0, 2):
        (tmp_path / f"s-{i:05d}-of-00003.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match="incomplete shard set.*s-00001-of-00003"):
        read_tfrecords(str(tmp_path / "s-*.tfrecord"))
    with pytest.raises(DataError, match="no TFRecord files match"):
        read_tfrecords(str(tmp_path / "none-*.tfrecord"))


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_file(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(DataError, match=r"empty.*empty folder"):
        read_image_folder(d)

    d = tmp_path / "dup"
    _save(str(d / "a.png"), _photo(8, 8))
    _save(str(d / "a.jpg"), _photo(8, 8))
    with pytest.raises(DataError, match=r"a\.(png|jpg).*duplicate name"):
        read_image_folder(d)

    d = tmp_path / "trunc"
    _save(str(d / "t.jpg"), _photo(64, 64), quality=90)
    raw = (d / "t.jpg").read_bytes()
    (d / "t.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t\.jpg: truncated JPEG"):
        read_image_folder(d)

    d = tmp_path / "notimg"
    d.mkdir()
    (d / "n.png").write_text("this is not an image")
    with pytest.raises(DataError, match=r"n\.png: not a readable image"):
        read_image_folder(d)

    d = tmp_path / "aspect"
    _save(str(d / "images" / "p.png"), _photo(30, 40))
    _save(str(d / "masks" / "p.png"), np.zeros((40, 40), np.uint8))
    with pytest.raises(DataError, match=r"images/p\.png: mask .*masks/p\.png is 40x40.*40x30"):
        read_dataset(d)


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.png,0,0,20,5\n", r"boxes\.csv row 1: box .*a\.png lies outside the 10x8 image"),
        ("filename,x0,y0,x1,y1\na.png,3,3,3,6\n", r"boxes\.csv row 2: empty box"),
        ("a.png,1,1,4\n", r"boxes\.csv row 1: expected 5 fields"),
        (
            "filename,x0,y0,x1,y1\na.png,1,1,4,4\na.png,1,x,4,4\n",
            r"boxes\.csv row 3: coordinates are not numbers",
        ),
        ("b.png,1,1,4,4\n", r"boxes\.csv row 1: b\.png is not an image"),
    ],
)
def test_bad_csv_rows_name_the_row(tmp_path, rows, message):
    _save(str(tmp_path / "a.png"), _photo(8, 10))
    (tmp_path / "boxes.csv").write_text(rows)
    with pytest.raises(DataError, match=message):
        read_image_folder(tmp_path, boxes_csv=tmp_path / "boxes.csv")


@pytest.mark.skipif(
    not os.path.isdir(WEIZMANN), reason="../shared/datasets/weizmann_horse is absent"
)
def test_weizmann_layout_reads_with_photos_resized_to_masks():
    ds = read_dataset(WEIZMANN)
    e = next(iter(ds.take(1).as_numpy_iterator()))
    assert e["source_id"] == b"horse001.jpg" and e["image"].shape == (232, 315, 3)
    assert e["has_mask"] and 0.05 < e["mask"].mean() < 0.6
    x0, y0, x1, y1 = e["boxes"][0]
    assert e["mask"][int(y0) : int(y1), int(x0) : int(x1)].sum() == e["mask"].sum()
