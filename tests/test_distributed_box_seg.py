"""box_seg under tf.distribute with its real features, reading TFRecords.

Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (TF_CONFIG) run
`indep-seg train --experiment box_seg_tiny --strategy multi_worker` on TFRecords written by the
project's converter, with the per-image GrabCut prior and its area targets on and both phases
(adversarial + distillation). Issue #18: this failed at the first step with "Attempt to convert a
value ({'image': PerReplica...}) to a Tensor" (Keras' pre-fit reduce of a dict batch). The workers
must finish, agree on the reduced losses, leave one set of outputs (the chief's), and end where one
device ends on the same global batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest
from _checkpoints import assert_same_checkpoints
from test_distributed_mirrored import ADAM_SIGN_NOISE, _assert_optimizer_slots_close
from test_distributed_multi_worker import _kill, _start_workers, _wait_workers


def _tiny_tfrecords(root: Path, seed: int, shards: int = 2) -> str:
    from indep_seg.data import write_synthetic_dataset
    from indep_seg.tfrecords_tools.converters import convert_masks

    paths = write_synthetic_dataset(root / "photos", num_images=8, seed=seed, size=32)
    convert_masks(
        paths["images"],
        paths["masks"],
        str(root / "records" / "tiny"),
        num_shards=shards,
        workers=1,
        progress=False,
    )
    files = sorted((root / "records").glob("tiny-*-of-*.tfrecord"))
    assert len(files) == shards
    return str(root / "records" / "tiny-*.tfrecord")


FEATURES = [
    "prior=grabcut",
    "area_from_prior=true",
]  # box_seg's default prior, off in the tiny preset


@pytest.mark.slow
def test_box_seg_two_workers_on_tfrecords_match_one_device(tmp_path):
    steps, seed = 4, 3  # 3 adversarial steps (prior + per-image a) + 1 distillation step
    data = _tiny_tfrecords(tmp_path, seed)
    run = tmp_path / "run"
    procs, logs = _start_workers(
        tmp_path,
        run,
        ["--steps", str(steps), "--seed", str(seed), "--data", data, "--override", *FEATURES],
        experiment="box_seg_tiny",
    )
    try:
        # meanwhile, the single-device reference on the same records, in process
        from indep_seg.training.config import apply_overrides
        from indep_seg.training.context import TrainContext
        from indep_seg.training.experiments.tiny import box_seg_tiny_config, train_box_seg_tiny

        keras.utils.set_random_seed(seed)
        ref = train_box_seg_tiny(
            apply_overrides(box_seg_tiny_config(), FEATURES),
            TrainContext(
                model_dir=tmp_path / "ref",
                data=data,
                steps=steps,
                seed=seed,
                extra={"verbose": False, "log": lambda *a: None},
            ),
        )
        assert ref["adversarial_steps"] == 3 and ref["distill_steps"] == 1
    except BaseException:
        _kill(procs)
        raise
    results = _wait_workers(tmp_path, procs, logs)

    assert [r["adversarial_steps"] for r in results] == [3, 3]
    assert [r["distill_steps"] for r in results] == [1, 1]
    assert (
        "2 replica(s) (CollectiveAllReduceStrategy)"
        in (run / "adversarial" / "log.txt").read_text()
    )
    chief_out = (tmp_path / "worker0.log").read_text()
    assert "box prior (GrabCut from each box): 8 priors" in chief_out and "a per image" in chief_out
    # one set of outputs, the chief's: the other worker's scratch folders are gone
    assert not list(run.rglob(".workers"))
    assert (run / "segmenter" / "segmenter.json").is_file()
    assert [
        json.loads(ln)["phase"] for ln in (run / "snapshots.jsonl").read_text().splitlines()
    ] == ["adversarial", "distill"]
    assert json.loads((run / "box_shards" / "shards.json").read_text())["prior"] is True
    # the losses each worker logs are reduced over both: equal
    a, b = (
        json.loads(
            [
                ln
                for ln in (tmp_path / f"worker{i}.log").read_text().splitlines()
                if ln.startswith('{"step": 3')
            ][0]
        )
        for i in range(2)
    )
    assert a["mask_mean"] == pytest.approx(b["mask_mean"], rel=1e-6)
    # same global batches (DATA auto-sharding of 2 files) and global-batch random draws: the same
    # training as one device, up to float32 summation order (synchronized BN) and Adam's sign noise
    n = assert_same_checkpoints(
        tmp_path / "ref",
        run,
        rtol=1e-4,
        atol=1e-5,
        skip=("save_counter", "optimizer/_variables/"),
        adam_sign_noise=ADAM_SIGN_NOISE,
    )
    assert n >= 50
    _assert_optimizer_slots_close(tmp_path / "ref", run, scale_tol=5e-3)
