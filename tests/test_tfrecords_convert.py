"""Converters: round trips files -> TFRecords -> dataset, shard names, atomicity, --skip-bad,
patches, inspect."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from indep_seg.data import DataError, read_dataset, read_tfrecords
from indep_seg.tfrecords_tools import (
    convert_folder,
    convert_masks,
    convert_patches,
    inspect_tfrecords,
    patch_windows,
)


def _save(path, array, **kw):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(array).save(str(path), **kw)


def _dataset(root, n=5, jpeg_first=False):
    """n PNG photos (varied sizes) + 0/255 masks; photo 'p1' is 2x smaller than its mask."""
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(n):
        h, w = 20 + 4 * i, 30 + 2 * i
        photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[2 + i : h - 3, 4 : w - 5 - i] = 255
        name = f"p{i}"
        if i == 1:
            photo = photo[::2, ::2].copy()
        ext = "jpg" if (jpeg_first and i == 0) else "png"
        _save(root / "images" / f"{name}.{ext}", photo, **({"quality": 90} if ext == "jpg" else {}))
        _save(root / "masks" / f"{name}.png", mask)
        arrays[f"{name}.{ext}"] = (photo, mask)
    return arrays


def test_round_trip_masks_folder_gives_identical_pixels_masks_and_boxes(tmp_path):
    _dataset(tmp_path / "data", n=5, jpeg_first=True)
    (tmp_path / "data" / "boxes.csv").write_text("p2.png,1,2,20,15\np2.png,3,3,9,9\n")
    summary = convert_masks(
        tmp_path / "data" / "images",
        tmp_path / "data" / "masks",
        tmp_path / "out" / "train",
        boxes_csv=tmp_path / "data" / "boxes.csv",
        num_shards=2,
        progress=False,
    )
    assert summary.records == 5 and not summary.skipped
    assert [os.path.basename(s) for s in summary.shards] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        os.path.basename(s) for s in summary.shards
    )
    assert summary.bytes == sum(os.path.getsize(s) for s in summary.shards)
    from_files = list(read_dataset(tmp_path / "data").as_numpy_iterator())
    from_records = list(
        read_tfrecords(str(tmp_path / "out" / "train-*.tfrecord")).as_numpy_iterator()
    )
    # Shards are interleaved in parallel: records come in a fixed order, not file order.
    from_records.sort(key=lambda e: e["source_id"])
    assert [e["source_id"] for e in from_records] == [
        b"p0.jpg",
        b"p1.png",
        b"p2.png",
        b"p3.png",
        b"p4.png",
    ]
    for a, b in zip(from_files, from_records):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
        assert a["has_mask"] and b["has_mask"]
    # PNG photos at their mask's size come back bit-exact from the original files.
    arrays = {
        f"p{i}.png": np.asarray(Image.open(tmp_path / "data" / "images" / f"p{i}.png"))
        for i in (2, 3, 4)
    }
    for e in from_records[2:]:
        np.testing.assert_array_equal(e["image"], arrays[e["source_id"].decode()])
    np.testing.assert_allclose(from_records[2]["boxes"], [[1, 2, 20, 15], [3, 3, 9, 9]], atol=1e-3)
    m = np.asarray(Image.open(tmp_path / "data" / "masks" / "p3.png"))
    np.testing.assert_array_equal(from_records[3]["mask"][..., 0], (m > 127).astype(np.uint8))
    rows, cols = np.nonzero(m)
    np.testing.assert_allclose(
        from_records[3]["boxes"],
        [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]],
        atol=1e-3,
    )
    # The resized photo (p1) is stored as PNG, the JPEG (p0) keeps its original bytes.
    raw = tf.data.TFRecordDataset(summary.shards[0]).take(2)
    from indep_seg.data.example import parse_example

    fmts = [parse_example(r)["format"].numpy() for r in raw]
    assert fmts == [b"jpeg", b"png"]
    first = parse_example(next(iter(tf.data.TFRecordDataset(summary.shards[0]))))
    assert first["encoded"].numpy() == (tmp_path / "data" / "images" / "p0.jpg").read_bytes()


def test_folder_without_masks_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    _save(tmp_path / "f" / "a.png", a)
    _save(tmp_path / "f" / "b.bmp", a[::-1].copy())
    # without boxes.csv every photo is written, with the whole photo as its box
    summary = convert_folder(tmp_path / "f", tmp_path / "r", progress=False)
    els = list(read_tfrecords(summary.shards).as_numpy_iterator())
    np.testing.assert_array_equal(els[0]["image"], a)
    np.testing.assert_array_equal(els[1]["image"], a[::-1])  # BMP re-encoded losslessly as PNG
    assert not els[0]["has_mask"] and not els[1]["mask"].any()
    np.testing.assert_array_equal(els[1]["boxes"], [[0, 0, 9, 12]])  # no box: whole image
    assert summary.unboxed == 0
    # with boxes.csv a photo without a row is left out and counted, as in a flat training folder
    (tmp_path / "f" / "boxes.csv").write_text("a.png,0,0,9,12\n")
    summary = convert_folder(
        tmp_path / "f", tmp_path / "r2", boxes_csv=tmp_path / "f" / "boxes.csv", progress=False
    )
    els = list(read_tfrecords(summary.shards).as_numpy_iterator())
    assert len(els) == 1 and summary.records == 1 and summary.unboxed == 1
    np.testing.assert_allclose(els[0]["boxes"], [[0, 0, 9, 12]], atol=1e-4)
    assert "1 photo(s) without a boxes.csv row are not written" in summary.format()
    assert summary.to_dict()["unboxed"] == 1


def test_failure_leaves_no_shard_and_skip_bad_counts(tmp_path):
    _dataset(tmp_path / "d", n=4)
    raw = (tmp_path / "d" / "images" / "p2.png").read_bytes()
    (tmp_path / "d" / "images" / "p2.png").write_bytes(raw[: len(raw) // 2])
    _save(tmp_path / "d" / "masks" / "p3.png", np.zeros((50, 10), np.uint8))  # other aspect ratio
    out = tmp_path / "o"
    with pytest.raises(DataError, match=r"p2\.png: truncated PNG"):
        convert_masks(
            tmp_path / "d" / "images",
            tmp_path / "d" / "masks",
            out / "x",
            num_shards=2,
            progress=False,
        )
    assert not out.exists() or os.listdir(out) == []
    summary = convert_masks(
        tmp_path / "d" / "images",
        tmp_path / "d" / "masks",
        out / "x",
        num_shards=2,
        skip_bad=True,
        progress=False,
    )
    assert summary.records == 2
    assert sorted(os.path.basename(f) for f, _ in summary.skipped) == ["p2.png", "p3.png"]
    reasons = " ".join(r for _, r in summary.skipped)
    assert "truncated" in reasons and "aspect" in reasons
    assert "skipped 2" in summary.format()
    assert sorted(os.listdir(out)) == ["x-00000-of-00002.tfrecord", "x-00001-of-00002.tfrecord"]
    with pytest.raises(DataError, match="already exist"):
        convert_masks(
            tmp_path / "d" / "images",
            tmp_path / "d" / "masks",
            out / "x",
            skip_bad=True,
            progress=False,
        )
    summary = convert_masks(
        tmp_path / "d" / "images",
        tmp_path / "d" / "masks",
        out / "x",
        num_shards=1,
        skip_bad=True,
        overwrite=True,
        progress=False,
    )
    assert os.listdir(out) == ["x-00000-of-00001.tfrecord"]


def test_a_record_that_fails_mid_run_removes_the_temporary_shards(tmp_path):
    from indep_seg.tfrecords_tools.writer import write_sharded

    def bad():
        raise DataError("z.png: does not decode")

    tasks = [("a", lambda: b"a"), ("b", lambda: b"b"), ("z.png", bad), ("c", lambda: b"c")]
    with pytest.raises(DataError, match="z.png"):
        write_sharded(tasks, tmp_path / "s", 2, workers=2, progress=False)
    assert os.listdir(tmp_path) == []
    summary = write_sharded(tasks, tmp_path / "s", 2, workers=2, skip_bad=True, progress=False)
    assert summary.records == 3 and summary.skipped == [("z.png", "does not decode")]
    got = [r.numpy() for s in summary.shards for r in tf.data.TFRecordDataset(s)]
    assert got == [b"a", b"b", b"c"]


def test_patches_cover_the_image_and_keep_pixels(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    labels = np.zeros((50, 70), np.uint16)
    labels[5:15, 5:15] = 1
    labels[30:45, 50:65] = 300
    _save(tmp_path / "big.png", image)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    corners = patch_windows(50, 70, 32, 16)
    assert corners == [(y, x) for y in (0, 16, 18) for x in (0, 16, 32, 38)]
    summary = convert_patches(
        tmp_path / "big.png",
        tmp_path / "p" / "patch",
        32,
        16,
        mask_path=tmp_path / "labels.png",
        num_shards=3,
        progress=False,
    )
    assert summary.records == len(corners) and len(summary.shards) == 3
    els = {e["source_id"]: e for e in read_tfrecords(str(tmp_path / "p")).as_numpy_iterator()}
    assert len(els) == len(corners)
    for y, x in corners:
        e = els[f"big.png#y={y},x={x}".encode()]
        np.testing.assert_array_equal(e["image"], image[y : y + 32, x : x + 32])
        np.testing.assert_array_equal(
            e["mask"][..., 0], (labels[y : y + 32, x : x + 32] > 0).astype(np.uint8)
        )
        np.testing.assert_allclose(e["boxes"], [[0, 0, 32, 32]])
    with pytest.raises(DataError, match="window"):
        convert_patches(tmp_path / "big.png", tmp_path / "q" / "p", 64, 8, progress=False)


def test_inspect_counts_and_writes_a_png(tmp_path):
    _dataset(tmp_path / "d", n=3)
    convert_masks(
        tmp_path / "d" / "images",
        tmp_path / "d" / "masks",
        tmp_path / "o" / "x",
        num_shards=2,
        progress=False,
    )
    report = inspect_tfrecords(
        str(tmp_path / "o" / "x-*"), png_path=tmp_path / "prev.png", num_preview=2
    )
    assert (
        report["records"] == 3
        and report["files"] == 2
        and report["with_mask"] == 3
        and report["boxes"] == 3
    )
    assert Image.open(tmp_path / "prev.png").size[0] > 300
    json.dumps(report)


WEIZMANN = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "weizmann_horse"
)


@pytest.mark.skipif(
    not os.path.isdir(WEIZMANN), reason="../shared/datasets/weizmann_horse is absent"
)
def test_weizmann_photos_round_trip_through_tfrecords(tmp_path):
    import shutil

    names = [
        "horse001.jpg",
        "horse065.jpg",
        "horse317.jpg",
    ]  # 800x590 -> 315x232, 1280x960 -> 283x212, 288x288 -> 195x195
    for sub in ("rgb", "figure_ground"):
        os.makedirs(tmp_path / "w" / sub)
        for n in names:
            shutil.copy(os.path.join(WEIZMANN, sub, n), tmp_path / "w" / sub / n)
    summary = convert_masks(
        tmp_path / "w" / "rgb",
        tmp_path / "w" / "figure_ground",
        tmp_path / "r" / "h",
        progress=False,
    )
    assert summary.records == 3 and len(summary.shards) == 1
    ref = {e["source_id"]: e for e in read_dataset(tmp_path / "w").as_numpy_iterator()}
    got = {e["source_id"]: e for e in read_tfrecords(summary.shards).as_numpy_iterator()}
    assert sorted(got) == sorted(n.encode() for n in names)
    for k, e in got.items():
        mask_size = Image.open(os.path.join(WEIZMANN, "figure_ground", k.decode())).size
        assert e["image"].shape[:2] == (mask_size[1], mask_size[0])
        np.testing.assert_array_equal(e["image"], ref[k]["image"])
        np.testing.assert_array_equal(e["mask"], ref[k]["mask"])
        np.testing.assert_allclose(e["boxes"], ref[k]["boxes"], atol=1e-3)


def test_patch_windows_cover_every_pixel_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 60), st.integers(1, 60), st.integers(1, 60), st.integers(1, 70))
    def check(h, w, window, stride):
        if window > min(h, w):
            with pytest.raises(ValueError, match="window"):
                patch_windows(h, w, window, stride)
            return
        covered = np.zeros((h, w), bool)
        corners = patch_windows(h, w, window, stride)
        assert len(set(corners)) == len(corners)
        for y, x in corners:
            assert 0 <= y <= h - window and 0 <= x <= w - window
            covered[y : y + window, x : x + window] = True
        # Every pixel is covered when windows overlap or touch (stride > window samples sparsely,
        # but the last window still reaches the far edges).
        assert covered.all() if stride <= window else (covered[-1, -1] and covered[0, 0])

    check()


def test_stale_temporaries_of_a_killed_run_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from indep_seg.tfrecords_tools.writer import write_sharded

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"s-00000-of-00002.tfrecord.tmp-{dead.pid}"
    live = tmp_path / f"s-00001-of-00002.tfrecord.tmp-{os.getppid()}"
    stale.write_bytes(b"half")
    live.write_bytes(b"writing")
    summary = write_sharded(
        [("a", lambda: b"a"), ("b", lambda: b"b")], tmp_path / "s", 2, progress=False
    )
    assert not stale.exists() and live.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(
        [live.name] + [os.path.basename(s) for s in summary.shards]
    )


def test_overwrite_removes_the_old_set_before_renaming(tmp_path, monkeypatch):
    """A kill between two renames of an overwrite must leave an incomplete set, never a complete
    mix of old and new shards: simulated by failing the second rename."""
    from indep_seg.tfrecords_tools import writer

    tasks = [("a", lambda: b"a"), ("b", lambda: b"b")]
    writer.write_sharded(tasks, tmp_path / "s", 2, progress=False)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies here
        return real_replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", replace)
    new = [("x", lambda: b"x"), ("y", lambda: b"y")]
    with pytest.raises(KeyboardInterrupt):
        writer.write_sharded(new, tmp_path / "s", 2, overwrite=True, progress=False)
    monkeypatch.setattr(writer.os, "replace", real_replace)
    with pytest.raises(DataError, match="incomplete shard set"):
        read_tfrecords(str(tmp_path / "s-*.tfrecord"))
