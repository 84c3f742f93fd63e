"""The HoC centre counter's training step before and after it moved onto Keras `fit` (issue #20).

    taskset -c 0 .venv/bin/python benchmarks/bench_counter_step.py          # 12 x (A, B) bursts
    .venv/bin/python benchmarks/bench_counter_step.py --quick               # seconds, 1 burst each

A, "fit": today's `indep_seg.hoc.counting.train_counter` (`CounterTrainer.train_step` compiled
by `fit`, the `_CounterLog` callback). B, "loop": the hand-written `tf.function` loop of the
parent of commit 156d34f, run as that commit's own module: `git show 156d34f^:indep_seg/hoc/
counting.py` is loaded as a temporary module (nothing of it is copied here), so its step, its
augmentations and its optimizer are the old ones. Both run as `train_hoc`'s `counter_stage`
calls them at the `hoc` preset's settings (counter width 32, batch 32, 32 px; the options that
`resolve` gives for `nuclei_dsb2018/image.png` normalised as `train_hoc` does, augmentations on)
over the composites of one frozen `HocGAN` (built from those options, seed 0, untrained: the
step's cost does not depend on the weights) on one fixed background batch of `make_dataset`.

Timing: every burst calls its trainer afresh with the same initial counter weights, for
``warmup + steps`` steps at ``log_every=1``; the `log` callback time-stamps the end of every
step and the figure is the mean of the last `steps` steps (the first `warmup`, tracing included,
are excluded; their time is recorded as ``first_call_s``). Bursts are interleaved A B A B ...;
the best burst is the figure, the median and spread are recorded with the load averages, and so
are the ratios of neighbouring bursts (A_i / B_i) and the process CPU time per step (what the
step costs the pinned core, without the time spent waiting for it when the core is shared).

Losses: both trainers run 2 steps from the same initial weights on the same inputs, the
generator replaced by one fixed `generate` output and every augmentation off (gain jitter,
contrast draw, blur, noise, flips), so nothing random is left; the losses of step 0 (before any
update) and step 1 (after one Adam step) and the weights after 2 steps are compared.
No real-data score is measured here: nothing is tuned and no data are held out.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, results_dir, write_json_atomic  # noqa: E402

FIT_COMMIT = "156d34f"  # "Centre counter trained by Keras fit"
IMAGE = REPO.parent / "shared" / "datasets" / "nuclei_dsb2018" / "image.png"


def load_pre_fit_counting():
    """The parent of `FIT_COMMIT`'s ``indep_seg/hoc/counting.py`` as a temporary module."""
    source = subprocess.run(
        ["git", "show", f"{FIT_COMMIT}^:indep_seg/hoc/counting.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    parent = subprocess.run(
        ["git", "rev-parse", f"{FIT_COMMIT}^"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    d = tempfile.mkdtemp(prefix="counting_pre_fit_")
    atexit.register(shutil.rmtree, d, True)  # kept while running: autograph reads the source
    path = Path(d) / "counting_pre_fit.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("indep_seg.hoc._counting_pre_fit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, parent


def hoc_setup(image_path: Path, seed: int = 0):
    """The `hoc` preset resolved on the image as `train_hoc` does, its `HocGAN`, one background
    batch, and `counter_stage`'s keyword arguments for `train_counter`."""
    import dataclasses

    from indep_seg.hoc.estimate import instance_contrast_range
    from indep_seg.imageio import load_image
    from indep_seg.training.experiments import hoc

    image, info = hoc.prepare_image(load_image(str(image_path)))
    config = dataclasses.replace(hoc.hoc_config(), window=info["window"])
    r = hoc.resolve(config, image)
    gan = hoc.build_model(r, seed=seed)
    batch = next(iter(hoc.make_dataset(image, r, seed=seed)))
    min_contrast, high = instance_contrast_range(image)
    contrast_range = (min_contrast, high) if r["counter_contrast"] and high else None
    options = dict(
        min_contrast=min_contrast,
        gain_jitter=0.0 if contrast_range else r["counter_gain_jitter"],
        grayscale=r["grayscale"],
        dihedral=r["counter_dihedral"],
        contrast_range=contrast_range,
        blur_sigma=r["counter_blur_sigma"],
        noise=r["counter_noise"],
    )
    return r, gan, batch, options


def run_trainer(module, gan, dataset, counter, weights, steps, sigma, options):
    """`module.train_counter` for `steps` steps from `weights`; returns the end of every step as
    ``[steps, 2]`` (``perf_counter``, ``process_time``), the call's start and its history."""
    counter.set_weights(weights)
    stamps = []
    t0 = time.perf_counter()
    _, history = module.train_counter(
        gan,
        dataset,
        steps,
        sigma,
        counter=counter,
        log_every=1,
        log=lambda _msg: stamps.append((time.perf_counter(), time.process_time())),
        **options,
    )
    if len(stamps) != steps:
        raise RuntimeError(f"{module.__name__}.train_counter logged {len(stamps)} of {steps} steps")
    return np.array(stamps), t0, history


class FixedGenerator:
    """A frozen generator whose `generate` always returns the same precomputed dict."""

    def __init__(self, out):
        self.out = out

    def generate(self, batch_size, background=None, training=False, return_all=False):
        return dict(self.out)


def compare_losses(trainers, gan, batch, counter, weights, sigma, options):
    """Both trainers for 2 steps on one fixed generator output, augmentations off."""
    import tensorflow as tf

    out = gan.generate(
        tf.shape(batch["background"])[0],
        background=batch["background"],
        training=False,
        return_all=True,
    )
    fixed = FixedGenerator({k: tf.constant(v) for k, v in out.items()})
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    plain = dict(
        options,
        gain_jitter=0.0,
        contrast_range=None,
        dihedral=False,
        blur_sigma=0.0,
        noise=0.0,
    )
    res = {}
    for name, module in trainers.items():
        _, _, history = run_trainer(module, fixed, dataset, counter, weights, 2, sigma, plain)
        res[name] = dict(
            losses=[float(loss) for _, loss in history],
            weights=[w.copy() for w in counter.get_weights()],
        )
    a, b = res["fit"], res["loop"]
    return dict(
        options=plain,
        loss_step0_fit=a["losses"][0],
        loss_step0_loop=b["losses"][0],
        loss_step0_abs_diff=abs(a["losses"][0] - b["losses"][0]),
        loss_step1_fit=a["losses"][1],
        loss_step1_loop=b["losses"][1],
        loss_step1_abs_diff=abs(a["losses"][1] - b["losses"][1]),
        weights_max_abs_diff_after_2_steps=max(
            float(np.max(np.abs(x - y))) for x, y in zip(a["weights"], b["weights"])
        ),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 burst each of 3 steps (seconds)")
    p.add_argument("--repeats", type=int, default=12, help="bursts per trainer (interleaved)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per burst")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per burst (tracing)")
    p.add_argument("--image", type=Path, default=IMAGE)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: results dir)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup = 1, 3, 1
    for name in ("repeats", "steps", "warmup"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name}: expected at least 1, got {getattr(args, name)}")
    if not args.image.exists():
        raise SystemExit(f"--image: {args.image} does not exist")

    load_start = os.getloadavg()
    t_start = time.time()
    import tensorflow as tf

    from indep_seg.hoc import counting

    old, parent = load_pre_fit_counting()
    trainers = {"fit": counting, "loop": old}
    r, gan, batch, options = hoc_setup(args.image)
    counter = counting.build_counter(r["counter_width"])
    counter(batch["background"][:1])
    weights = [w.copy() for w in counter.get_weights()]
    sigma = r["counter_sigma"]
    dataset = tf.data.Dataset.from_tensors(batch).repeat()

    losses = compare_losses(trainers, gan, batch, counter, weights, sigma, options)

    bursts = {name: [] for name in trainers}
    cpu = {name: [] for name in trainers}
    first_call = {name: [] for name in trainers}
    n = args.warmup + args.steps
    for _ in range(args.repeats):
        for name, module in trainers.items():
            stamps, t0, _ = run_trainer(module, gan, dataset, counter, weights, n, sigma, options)
            wall, proc = 1e3 * (stamps[-1] - stamps[args.warmup - 1]) / args.steps
            bursts[name].append(wall)
            cpu[name].append(proc)
            first_call[name].append(float(stamps[0, 0] - t0))

    def summary(ms):
        ms = np.array(ms)
        return dict(
            best_ms=float(ms.min()),
            median_ms=float(np.median(ms)),
            worst_ms=float(ms.max()),
            spread_pct=float(100 * (ms.max() - ms.min()) / ms.min()),
            bursts_ms=[round(float(x), 3) for x in ms],
        )

    fit, loop = summary(bursts["fit"]), summary(bursts["loop"])
    fit_cpu, loop_cpu = summary(cpu["fit"]), summary(cpu["loop"])
    ratio = fit["best_ms"] / loop["best_ms"]
    pairs = np.array(bursts["fit"]) / np.array(bursts["loop"])
    pairs_cpu = np.array(cpu["fit"]) / np.array(cpu["loop"])
    now = datetime.datetime.now(datetime.timezone.utc)
    res = dict(
        benchmark="bench_counter_step",
        date_utc=now.isoformat(timespec="seconds"),
        quick=args.quick,
        core=sorted(os.sched_getaffinity(0)),
        load_avg_start=load_start,
        load_avg_end=os.getloadavg(),
        wall_s=round(time.time() - t_start, 1),
        tensorflow=tf.__version__,
        image=str(args.image),
        data_split="none: a timing and an equivalence check; nothing tuned, nothing held out",
        fit_impl="indep_seg.hoc.counting.train_counter (CounterTrainer.fit), working tree",
        loop_impl=(
            f"git show {FIT_COMMIT}^:indep_seg/hoc/counting.py ({parent}) loaded as a temporary "
            "module; its train_counter"
        ),
        hoc_settings=dict(
            window=r["window"],
            resolution=r["resolution"],
            batch_size=r["batch_size"],
            num_layers=r["num_layers"],
            counter_width=r["counter_width"],
            counter_sigma=sigma,
            background=r["background"],
            generator="HocGAN.from_options(seed 0), untrained",
            train_counter_options={
                k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()
            },
        ),
        repeats=args.repeats,
        steps_per_burst=args.steps,
        warmup_steps=args.warmup,
        order="interleaved: fit, loop, fit, loop, ...",
        fit=dict(fit, first_call_s=first_call["fit"]),
        loop=dict(loop, first_call_s=first_call["loop"]),
        fit_cpu=fit_cpu,
        loop_cpu=loop_cpu,
        cpu_note="process CPU time per step (all threads; the core pinned): not the time spent "
        "waiting for a shared core",
        ratio_fit_over_loop_best=ratio,
        ratio_fit_over_loop_median=fit["median_ms"] / loop["median_ms"],
        ratio_fit_over_loop_paired_median=float(np.median(pairs)),
        ratio_fit_over_loop_paired=[round(float(x), 3) for x in pairs],
        ratio_fit_over_loop_cpu_best=fit_cpu["best_ms"] / loop_cpu["best_ms"],
        ratio_fit_over_loop_cpu_paired_median=float(np.median(pairs_cpu)),
        losses=losses,
    )
    name = f"counter_step_{now.date().isoformat()}{'_quick' if args.quick else ''}.json"
    path = write_json_atomic(args.out or results_dir() / name, res)
    print(
        f"counter step, hoc preset (batch {r['batch_size']}, {r['resolution']} px, width "
        f"{r['counter_width']}), new (fit) / old (loop): wall best {fit['best_ms']:.1f} / "
        f"{loop['best_ms']:.1f} ms = {ratio:.3f} (paired bursts median {np.median(pairs):.3f}), "
        f"CPU time best {fit_cpu['best_ms']:.1f} / {loop_cpu['best_ms']:.1f} ms = "
        f"{res['ratio_fit_over_loop_cpu_best']:.3f}; loss diff step 0 "
        f"{losses['loss_step0_abs_diff']:.1e}, step 1 {losses['loss_step1_abs_diff']:.1e}; load "
        f"{load_start[0]:.2f} -> {res['load_avg_end'][0]:.2f}; {path}"
    )
    return res


if __name__ == "__main__":
    main()
