"""Distillation variants from one saved adversarial segmenter (horse photos, README protocol).

    .venv/bin/python benchmarks/bench_box_seg_distill.py TEACHER_SEGMENTER_DIR \
        [--minutes 6] [--override distill_label=carve ...]

Runs phase 2 of `box_seg` (Distiller, eq. 8) alone from a teacher written by phase 1
(`MODEL_DIR/segmenter_adversarial`), for a wall-clock budget, then evaluates teacher and student
with the protocol of ../shared/datasets/README.md on the pasted-back masks. Writes
benchmarks/results/box_seg_horse_distill.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("teacher")
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--override", nargs="*", default=[])
    p.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "box_seg_horse_distill.json")
    )
    args = p.parse_args(argv)

    import keras
    from bench_box_seg_horse import DATA, Evaluator, _atomic_write, evaluate_segmenter, load_horses

    from indep_seg.models.distiller import Distiller
    from indep_seg.segmenter import Segmenter
    from indep_seg.training.config import apply_overrides
    from indep_seg.training.experiments.box_seg import (
        BoxSegConfig,
        build_unet,
        make_backgrounds,
        make_crops,
        make_dataset,
    )

    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    keras.utils.set_random_seed(0)
    cfg = apply_overrides(BoxSegConfig(), args.override) if args.override else BoxSegConfig()
    items, gts = load_horses()
    ev = Evaluator(items, gts)
    crops = make_crops(items, cfg.resolution, cfg.margin)
    bgs = make_backgrounds(items, cfg)
    src = Segmenter.load(args.teacher)
    teacher, student = build_unet(cfg, "teacher"), build_unet(cfg, "student")
    teacher.set_weights(src.model.get_weights())
    student.set_weights(src.model.get_weights())
    d = Distiller(
        teacher, student, label=cfg.distill_label, real_fraction=cfg.distill_real_fraction
    )
    d.compile(keras.optimizers.Adam(cfg.distill_learning_rate, beta_1=0.5, beta_2=0.999))
    ds = make_dataset(crops, bgs, cfg.batch_size, seed=7)
    steps, t1 = 0, time.time()
    while time.time() - t1 < args.minutes * 60:
        d.fit(ds, steps_per_epoch=25, epochs=1, verbose=0)
        steps += 25
    out_dir = Path(tempfile.mkdtemp(prefix="box_seg_distill_"))
    Segmenter(
        student.as_functional(), cfg.resolution, cfg.margin, False, "box_seg", {"phase": "distill"}
    ).save(out_dir / "segmenter")
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "teacher": args.teacher,
        "config": dataclasses.asdict(cfg),
        "distill_steps": steps,
        "distill_seconds": round(time.time() - t1, 1),
    }
    res["teacher_eval"] = {k: evaluate_segmenter(args.teacher, ev)[k] for k in ("iou", "dice")}
    res["student_eval"] = {
        k: evaluate_segmenter(out_dir / "segmenter", ev)[k] for k in ("iou", "dice")
    }
    res["student_dir"] = str(out_dir)
    _atomic_write(Path(args.out), json.dumps(res, indent=2).encode())
    print(
        "result:",
        json.dumps({k: res[k] for k in ("distill_steps", "teacher_eval", "student_eval")}),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
