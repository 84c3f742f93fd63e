"""The `box_seg` trainer's own stream, FILE-sharded across two real worker processes.

The test process writes the run's box shards as the trainer does (`prepare_box_shards`: 16
synthetic photos with their GrabCut priors and area targets, 2 records per shard: 8 crop files and
8 background files, so the stream's auto-shard policy is FILE). Two processes on 127.0.0.1 under
MultiWorkerMirroredStrategy (TF_CONFIG) then build the batches the trainer fits on
(`_BoxSegRun.dataset_fn`: `box_seg_dataset`, shuffled and flipped as in training) and distribute
them as Keras `fit` does (`strategy.experimental_distribute_dataset`). A record is known by its
pixels up to the stream's horizontal flip. The workers never share a crop or a background, each
file is read by one worker only, and together they read every record. (Fewer than 8 files, DATA
sharding: tests/test_distributed_box_seg.py.) This file is also the workers' script: `python
tests/test_distributed_box_seg_sharding.py worker DIR`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _workers import kill_workers, start_workers, wait_workers

PHOTOS, PER_SHARD, GLOBAL_BATCH = 16, 2, 8
# 320 draws per worker from its 8 crops and its 16 backgrounds: were they random, one would be
# missed with probability 2e-8; the stream is seeded, so the test is deterministic
STEPS = 80


def _config():
    """box_seg_tiny with its box prior and per-image area on, a small global batch."""
    from indep_seg.training.experiments.tiny import box_seg_tiny_config

    return dataclasses.replace(
        box_seg_tiny_config(), prior="grabcut", area_from_prior=True, batch_size=GLOBAL_BATCH
    )


def _record_ids(images) -> list[str]:
    """One id per image of a batch `[B, R, R, 3]` in [0, 1]: a hash of its pixels, the same for
    the image and its mirror image (the stream flips)."""
    out = []
    for im in np.round(np.asarray(images) * 255).astype(np.uint8):
        a, b = im.tobytes(), im[:, ::-1].tobytes()
        out.append(hashlib.sha1(min(a, b)).hexdigest()[:16])
    return out


def _ids_by_file(manifest, key) -> dict:
    """Each crop (`key="crop_files"`) or background file's record ids, read file by file."""
    import tensorflow as tf

    from indep_seg.data.box_seg_stream import parse_background_record, parse_box_record

    r = manifest["resolution"]
    parse = parse_box_record(r) if key == "crop_files" else parse_background_record(r)
    out = {}
    for f in manifest[key]:
        ds = tf.data.TFRecordDataset(f).batch(64).map(parse)
        out[f] = [i for b in ds for i in _record_ids(b["image"] if isinstance(b, dict) else b)]
    return out


# ----------------------------------------------------------------------------- worker script


def _worker(directory):
    """One worker: the trainer's stream of `DIR/box_shards`, distributed, `STEPS` steps; the ids
    of the crops and backgrounds it saw go to `DIR/seen<task index>.json`."""
    import tensorflow as tf

    from indep_seg.data.box_seg_stream import read_box_seg_shards
    from indep_seg.training.experiments.box_seg import _BoxSegRun

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    directory = Path(directory)
    deadline = time.time() + 120  # the test process writes the shards meanwhile
    while read_box_seg_shards(directory / "box_shards") is None and time.time() < deadline:
        time.sleep(0.2)
    run = _BoxSegRun(_config(), None, "box_seg_tiny", {}, print, directory, directory, 0.0)
    run.shards = read_box_seg_shards(directory / "box_shards")
    ds = run.dataset_fn(seed=3)()  # the adversarial phase's stream
    policy = ds.options().experimental_distribute.auto_shard_policy
    seen = {"crops": [], "backgrounds": [], "keys": None}
    for step, batch in enumerate(strategy.experimental_distribute_dataset(ds)):
        if step == STEPS:
            break
        for local in strategy.experimental_local_results(batch):
            seen["keys"] = sorted(local)
            seen["crops"] += _record_ids(local["image"])
            seen["backgrounds"] += _record_ids(local["background"])
            seen["local_batch"] = int(local["image"].shape[0])
    index = strategy.cluster_resolver.task_id
    (directory / f"seen{index}.json").write_text(json.dumps(seen))
    replicas = strategy.num_replicas_in_sync
    print(json.dumps({"worker": index, "replicas": replicas, "policy": policy.name}))


# ----------------------------------------------------------------------------- the test


@pytest.mark.slow
def test_box_seg_stream_from_8_or_more_shards_is_read_by_whole_files_per_worker(tmp_path):
    from indep_seg.data import write_synthetic_dataset
    from indep_seg.data.readers import MIN_FILES_FOR_FILE_SHARDING
    from indep_seg.training.experiments.box_seg import prepare_box_shards

    # the workers start (import TensorFlow) while this process writes the shards they wait for
    procs, logs = start_workers(tmp_path, [__file__, "worker", tmp_path])
    try:
        paths = write_synthetic_dataset(tmp_path / "photos", num_images=PHOTOS, seed=0, size=32)
        manifest = prepare_box_shards(
            paths["images"],
            _config(),
            tmp_path / "box_shards",
            masks=paths["masks"],
            records_per_shard=PER_SHARD,
            log=lambda *a: None,
        )
        assert manifest["prior"] and manifest["area"]
        assert len(manifest["crop_files"]) == len(manifest["background_files"]) == 8
        assert MIN_FILES_FOR_FILE_SHARDING <= 8
    except BaseException:
        kill_workers(procs)
        for log in logs:
            log.close()
        raise
    results = wait_workers(tmp_path, procs, logs, timeout_s=180)
    assert [(r["worker"], r["replicas"], r["policy"]) for r in results] == [
        (0, 2, "FILE"),
        (1, 2, "FILE"),
    ]
    seen = [json.loads((tmp_path / f"seen{i}.json").read_text()) for i in range(2)]
    for s in seen:  # the trainer's batches, each worker holding its half of the global batch
        assert s["keys"] == ["area", "background", "image", "prior"]
        assert s["local_batch"] == GLOBAL_BATCH // 2
    for name, key in (("crops", "crop_files"), ("backgrounds", "background_files")):
        by_file = _ids_by_file(manifest, key)
        every = {i for ids in by_file.values() for i in ids}
        assert len(every) == sum(map(len, by_file.values())), f"{name}: records not distinct"
        w0, w1 = (set(s[name]) for s in seen)
        assert not (w0 & w1), f"{name}: the workers share {len(w0 & w1)} record(s)"
        assert w0 | w1 == every, f"{name}: {len(every - w0 - w1)} record(s) read by no worker"
        for f, ids in by_file.items():  # FILE: a file is read by one worker, whole
            assert set(ids) <= w0 or set(ids) <= w1, f"{name}: {Path(f).name} read by both"


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(sys.argv[2])
