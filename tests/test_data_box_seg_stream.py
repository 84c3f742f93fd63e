"""indep_seg.data.box_seg_stream: the box-level trainer's shards and the tf.data stream over
them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.data import DataError
from indep_seg.data.box_seg_stream import (
    MANIFEST,
    box_seg_dataset,
    read_box_seg_shards,
    sample_box_records,
    write_box_seg_shards,
)

R = 8


def _chunks(n_chunks=3, per_chunk=5, seed=0, prior=True):
    rng = np.random.default_rng(seed)
    for c in range(n_chunks):
        crops = rng.integers(0, 256, (per_chunk, R, R, 3), dtype=np.uint8)
        priors = (rng.random((per_chunk, R, R, 1)) > 0.5).astype(np.float32) if prior else None
        yield {
            "crops": crops,
            "source_ids": [f"c{c}#{i}" for i in range(per_chunk)],
            "priors": priors,
            "areas": np.full(per_chunk, 0.1 * (c + 1), np.float32) if prior else None,
            "backgrounds": rng.integers(0, 256, (2, R, R, 3), dtype=np.uint8),
        }


def _write(tmp_path, records_per_shard=4, **kw):
    return write_box_seg_shards(
        _chunks(**kw),
        tmp_path / "shards",
        resolution=R,
        prior=True,
        area=True,
        records_per_shard=records_per_shard,
        info={"seed": 0},
    )


def test_records_carry_the_priors_score_and_a_threshold_weighs_them(tmp_path):
    """A chunk's `prior_scores` are stored per record; with `prior_threshold` each record parses
    with `"prior_weight"` 1 at or above it, 0 below; without, no weight (every prior counts)."""
    from indep_seg.data.box_seg_stream import parse_box_record

    def scored():
        for c, chunk in enumerate(_chunks()):
            yield {**chunk, "prior_scores": np.array([0.1, 0.2, 0.3, 0.4, 0.5]) + c}

    m = write_box_seg_shards(
        scored(), tmp_path / "s", resolution=R, prior=True, area=True, records_per_shard=4
    )
    records = list(tf.data.TFRecordDataset(m["crop_files"]))
    got = [parse_box_record(R, prior=True, prior_threshold=1.3)(r) for r in records]
    weights = sorted(float(g["prior_weight"]) for g in got)
    assert weights == [0.0] * 7 + [1.0] * 8  # scores 1.3 (exactly) and above
    assert "prior_weight" not in parse_box_record(R, prior=True)(records[0])
    batch = next(
        iter(
            box_seg_dataset(
                m["crop_files"],
                m["background_files"],
                15,
                resolution=R,
                prior=True,
                prior_threshold=1.3,
            )
        )
    )
    assert batch["prior_weight"].shape == (15,) and float(batch["prior_weight"].numpy().sum()) == 8


def test_shards_hold_every_box_and_stream_the_trainers_batches(tmp_path):
    manifest = _write(tmp_path)
    assert manifest["boxes"] == 15 and manifest["backgrounds"] == 6
    assert [f.rsplit("/", 1)[1] for f in manifest["crop_files"]] == [
        f"crops-{i:05d}-of-00004.tfrecord" for i in range(4)
    ]
    assert not list((tmp_path / "shards").glob("*.tmp-*"))
    m = read_box_seg_shards(tmp_path / "shards", info={"seed": 0})
    # every crop comes back exactly (uint8 / 255), with its prior and area
    crops = np.concatenate([c["crops"] for c in _chunks()])
    ds = tf.data.TFRecordDataset(m["crop_files"])
    from indep_seg.data.box_seg_stream import parse_box_record

    got = [parse_box_record(R, prior=True, area=True)(r) for r in ds]
    assert len(got) == 15
    np.testing.assert_allclose(
        np.stack([g["image"].numpy() for g in got]) * 255.0, crops, atol=1e-3
    )
    assert sorted({round(float(g["area"]), 3) for g in got}) == [0.1, 0.2, 0.3]
    batch = next(
        iter(
            box_seg_dataset(
                m["crop_files"],
                m["background_files"],
                6,
                resolution=R,
                seed=1,
                prior=True,
                area=True,
            )
        )
    )
    assert batch["image"].shape == (6, R, R, 3) and batch["background"].shape == (6, R, R, 3)
    assert batch["prior"].shape == (6, R, R, 1) and batch["area"].shape == (6,)
    assert set(np.unique(batch["prior"].numpy())) <= {0.0, 1.0}
    plain = next(iter(box_seg_dataset(m["crop_files"], m["background_files"], 6, resolution=R)))
    assert set(plain) == {"image", "background"}


def test_stream_is_a_function_of_the_seed_and_resumes_exactly(tmp_path):
    m = _write(tmp_path)

    def batches(seed, start=0, n=6):
        ds = box_seg_dataset(
            m["crop_files"],
            m["background_files"],
            4,
            resolution=R,
            seed=seed,
            prior=True,
            area=True,
            shuffle_buffer=8,
            start_batch=start,
        )
        return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]

    a, b = batches(3), batches(3)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    resumed = batches(3, start=4, n=2)  # step 4 of a resumed run = step 4 of an uninterrupted one
    for x, y in zip(a[4:], resumed):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    other = batches(4)
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, other))
    # a crop and its prior are flipped together: the prior of each streamed crop is the stored one
    stored = {}
    from indep_seg.data.box_seg_stream import parse_box_record

    for r in tf.data.TFRecordDataset(m["crop_files"]):
        e = parse_box_record(R, prior=True)(r)
        stored[e["image"].numpy().tobytes()] = e["prior"].numpy()
        stored[e["image"].numpy()[:, ::-1].tobytes()] = e["prior"].numpy()[:, ::-1]
    for batch in a:
        for img, prior in zip(batch["image"], batch["prior"]):
            np.testing.assert_array_equal(stored[img.tobytes()], prior)


def test_auto_shard_policy_follows_the_number_of_files(tmp_path):
    few = _write(tmp_path, records_per_shard=8)  # 2 crop files, 1 background file
    ds = box_seg_dataset(few["crop_files"], few["background_files"], 2, resolution=R)
    assert (
        ds.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.DATA
    )
    many = write_box_seg_shards(
        _chunks(n_chunks=4, per_chunk=5),
        tmp_path / "many",
        resolution=R,
        prior=True,
        area=True,
        records_per_shard=1,
    )
    assert len(many["crop_files"]) == 20 and len(many["background_files"]) == 8
    ds = box_seg_dataset(many["crop_files"], many["background_files"], 2, resolution=R)
    assert (
        ds.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.FILE
    )


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    _write(tmp_path)
    assert read_box_seg_shards(tmp_path / "shards") is not None

    def failing():
        yield from _chunks(n_chunks=1)
        raise DataError("photo7.jpg: cannot decode")

    with pytest.raises(DataError, match="photo7.jpg"):
        write_box_seg_shards(
            failing(), tmp_path / "shards", resolution=R, prior=True, area=True, records_per_shard=2
        )
    assert not list((tmp_path / "shards").glob("*.tmp-*"))
    assert not (tmp_path / "shards" / MANIFEST).exists()  # the old set is no longer offered
    assert read_box_seg_shards(tmp_path / "shards") is None


def test_manifest_checks_settings_and_files(tmp_path):
    _write(tmp_path)
    assert (
        read_box_seg_shards(tmp_path / "shards", info={"seed": 1}) is None
    )  # made with other settings
    m = json.loads((tmp_path / "shards" / MANIFEST).read_text())
    (tmp_path / "shards" / m["crop_files"][1]).unlink()
    assert read_box_seg_shards(tmp_path / "shards") is None


def test_a_truncated_shard_makes_the_set_incomplete(tmp_path):
    m = _write(tmp_path)
    path = m["crop_files"][0]
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2 + 20])  # cut inside a record's data
    assert read_box_seg_shards(tmp_path / "shards") is None  # the trainer writes the set again
    with pytest.raises(tf.errors.DataLossError):  # what reading it would have met
        sample_box_records(m["crop_files"], R, 4)


def test_empty_data_and_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match="no box"):
        write_box_seg_shards(iter([]), tmp_path / "empty", resolution=R, prior=False, area=False)
    assert not list((tmp_path / "empty").glob("*.tfrecord*"))
    with pytest.raises(DataError, match="nothing-here"):
        box_seg_dataset(
            str(tmp_path / "nothing-here-*.tfrecord"), str(tmp_path / "b.tfrecord"), 2, resolution=R
        )


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    (tmp_path / "shards").mkdir()
    stale = tmp_path / "shards" / "crops-00000.tmp-999999"  # what a SIGKILLed writer leaves behind
    stale.write_bytes(b"half a record")
    _write(tmp_path)
    assert not stale.exists() and not list((tmp_path / "shards").glob("*.tmp-*"))
