"""Training steps/s of `indep-seg train --strategy multi_worker` with 1 and 2 worker processes on
loopback (issue #18's target), in one run of this script.

    python benchmarks/bench_multi_worker.py --one-worker-core 1 --two-worker-cores 0 1
    python benchmarks/bench_multi_worker.py --experiment ilsgan   # or hoc; see EXPERIMENTS

Each worker is a real process (`python -m indep_seg train --experiment EXPERIMENT --strategy
multi_worker`) with its own TF_CONFIG on 127.0.0.1, pinned to one core with `taskset -c`. The data
are the horse photos as TFRecords (`bench_train_memory.horse_records`: the project's converter, at
most 160 px a side), of which the trainer reads the first `--photos` (`max_images`; with the
default 32: horse001-horse032, the tuning half of ../shared/datasets/README.md; nothing is tuned
here, this measures speed only). The 1-worker run writes the run's box shards (GrabCut priors);
the 2-worker run is given copies of them (the chief's and the other worker's folder: the trainer
reuses a complete set made with the same settings), so that the cores are held for training only.
Both runs train the adversarial phase only (`adversarial_fraction=1.0`: no distillation).

`ilsgan` (the small preset) reads the same horse TFRecords (its image shards, 32x32, are written by
each worker: a second or two); `hoc` (the small preset) reads its one image,
../shared/datasets/nuclei_dsb2018/image.png. Both time their GAN phase (`run_fit`) with no
checkpoint, picture or metric inside it (`checkpoint_every` / `eval_every` past the last step) and
keep the phase after it minimal: ILSGAN's post-hoc UNet on 64 pairs for 1 epoch (chief only), no
counter steps for HoC (`counter_steps=0`).

The rate is the chief's GAN-phase stats (`adversarial/stats.jsonl` for box_seg, `stats.jsonl`
for ilsgan and hoc) after its first log window (graph tracing): every worker takes every step
(gradients are all-reduced each step), so it is each worker's steps/s; the global batch (the
preset's, split across the replicas) times it is the cluster's examples/s. The machine's load
average before and after each run is recorded; results go to
benchmarks/results/multi_worker_<experiment>_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.bench_serving import _free_port  # noqa: E402
from benchmarks.bench_train_memory import horse_records  # noqa: E402

NUCLEI_IMAGE = REPO.parent / "shared" / "datasets" / "nuclei_dsb2018" / "image.png"
NEVER = 10**6  # a checkpoint / picture / metric interval past any run here
# per experiment: the chief's stats file of the timed (GAN) phase, the default --steps and the
# overrides that time that phase alone ({photos}: --photos)
EXPERIMENTS = {
    "box_seg": {
        "stats": "adversarial/stats.jsonl",
        "steps": 70,
        "overrides": ["max_images={photos}", "log_every=10", "evidence_images=0"]
        + ["adversarial_fraction=1.0"],  # the adversarial phase only: no distillation
    },
    "ilsgan": {
        "stats": "stats.jsonl",
        "steps": 200,
        "overrides": ["max_images={photos}", "log_every=20", f"checkpoint_every={NEVER}"]
        + [f"eval_every={NEVER}", "posthoc_pairs=64", "posthoc_epochs=1"],
    },
    "hoc": {
        "stats": "stats.jsonl",
        "steps": 400,
        "overrides": ["log_every=40", f"checkpoint_every={NEVER}", "image_every=0"]
        + ["counter_steps=0"],
    },
}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def cluster_envs(num_workers: int) -> list[dict]:
    """One environment per worker: TF_CONFIG of a loopback cluster, no GPU."""
    ports: list[int] = []
    while len(ports) < num_workers:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [
        dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
        )
        for i in range(num_workers)
    ]


def run_cluster(cores: list[int], argv: list[str], logs: Path, timeout_s: float) -> dict:
    """`taskset -c CORE python ARGV` per worker (one core each); waits for all (killing every
    worker's process group after `timeout_s`). Returns the wall time and the load average."""
    load_before, t = _load(), time.time()
    procs = []
    try:
        for i, (core, env) in enumerate(zip(cores, cluster_envs(len(cores)))):
            with open(logs / f"worker{i}.log", "w") as log:
                procs.append(
                    subprocess.Popen(
                        ["taskset", "-c", str(core), sys.executable, *argv],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        while time.time() - t < timeout_s and any(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
            p.wait()
    codes = [p.returncode for p in procs]
    if codes != [0] * len(procs):
        tails = [(logs / f"worker{i}.log").read_text()[-3000:] for i in range(len(procs))]
        raise SystemExit(f"workers on cores {cores} exited {codes}:\n" + "\n-----\n".join(tails))
    return {
        "wall_s": round(time.time() - t, 1),
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


def steady_rate(stats_file: Path) -> dict:
    """Steps/s over the chief's log windows but the first (graph tracing) and the last (the end of
    `fit`: 3-4x slower in a trial run)."""
    stats = [json.loads(ln) for ln in stats_file.read_text().splitlines()]
    if len(stats) < 3:
        raise SystemExit(f"{stats_file}: {len(stats)} log line(s); give more --steps")
    first, last = stats[0], stats[-2]
    rate = (last["step"] - first["step"]) / (last["time_s"] - first["time_s"])
    return {
        "steps_per_s": round(rate, 3),
        "timed_steps": f"{first['step']}-{last['step']}",
    }


def seed_box_shards(source_run: Path, run: Path, num_workers: int) -> None:
    """Copies a finished run's box shards into the chief's folder and every other worker's scratch
    folder (`training.strategy.worker_dir`) of `run`, where the trainer reuses them."""
    folders = [run] + [run / ".workers" / f"worker-{i}" for i in range(1, num_workers)]
    for folder in folders:
        shutil.copytree(source_run / "box_shards", folder / "box_shards")


def overrides(args) -> list[str]:
    """The config overrides of every worker: the experiment's (EXPERIMENTS), then --override."""
    own = [o.format(photos=args.photos) for o in EXPERIMENTS[args.experiment]["overrides"]]
    return own + list(args.override)


def train_argv(args, data: str, run: Path) -> list[str]:
    return [
        *("-m", "indep_seg", "train", "--experiment", args.experiment, "--data", data),
        *("--model-dir", str(run), "--strategy", "multi_worker", "--steps", str(args.steps)),
        *("--seed", "0", "--override", *overrides(args)),
    ]


def experiment_data(args, work: Path) -> tuple[str, str]:
    """(--data, its description for the JSON) of `args.experiment`."""
    if args.experiment == "hoc":
        if not NUCLEI_IMAGE.is_file():
            raise SystemExit(f"hoc: {NUCLEI_IMAGE} not found (../shared beside the repository)")
        return str(NUCLEI_IMAGE), (
            "../shared/datasets/nuclei_dsb2018/image.png (hoc's one image); speed only, "
            "nothing tuned"
        )
    horse_records(work, 160)  # writes work/horse160-*.tfrecord once
    return (
        str(work / "horse160-*.tfrecord"),
        f"horse TFRecords (<= 160 px), first {args.photos} photos (tuning half); "
        "speed only, nothing tuned",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="box_seg", choices=sorted(EXPERIMENTS))
    p.add_argument("--photos", type=int, default=32, help="max_images (the first N horses)")
    p.add_argument(
        "--steps", type=int, default=None, help="--steps (default: the experiment's in EXPERIMENTS)"
    )
    p.add_argument("--override", nargs="*", default=[], help="more config overrides")
    p.add_argument("--one-worker-core", type=int, default=1)
    p.add_argument("--two-worker-cores", type=int, nargs=2, default=[0, 1])
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per cluster run")
    p.add_argument("--work", default=None, help="folder for records and runs (default: temporary)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--note", default="", help="what else ran on the cores (stored)")
    args = p.parse_args()
    spec = EXPERIMENTS[args.experiment]
    args.steps = spec["steps"] if args.steps is None else args.steps
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_multi_worker_"))
    data, data_note = experiment_data(args, work)
    box_seg = args.experiment == "box_seg"
    rows = []
    for cores in ([args.one_worker_core], list(args.two_worker_cores)):
        tag = "" if box_seg else f"{args.experiment}_"  # box_seg's folders as before
        run = work / f"{tag}run{len(cores)}"
        shutil.rmtree(run, ignore_errors=True)
        if len(cores) > 1 and box_seg:
            seed_box_shards(work / "run1", run, len(cores))
        logs = work / f"{tag}logs{len(cores)}"
        logs.mkdir(exist_ok=True)
        timing = run_cluster(cores, train_argv(args, data, run), logs, args.timeout)
        config = yaml.safe_load((run / "config.yaml").read_text())
        batch, replicas = config["config"]["batch_size"], config["run"]["replicas"]
        rate = steady_rate(run / spec["stats"])
        row = {
            "workers": len(cores),
            "cores": cores,
            "replicas": replicas,
            "global_batch": batch,
            "per_replica_batch": batch // replicas,
            **rate,
            "global_examples_per_s": round(rate["steps_per_s"] * batch, 1),
            "examples_per_s_per_worker": round(rate["steps_per_s"] * batch / len(cores), 1),
            **(
                {"box_shards": "written" if len(cores) == 1 else "copied from the 1-worker run"}
                if box_seg
                else {}
            ),
            **timing,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "benchmark": "bench_multi_worker",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", "benchmarks/bench_multi_worker.py", *sys.argv[1:]]),
        "experiment": args.experiment,
        "steps": args.steps,
        "data": data_note,
        "machine": {"cpus": os.cpu_count(), "strategy": "MultiWorkerMirroredStrategy, loopback"},
        "note": args.note,
        **({} if box_seg else {"timed": "the GAN phase", "overrides": overrides(args)}),
        "rows": rows,
        "global_examples_per_s_2_over_1": round(
            rows[1]["global_examples_per_s"] / rows[0]["global_examples_per_s"], 2
        ),
    }
    out = Path(args.out) / (
        f"multi_worker_{args.experiment}_{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
