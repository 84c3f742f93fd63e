"""Auto-sharding seen by real workers: two processes on 127.0.0.1 under MultiWorkerMirroredStrategy
(TF_CONFIG) read the library's TFRecords through `read_tfrecords` (files written by
`tfrecords_tools.converters.convert_folder`, ids = `source_id`, the photo's file name) and through
the trainers' stream `image_dataset` (files written by `write_image_shards`, id = the constant pixel
value of each image), distributed with `strategy.experimental_distribute_dataset`, one pass each.

With >= 8 files (FILE) every worker reads whole files; with fewer (DATA) each reads every other
element of the one global stream; in both the workers' ids are disjoint and cover every record.
This file is also the workers' script: `python tests/test_distributed_file_sharding.py worker
DATA_DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _workers import start_workers, wait_workers

GLOBAL_BATCH = 2  # one element per worker per step: DATA sharding gives every other element
R = 4  # image_dataset's image size
# name: (reader, files, records per file); >= 8 files -> FILE, fewer -> DATA
CASES = {
    "tfrecords_file": ("read_tfrecords", 9, 2),
    "tfrecords_data": ("read_tfrecords", 3, 4),
    "stream_file": ("image_dataset", 8, 3),
    "stream_data": ("image_dataset", 3, 4),
}


# ----------------------------------------------------------------------------- data (test process)


def _write_tfrecords(directory, num_files, per_file):
    """`num_files` shards of tiny PNG photos named `pNN.png` (their `source_id`)."""
    from PIL import Image

    from indep_seg.tfrecords_tools.converters import convert_folder

    photos = directory / "photos"
    photos.mkdir(parents=True)
    for i in range(num_files * per_file):
        Image.fromarray(np.full([6, 5, 3], i, np.uint8)).save(photos / f"p{i:02d}.png")
    summary = convert_folder(
        photos, directory / "rec", num_shards=num_files, workers=1, progress=False
    )
    return summary.shards


def _write_image_shards(directory, num_files, per_file):
    """`num_files` image shards; image k is the constant k (its id)."""
    from indep_seg.data.image_stream import write_image_shards

    images = (np.full([R, R, 3], k, np.uint8) for k in range(num_files * per_file))
    return write_image_shards(images, directory, resolution=R, records_per_shard=per_file)[
        "image_files"
    ]


def _ids_of_batch(reader, batch):
    """The record ids in one (local) batch of a case's dataset."""
    if reader == "read_tfrecords":
        return [s.decode() for s in batch.numpy()]
    return [str(int(v)) for v in np.round(batch.numpy().mean(axis=(1, 2, 3)) * 255)]


def _dataset(reader, files):
    """The dataset the workers distribute: global batches of ids (tfrecords) or images."""
    if reader == "read_tfrecords":
        from indep_seg.data.readers import read_tfrecords

        return read_tfrecords(files).map(lambda e: e["source_id"]).batch(GLOBAL_BATCH)
    from indep_seg.data.image_stream import image_dataset

    # the trainers' infinite stream; no shuffle, so one pass is records / GLOBAL_BATCH steps
    return image_dataset(files, GLOBAL_BATCH, resolution=R, shuffle_buffer=0, prefetch=None)


def _ids_by_file(reader, files):
    """Each file's record ids, read file by file (the truth the workers are checked against)."""
    import tensorflow as tf

    if reader == "read_tfrecords":
        from indep_seg.data.example import parse_example

        parse = parse_example
    else:
        from indep_seg.data.box_seg_stream import parse_background_record

        parse = parse_background_record(R)
    out = {}
    for f in files:
        ds = tf.data.TFRecordDataset(f).map(parse)
        if reader == "read_tfrecords":
            ds = ds.map(lambda e: e["source_id"])
        out[f] = [i for b in ds.batch(64) for i in _ids_of_batch(reader, b)]
    return out


def _global_order(reader, files, records):
    """The ids of one pass of the undistributed dataset, in order."""
    ds = _dataset(reader, files).take(records // GLOBAL_BATCH)
    return [i for b in ds for i in _ids_of_batch(reader, b)]


# ----------------------------------------------------------------------------- worker script


def _worker(data_dir):
    """One worker: every case's dataset distributed over the cluster, one pass; the ids seen go
    to `DATA_DIR/seen<task index>.json`."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cases = json.loads((Path(data_dir) / "cases.json").read_text())
    seen = {}
    for name, case in cases.items():
        reader, files, records = case["reader"], case["files"], case["records"]
        dist = strategy.experimental_distribute_dataset(_dataset(reader, files))
        steps = records // GLOBAL_BATCH if reader == "image_dataset" else None  # infinite stream
        ids = []
        for step, batch in enumerate(dist):
            if step == steps:
                break
            for local in strategy.experimental_local_results(batch):
                ids += _ids_of_batch(reader, local)
        seen[name] = ids
    index = strategy.cluster_resolver.task_id
    (Path(data_dir) / f"seen{index}.json").write_text(json.dumps(seen))
    print(json.dumps({"worker": index, "replicas": strategy.num_replicas_in_sync}))


# ----------------------------------------------------------------------------- the test


@pytest.mark.slow
def test_two_workers_read_whole_files_with_8_or_more_else_every_other_element(tmp_path):
    from indep_seg.data.readers import MIN_FILES_FOR_FILE_SHARDING

    cases = {}
    for name, (reader, num_files, per_file) in CASES.items():
        write = _write_tfrecords if reader == "read_tfrecords" else _write_image_shards
        files = write(tmp_path / name, num_files, per_file)
        assert len(files) == num_files
        cases[name] = {"reader": reader, "files": files, "records": num_files * per_file}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    procs, logs = start_workers(tmp_path, [__file__, "worker", tmp_path])
    results = wait_workers(tmp_path, procs, logs, timeout_s=180)
    assert [(r["worker"], r["replicas"]) for r in results] == [(0, 2), (1, 2)]
    seen = [json.loads((tmp_path / f"seen{i}.json").read_text()) for i in range(2)]

    for name, case in cases.items():
        reader, files = case["reader"], case["files"]
        by_file = _ids_by_file(reader, files)
        every = [i for ids in by_file.values() for i in ids]
        assert len(set(every)) == case["records"]
        w0, w1 = (set(s[name]) for s in seen)
        assert len(w0) == len(seen[0][name]) and len(w1) == len(seen[1][name]), name  # no repeats
        assert w0 and w1 and not (w0 & w1), f"{name}: workers share records {sorted(w0 & w1)}"
        assert w0 | w1 == set(every), f"{name}: records read by no worker"
        if len(files) >= MIN_FILES_FOR_FILE_SHARDING:  # FILE: each file read by one worker, whole
            for w, ids in ((0, w0), (1, w1)):
                split = [
                    Path(f).name for f, fi in by_file.items() if 0 < len(ids & set(fi)) < len(fi)
                ]
                assert not split, f"{name}: worker {w} read part of {split}"
        else:  # DATA: worker i reads elements i, i + 2, ... of the one global stream
            order = _global_order(reader, files, case["records"])
            assert sorted(order) == sorted(every)
            assert [seen[0][name], seen[1][name]] == [order[0::2], order[1::2]], name


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(sys.argv[2])
