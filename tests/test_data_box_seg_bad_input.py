"""`indep-seg train` (box_seg) on bad TFRecords: one error line naming the file, exit 2, and none
of the run's box shards half written (issue #18)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from indep_seg.cli import main
from indep_seg.data.example import make_example


def _png(rng, h=24, w=30):
    return tf.io.encode_png(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).numpy()


def _records(path, n, rng, bad_at=None):
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(n):
            if i == bad_at:  # no image/encoded, height, width: not a record box_seg can use
                ex = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image/source_id": tf.train.Feature(
                                bytes_list=tf.train.BytesList(value=[b"x"])
                            )
                        }
                    )
                )
            else:
                ex = make_example(_png(rng), "png", 24, 30, f"im{i}", boxes=[[4, 3, 20, 18]])
            w.write(ex.SerializeToString())
    return path


def _train(data, run, capsys):
    code = main(
        [
            "train",
            "--experiment",
            "box_seg_tiny",
            "--data",
            str(data),
            "--model-dir",
            str(run),
            "--steps",
            "1",
        ]
    )
    out = capsys.readouterr()
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    return code, lines, out.err


def _nothing_half_written(run):
    leftovers = [
        p
        for p in run.rglob("*")
        if p.is_file() and (".tmp-" in p.name or p.suffix == ".tfrecord" or p.name == "shards.json")
    ]
    assert not leftovers, leftovers
    assert not (run / "adversarial" / "checkpoints").exists()


def test_record_without_the_keys_box_seg_needs_names_the_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = _records(tmp_path / "set-00000-of-00002.tfrecord", 3, rng)
    bad = _records(tmp_path / "set-00001-of-00002.tfrecord", 3, rng, bad_at=1)
    code, lines, err = _train(tmp_path / "set-*.tfrecord", tmp_path / "run", capsys)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and str(bad) in lines[0] and str(good) not in lines[0], lines
    assert "image/encoded" in lines[0] and "indep-seg tfrecords" in lines[0]
    _nothing_half_written(tmp_path / "run")


def test_truncated_shard_names_the_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = _records(tmp_path / "t-00000-of-00001.tfrecord", 4, rng)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last record's data cut short
    code, lines, err = _train(path, tmp_path / "run", capsys)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and str(path) in lines[0] and "truncated or corrupt" in lines[0], lines
    _nothing_half_written(tmp_path / "run")


def test_glob_matching_nothing_names_the_pattern(tmp_path, capsys):
    pattern = tmp_path / "nothing" / "train-*.tfrecord"
    code, lines, err = _train(pattern, tmp_path / "run", capsys)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and f"{pattern}: no TFRecord files match" in lines[0], lines
    _nothing_half_written(tmp_path / "run")
