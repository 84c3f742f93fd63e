"""indep_seg.data.image_stream: ILSGAN's image shards and the tf.data stream over them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.data import DataError
from indep_seg.data.image_stream import (
    centre_square,
    image_dataset,
    read_image_shards,
    sample_image_records,
    write_image_shards,
)

R = 8


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (R, R, 3), dtype=np.uint8) for _ in range(n)]


def test_images_stream_deterministically_and_resume_exactly(tmp_path):
    m = write_image_shards(
        iter(_images(21)), tmp_path / "s", resolution=R, records_per_shard=5, info={"a": 1}
    )
    assert m["images"] == 21 and len(m["image_files"]) == 5
    assert read_image_shards(tmp_path / "s", info={"a": 2}) is None
    stored = {im.tobytes() for im in _images(21)} | {im[:, ::-1].tobytes() for im in _images(21)}

    def batches(seed, start=0, n=8):
        ds = image_dataset(
            m["image_files"], 4, resolution=R, seed=seed, shuffle_buffer=6, start_batch=start
        )
        return [b.numpy() for b in ds.take(n)]

    a = batches(1)
    assert a[0].shape == (4, R, R, 3) and a[0].dtype == np.float32
    for b in a:  # every streamed image is a stored one (or its mirror image), exactly
        for im in b:
            assert np.round(im * 255).astype(np.uint8).tobytes() in stored
    for x, y in zip(a, batches(1)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a[5:], batches(1, start=5, n=3)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, batches(2)))
    policy = (
        image_dataset(m["image_files"], 4, resolution=R)
        .options()
        .experimental_distribute.auto_shard_policy
    )
    assert policy == tf.data.experimental.AutoShardPolicy.DATA  # 5 files < 8
    many = write_image_shards(iter(_images(9)), tmp_path / "m", resolution=R, records_per_shard=1)
    policy = (
        image_dataset(many["image_files"], 2, resolution=R)
        .options()
        .experimental_distribute.auto_shard_policy
    )
    assert policy == tf.data.experimental.AutoShardPolicy.FILE
    sample = sample_image_records(m["image_files"], R, 6, seed=0)
    assert sample.shape == (6, R, R, 3) and len({s.tobytes() for s in sample}) == 6


def test_centre_square_and_failed_writes(tmp_path):
    photo = np.zeros((20, 40, 3), np.uint8)
    photo[:, 10:30] = 255  # the centre square is white
    np.testing.assert_allclose(centre_square(photo, R), 1.0, atol=1e-6)

    def failing():
        yield from _images(3)
        raise DataError("bad.jpg: cannot decode")

    with pytest.raises(DataError, match="bad.jpg"):
        write_image_shards(failing(), tmp_path / "f", resolution=R, records_per_shard=2)
    assert not list((tmp_path / "f").iterdir())
    with pytest.raises(DataError, match="no image"):
        write_image_shards(iter([]), tmp_path / "e", resolution=R)
