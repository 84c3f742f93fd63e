"""Crash safety (issue 9): SIGKILL during training, during export and during TFRecord writing;
then nothing half-written may be taken as valid, and the restarted command must complete.

- training: `indep-seg train --experiment toy` (the training infrastructure's own subject; every
  trainer uses the same loop and checkpointer) with a checkpoint every few steps, killed twice
  at random moments; every checkpoint the state file lists must be complete and readable, and
  the same command then resumes and finishes at the requested step.
- export: `indep-seg export` when implemented, else `indep_seg.serving.export.export_segmenter`
(what the
  command calls) exporting versions in a loop, killed mid-write; every integer version folder
  must load and answer, and the export must then complete.
- TFRecords: `indep-seg tfrecords folder`, killed once shard files are being written; either no
  shard set or a complete, readable one, and the same command must then complete.
"""

import json
import os
import random
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from reliability_helpers import PY, REPO, child_env, command_status, kill_group, tiny_segmenter

pytestmark = pytest.mark.reliability


def _start(args, log_path):
    log = open(log_path, "w")
    return subprocess.Popen(
        [PY, *args],
        cwd=REPO,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_when(proc, predicate, delay, timeout=180):
    """SIGKILLs `proc` `delay` s after `predicate()` first holds; False if it exited first."""
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            return False
        if time.time() > deadline:
            kill_group(proc)
            proc.wait(timeout=30)
            raise TimeoutError("the condition to kill on never held")
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    kill_group(proc, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return True


# ----------------------------------------------------------------------------- training


def _checkpoint_state(ckdir):
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(ckdir))
    return list(state.all_model_checkpoint_paths) if state else []


def _assert_checkpoints_valid(model_dir):
    import tensorflow as tf

    ckdir = model_dir / "checkpoints"
    listed = _checkpoint_state(ckdir) if ckdir.is_dir() else []
    for i, path in enumerate(listed):
        path = path if os.path.isabs(path) else str(ckdir / path)
        if not os.path.exists(path + ".index"):
            # tf.train.CheckpointManager deletes the oldest checkpoint's files before it rewrites
            # the state file: a kill in between leaves a dangling entry for an OLD checkpoint.
            # Restoring takes the newest readable one, so only the newest must be complete.
            assert i < len(listed) - 1, f"{path}: the newest checkpoint is listed but has no .index"
            continue
        reader = tf.train.load_checkpoint(path)  # raises on a truncated / half-written checkpoint
        names = reader.get_variable_to_shape_map()
        assert any("step" in n for n in names), f"{path}: no step counter in it"
        step = int(reader.get_tensor(next(n for n in names if n.startswith("step/"))))
        assert path.endswith(f"-{step}"), (path, step)
    if (model_dir / "config.yaml").exists():
        import yaml

        assert isinstance(yaml.safe_load((model_dir / "config.yaml").read_text()), dict)
    return listed


def test_sigkill_during_training_then_resume(tmp_path):
    if command_status("train"):
        pytest.skip(command_status("train"))
    model_dir = tmp_path / "run"
    total = 120
    args = [
        "-m",
        "indep_seg",
        "train",
        "--experiment",
        "toy",
        "--model-dir",
        str(model_dir),
        "--steps",
        str(total),
        "--override",
        "checkpoint_every=3",
        "log_every=3",
        "image_every=0",
    ]
    rnd = random.Random(0)
    killed = 0
    for attempt in range(2):
        proc = _start(args, tmp_path / f"train{attempt}.log")
        seen = (
            len(_checkpoint_state(model_dir / "checkpoints"))
            if (model_dir / "checkpoints").is_dir()
            else 0
        )

        def new_checkpoint():
            d = model_dir / "checkpoints"
            return (
                d.is_dir()
                and len(list(d.glob("*.index"))) > 0
                and len(_checkpoint_state(d)) + attempt > seen
            )

        if _kill_when(proc, new_checkpoint, delay=rnd.uniform(0.0, 0.6)):
            killed += 1
        _assert_checkpoints_valid(model_dir)
    assert killed >= 1, "training finished before it could be killed; make the run longer"
    p = subprocess.run(
        [PY, *args], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    final = json.loads(p.stdout.strip().splitlines()[-1])
    assert final["step"] == total
    assert final["resumed_from"] > 0, "the restarted run did not resume from a checkpoint"
    listed = _assert_checkpoints_valid(model_dir)
    assert listed and listed[-1].endswith(f"-{total}")


# ----------------------------------------------------------------------------- export

_EXPORT_LOOP = r"""
import sys, keras, numpy as np
sys.path.insert(0, sys.argv[2])
from reliability_helpers import tiny_segmenter
from indep_seg.serving.export import export_segmenter
seg = tiny_segmenter()
for v in range(1, 1000):
    export_segmenter(seg, sys.argv[1], version=None)
    print("exported", v, flush=True)
"""


def _assert_versions_valid(base, images):
    import tensorflow as tf

    from indep_seg.serving.export import is_saved_model_dir, list_versions

    versions = sorted(
        int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)
    )
    for v in versions:
        d = base / str(v)
        assert is_saved_model_dir(d), f"{d}: an integer version folder without saved_model.pb"
        loaded = tf.saved_model.load(str(d))
        out = loaded.signatures["serving_default"](image=tf.constant(images))["mask"].numpy()
        assert out.shape == images.shape[:3] + (1,) and np.isfinite(out).all()
    assert list_versions(base) == versions
    return versions


def test_sigkill_during_export_then_export_again(tmp_path):
    base = tmp_path / "exports" / "m"
    images = np.random.default_rng(0).random((1, 10, 10, 3), dtype=np.float32)
    via_cli = command_status("export") is None
    if via_cli:
        model_dir = tmp_path / "run"
        tiny_segmenter().save(model_dir / "segmenter")
        args = [
            "-m",
            "indep_seg",
            "export",
            "--model-dir",
            str(model_dir),
            "--export-base",
            str(base),
        ]
    else:
        args = ["-c", _EXPORT_LOOP, str(base), str(REPO / "tests" / "reliability")]
    rnd = random.Random(1)
    killed = 0
    for attempt in range(3):
        proc = _start(args, tmp_path / f"export{attempt}.log")

        def writing():  # a temporary export folder exists: the SavedModel is being written
            return base.is_dir() and any(
                p.name.startswith(".tmp") or "tmp" in p.name for p in base.iterdir()
            )

        if _kill_when(proc, writing, delay=rnd.uniform(0.0, 0.3)):
            killed += 1
        _assert_versions_valid(base, images)
    assert killed >= 1
    before = _assert_versions_valid(base, images)
    if via_cli:
        p = subprocess.run(
            [PY, *args], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300
        )
    else:
        code = (
            "import sys; sys.path.insert(0, sys.argv[2]); from reliability_helpers import "
            "tiny_segmenter; "
            "from indep_seg.serving.export import export_segmenter; "
            "print(export_segmenter(tiny_segmenter(), sys.argv[1]))"
        )
        p = subprocess.run(
            [PY, "-c", code, str(base), str(REPO / "tests" / "reliability")],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    after = _assert_versions_valid(base, images)
    assert len(after) == len(before) + 1 and after[-1] > max(before, default=0)


# ----------------------------------------------------------------------------- TFRecords


def _write_images(folder, n, size=256):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"img{i:04d}.png"
        )


def _assert_shards_valid(prefix, n_images):
    import tensorflow as tf

    shards = sorted(prefix.parent.glob(prefix.name + "-*-of-*.tfrecord"))
    if not shards:
        return 0
    counts = {re.search(r"-of-(\d+)\.tfrecord$", s.name).group(1) for s in shards}
    assert len(counts) == 1, f"mixed shard sets: {shards}"
    assert len(shards) == int(counts.pop()), (
        f"incomplete shard set left behind: {[s.name for s in shards]}"
    )
    records = sum(
        1 for _ in tf.data.TFRecordDataset([str(s) for s in shards])
    )  # DataLossError if truncated
    assert records == n_images, f"{records} records for {n_images} images"
    return len(shards)


def test_sigkill_during_tfrecord_writing_then_rerun(tmp_path):
    if command_status("tfrecords"):
        pytest.skip(command_status("tfrecords"))
    images = tmp_path / "images"
    n = 400
    _write_images(images, n)
    prefix = tmp_path / "out" / "data"
    args = [
        "-m",
        "indep_seg",
        "tfrecords",
        "folder",
        str(images),
        "--out",
        str(prefix),
        "--num-shards",
        "4",
        "--no-progress",
        "--workers",
        "1",
    ]
    (tmp_path / "out").mkdir()

    def writing():
        return any(".tmp" in p.name for p in (tmp_path / "out").iterdir())

    proc = _start(args, tmp_path / "tfrecords.log")
    killed = _kill_when(proc, writing, delay=0.05)
    assert killed, "the conversion finished before it could be killed; use more images"
    complete = _assert_shards_valid(prefix, n)
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]
    # the same command again (with --overwrite only if the kill came after the set was complete)
    p = subprocess.run(
        [PY, *args] + (["--overwrite"] if complete else []),
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert _assert_shards_valid(prefix, n) == 4
    # temporary files of the killed run are named `*.tmp-<pid>`: never read as shards
    from indep_seg.data.readers import resolve_tfrecord_files

    files = resolve_tfrecord_files(str(prefix.parent))
    assert len(files) == 4 and not any(".tmp" in f for f in files), (files, leftovers)
