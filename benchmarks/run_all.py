"""Run every benchmark under benchmarks/ and collect the figures into one table.

    .venv/bin/python benchmarks/run_all.py            # everything (tens of minutes)
    .venv/bin/python benchmarks/run_all.py --quick    # tiny configurations (the test uses this)
    .venv/bin/python benchmarks/run_all.py --only train_step,serving
    .venv/bin/python benchmarks/run_all.py --collect  # no run: tables from the JSON already there

Every `benchmarks/bench_*.py` runs as its own subprocess (with `--quick` when given), with
`INDEP_SEG_BENCH_RESULTS` pointing at the results folder; the JSON files it writes there
while it runs are attributed to it. Its peak resident memory is read from the kernel's
accounting of that child (`os.wait4` rusage `ru_maxrss`: the largest single process of the
benchmark's process tree, workers included). Writes `summary.json` and `SUMMARY.md`
(Markdown tables) into the results folder; a failing or timed-out benchmark is recorded as
such and does not stop the others (exit code 1 if any failed). `SUMMARY.md` opens with the
headline figures of every benchmark beside the issues' targets (`HEADLINES`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BENCH_DIR, REPO, write_json_atomic, write_text_atomic  # noqa: E402

SUMMARY_FILES = ("summary.json",)

# (result file, dotted path into its JSON, what it is, the target it is held against)
HEADLINES = [
    # held-out figures (tuned on the tuning halves / tuned images, reported on the others)
    (
        "box_seg_horse_r30_s11_rescored.json",
        "test.final_refined_blend",
        "box_seg, 30 min, `indep-seg segment` default, horse TEST half: mean IoU",
        ">= 0.72",
    ),
    (
        "box_seg_ecssd_r30_s11_rescored.json",
        "test.final_refined_blend",
        "box_seg, 30 min, `indep-seg segment` default, ECSSD TEST half: mean IoU",
        ">= 0.72",
    ),
    (
        "box_seg_horse_r30_s15.json",
        "test.final_refined_blend",
        "box_seg, 30 min on an idle machine (session 15), `segment` default, horse TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_horse_r30_s15.json",
        "test.final",
        "the same run's network alone (`segment --refine none`), horse TEST half",
        "",
    ),
    (
        "box_seg_ecssd_r30_s15.json",
        "test.final_refined_blend",
        "box_seg, 30 min on an idle machine (session 15), `segment` default, ECSSD TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_ecssd_r30_s15.json",
        "test.final",
        "the same run's network alone (`segment --refine none`), ECSSD TEST half",
        "",
    ),
    (
        "box_seg_horse_cs05_s16.json",
        "test.final",
        "ablation (session 16, one core): `--override prior_confident_share=0.5`, network alone, "
        "horse TEST half",
        "",
    ),
    (
        "box_seg_horse_cs05_s16.json",
        "test.final_refined_blend",
        "the same run, `segment` default, horse TEST half",
        "",
    ),
    (
        "box_seg_ecssd_cs05_s16.json",
        "test.final",
        "ablation (session 16, one core): `--override prior_confident_share=0.5`, network alone, "
        "ECSSD TEST half",
        "",
    ),
    (
        "box_seg_ecssd_cs05_s16.json",
        "test.final_refined_blend",
        "the same run, `segment` default, ECSSD TEST half",
        "",
    ),
    (
        "box_seg_horse_r30_s17.json",
        "test.final_refined_blend",
        "box_seg, 30 min, the prior cleaned (session 17, one core), `segment` default, horse TEST "
        "half",
        ">= 0.72",
    ),
    (
        "box_seg_horse_r30_s17.json",
        "test.final",
        "the same run's network alone (`segment --refine none`), horse TEST half",
        "",
    ),
    (
        "box_seg_ecssd_r30_s17.json",
        "test.final_refined_blend",
        "box_seg, 30 min, the prior cleaned (session 17, one core), `segment` default, ECSSD TEST "
        "half",
        ">= 0.72",
    ),
    (
        "box_seg_ecssd_r30_s17.json",
        "test.final",
        "the same run's network alone (`segment --refine none`), ECSSD TEST half",
        "",
    ),
    (
        "box_seg_horse_r30_s17_clean3.json",
        "test.final_refined_blend",
        "the same horse run rescored with the cleaning GrabCut at 3x (session 17b, `CLEAN_SCALE`), "
        "`segment` default, horse TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_horse_r30_s17_clean3.json",
        "test.box_prior",
        "the box prior alone, cleaned at 3x (session 17b), horse TEST half",
        "",
    ),
    (
        "box_seg_ecssd_r30_s17_clean3.json",
        "test.final_refined_blend",
        "the same ECSSD run rescored with the cleaning GrabCut at 3x (session 17b, `CLEAN_SCALE`), "
        "`segment` default, ECSSD TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_ecssd_r30_s17_clean3.json",
        "test.box_prior",
        "the box prior alone, cleaned at 3x (session 17b), ECSSD TEST half",
        "",
    ),
    (
        "box_seg_horse_r30_s18.json",
        "test.final_refined_blend",
        "box_seg, 30 min, the prior cleaned on the photo's window (session 18, one core), "
        "`segment` default, horse TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_horse_r30_s18.json",
        "test.final",
        "the same run's network alone (`segment --refine none`), horse TEST half",
        "",
    ),
    (
        "box_seg_ecssd_r30_s18.json",
        "test.final_refined_blend",
        "box_seg, 30 min, the prior cleaned on the photo's window (session 18, one core), "
        "`segment` default, ECSSD TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_ecssd_r30_s18.json",
        "test.final",
        "the same run's network alone (`segment --refine none`), ECSSD TEST half",
        "",
    ),
    (
        "box_seg_horse_r30_s18_refine.json",
        "test.final_refined_blend",
        "the same horse run rescored with the refinement on the photo's window (session 18, "
        "`REFINE_PHOTO_DETAIL`), `segment` default, horse TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_horse_r30_s18_refine.json",
        "test.box_prior",
        "the box prior alone, cleaned on the photo's window (session 18), horse TEST half",
        "",
    ),
    (
        "box_seg_ecssd_r30_s18_refine.json",
        "test.final_refined_blend",
        "the same ECSSD run rescored with the refinement on the photo's window (session 18, "
        "`REFINE_PHOTO_DETAIL`), `segment` default, ECSSD TEST half",
        ">= 0.72",
    ),
    (
        "box_seg_ecssd_r30_s18_refine.json",
        "test.box_prior",
        "the box prior alone, cleaned on the photo's window (session 18), ECSSD TEST half",
        "",
    ),
    (
        "study_background_clean_horse_test.json",
        "iou.default",
        "the box prior alone, cleaned (session 17), horse TEST half",
        "",
    ),
    (
        "study_background_clean_ecssd_test.json",
        "iou.default",
        "the box prior alone, cleaned (session 17), ECSSD TEST half",
        "",
    ),
    (
        "ilsgan_horse_target_s13_refined.json",
        "variants.mi.test.iou",
        "ilsgan, 60 min, `indep-seg segment` default (refined), horse TEST half: mean IoU",
        ">= 0.62",
    ),
    (
        "ilsgan_horse_target_s13_unrefined.json",
        "variants.mi.test.iou",
        "the same generator, `segment --refine none`, horse TEST half: mean IoU",
        "",
    ),
    (
        "ilsgan_horse_ablation_s14_control.json",
        "baselines.test.centred_disc_r_third.iou",
        "centred disc (box-free baseline), horse test half: mean IoU",
        "",
    ),
    (
        "ilsgan_horse_ablation_s14_control.json",
        "variants.mi.test.iou",
        "ilsgan defaults, 30 min (session 14, seed 0), horse test half: mean IoU",
        "",
    ),
    (
        "ilsgan_horse_ablation_s14_no_ils.json",
        "variants.none.test.iou",
        "ilsgan without ILS-MI (ils=none), 30 min, horse test half: mean IoU",
        "",
    ),
    (
        "ilsgan_horse_ablation_s14_control.json",
        "variants.mi.mi",
        "MINE MI between regions, with ILS-MI (30 min, mean of held-out evaluations)",
        "< without",
    ),
    (
        "ilsgan_horse_ablation_s14_no_ils.json",
        "variants.none.mi",
        "MINE MI between regions, without ILS-MI (30 min)",
        "",
    ),
    (
        "hoc_dev_classical_s19.json",
        "summary.log.all_kinds_held_out.median_abs_err_pct",
        "nuclei, classical counter, 8 held-out development images: median |error| %",
        "<= 10",
    ),
    (
        "hoc_dev_classical_s19.json",
        "summary.log.all_kinds_held_out.worst_abs_err_pct",
        "nuclei, classical counter, 8 held-out development images: worst |error| %",
        "<= 25",
    ),
    (
        "study_hoc_robustness_s19.json",
        "overall.all.held_out.median_abs_err_pct",
        "nuclei, classical counter, 56 held-out images x acquisition changes: median |error| %",
        "",
    ),
    (
        "study_hoc_robustness_s19.json",
        "overall.all.held_out.over_25_pct",
        "the same 56: how many worse than 25 % (session 18's code: 8)",
        "",
    ),
    (
        "hoc_transfer_30min_s13.json",
        "summary.count.held_out.median_abs_err_pct",
        "nuclei, trained on 3 images 30 min, 5 held-out fluorescence: median |error| %",
        "<= 10",
    ),
    (
        "hoc_single_fluorescence_60min_s19.json",
        "summary.count.trained_on.worst_abs_err_pct",
        "nuclei, README command 60 min on held-out fluorescence 5afb7932 (session 19): |error| %",
        "<= 15",
    ),
    (
        "hoc_single_fluorescence_60min_s14.json",
        "summary.count.trained_on.worst_abs_err_pct",
        "nuclei, README command 60 min on held-out fluorescence 07fb37aa: |error| %",
        "<= 15",
    ),
    # earlier figures, kept as history (settings chosen on the reported photos)
    (
        "box_seg_horse_run3.json",
        "distilled.iou",
        "box_seg on real horses, run 3 (faster layers): mean IoU after distillation",
        ">= 0.70",
    ),
    (
        "box_seg_horse_run3.json",
        "raw.iou",
        "box_seg on real horses, run 3: mean IoU, adversarial phase",
        "",
    ),
    (
        "box_seg_horse_run2.json",
        "distilled.iou",
        "box_seg on real horses, run 2: mean IoU after distillation",
        ">= 0.70",
    ),
    (
        "box_seg_horse_run2.json",
        "raw.iou",
        "box_seg on real horses, run 2: mean IoU, adversarial phase",
        "",
    ),
    (
        "ilsgan_horse.json",
        "variants.mi.iou",
        "ilsgan 2026-11-23 (history: all 328 photos, settings chosen on them): mean IoU",
        "",
    ),
    (
        "ilsgan_horse_target.json",
        "variants.mi.test.iou",
        "session 8's ilsgan 60-minute run on a shared, niced core (history): horse test half",
        "",
    ),
    (
        "hoc_nuclei.json",
        "one_object_fraction",
        "hoc: layer masks with one dominant component",
        ">= 0.90",
    ),
    ("hoc_nuclei.json", "median_area_error", "hoc: median mask area, relative error", "<= 0.25"),
    ("hoc_nuclei.json", "count", "hoc: `indep-seg count` on the nuclei image (125)", "113-137"),
    ("hoc_nuclei.json", "count_raw", "hoc: the same count before calibration", ""),
    ("hoc_nuclei.json", "centres_inside_a_nucleus", "hoc: counted centres inside a nucleus", ""),
    ("hoc_nuclei_seed1.json", "count", "hoc, second seed: count", "113-137"),
    (
        "hoc_nuclei_seed1.json",
        "one_object_fraction",
        "hoc, second seed: one dominant component",
        ">= 0.90",
    ),
    ("hoc_nuclei.json", "otsu_cc_count_min10px", "Otsu + connected components count", ""),
    (
        "input_pipeline.json",
        "weizmann_tfrecords_cached_images_per_s",
        "input pipeline, TFRecords, 128 px: images/s",
        ">= 1500",
    ),
    (
        "input_pipeline.json",
        "pipeline_over_fastest_trainer",
        "input pipeline / fastest trainer's consumption",
        ">= 10",
    ),
    (
        "serving.json",
        "summary.paired_grpc_overhead_p50_ms",
        "gRPC server overhead over in-process, p50 ms",
        "< 2",
    ),
    (
        "serving.json",
        "summary.paired_batched_throughput_ratio",
        "server batching (16 clients) / in-process batched throughput",
        ">= 0.90",
    ),
]


def _dig(obj, path):
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def headline_rows(results_by_file):
    """The HEADLINES present in `results_by_file` ({file name: parsed JSON}), plus the best
    training-step efficiency per preset (and batch) of each train_step*.json, newest file first
    (all presets and variants; the Table-1 step on both idle cores; on one core)."""
    rows = []
    for name, path, what, target in HEADLINES:
        value = _dig(results_by_file.get(name), path)
        if value is not None:
            rows.append(
                {"figure": what, "value": value, "target": target, "source": f"{name}: {path}"}
            )
    step_files = [n for n in results_by_file if n.startswith("train_step") and n.endswith(".json")]
    when = {n: str(_dig(results_by_file.get(n), "time_utc") or "") for n in step_files}
    for name in sorted(step_files, key=lambda n: (when[n], n), reverse=True):
        table = _dig(results_by_file.get(name), "table") or []
        best = {}
        for r in table:
            eff = r.get("efficiency_pct") if isinstance(r, dict) else None
            key = (r.get("preset"), r.get("batch")) if isinstance(r, dict) else None
            if isinstance(eff, (int, float)) and eff > best.get(key, {}).get(
                "efficiency_pct", -1.0
            ):
                best[key] = r
        for (preset, batch), r in best.items():
            goal = ">= 75" if preset in ("box_seg_paper", "table1_reference") else ""
            at = f", batch {batch}" if batch else ""
            rows.append(
                {
                    "figure": f"train step {preset}{at}: model FLOP/s / fp32 matmul FLOP/s, % "
                    f"({r['variant']})",
                    "value": r["efficiency_pct"],
                    "target": goal,
                    "source": f"{name}" + (f" ({when[name]})" if when[name] else "") + ": table",
                }
            )
    return rows


def discover(scripts_dir: Path, only=None):
    scripts = sorted(p for p in Path(scripts_dir).glob("bench_*.py") if p.is_file())
    if only:
        wanted = {w.strip().removeprefix("bench_").removesuffix(".py") for w in only}
        unknown = wanted - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            raise SystemExit(
                f"--only: no benchmark named {', '.join(sorted(unknown))} in {scripts_dir} "
                f"(have {', '.join(s.stem.removeprefix('bench_') for s in scripts)})"
            )
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    return scripts


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_script(script: Path, results: Path, quick: bool, timeout: float, extra_args=()):
    """Runs one benchmark; returns its record (status, wall time, peak RSS, result files)."""
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{script.stem}.log"
    env = dict(os.environ)
    env["INDEP_SEG_BENCH_RESULTS"] = str(results)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else []) + list(extra_args)
    # scripts that ignore $INDEP_SEG_BENCH_RESULTS write into benchmarks/results: look there too
    dirs = [results] + (
        [BENCH_DIR / "results"] if (BENCH_DIR / "results").resolve() != results.resolve() else []
    )
    before = {p: p.stat().st_mtime_ns for d in dirs for p in _result_jsons(d)}
    start_ns = time.time_ns()
    t0 = time.perf_counter()
    timed_out = threading.Event()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    # ru_maxrss is in KiB on Linux
    record = {
        "script": script.name,
        "command": " ".join(cmd[1:]),
        "returncode": proc.returncode,
        "status": "timeout" if timed_out.is_set() else ("ok" if proc.returncode == 0 else "failed"),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_sys_s": round(usage.ru_stime, 2),
        "log": str(log_path),
        "results": {},
    }
    for p in [p for d in dirs for p in _result_jsons(d)]:
        if before.get(p) == p.stat().st_mtime_ns or p.stat().st_mtime_ns < start_ns:
            continue
        try:
            record["results"][p.name] = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            record["results"][p.name] = {"error": f"unreadable JSON: {e}"}
    if record["status"] != "ok":
        try:
            record["log_tail"] = log_path.read_text().strip().splitlines()[-5:]
        except OSError:
            pass
    return record


def collected_records(results: Path):
    """One record per result JSON already in `results` (`--collect`): nothing is run, so the
    wall time is unknown and the peak memory is the one the benchmark recorded itself, if any."""
    records = []
    for p in _result_jsons(results):
        try:
            res = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            res = {"error": f"unreadable JSON: {e}"}
        rss = _dig(res, "maxrss_mb") or _dig(res, "peak_rss_mb")
        records.append(
            {
                "script": p.name,
                "command": "",
                "returncode": None,
                "status": "collected",
                "wall_s": None,
                "peak_rss_mb": rss,
                "results": {p.name: res},
            }
        )
    return records


def _result_jsons(results: Path):
    return sorted(
        p for p in results.glob("*.json") if p.name not in SUMMARY_FILES and ".tmp-" not in p.name
    )


def _fmt(v):
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v[:6]) + (" ..." if len(v) > 6 else "")
    if isinstance(v, dict):
        return json.dumps(v, default=str)[:80]
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows):
    if not rows:
        return ""
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def render_markdown(summary):
    out = [
        f"# Benchmark summary ({summary['time_utc']}{', quick' if summary['quick'] else ''})",
        "",
        f"Machine: {summary['machine']['cpu']}, {summary['machine']['cpus']} CPUs; "
        f"load average at start {_fmt(summary['machine']['load_avg_start'])}.",
        "",
    ]
    heads = headline_rows({n: r for b in summary["benchmarks"] for n, r in b["results"].items()})
    if heads:
        out += ["## Headline figures", "", markdown_table(heads), ""]
    out.append(
        markdown_table(
            [
                {
                    "benchmark": b["script"],
                    "status": b["status"],
                    "wall s": b["wall_s"],
                    "peak RSS MB": b["peak_rss_mb"],
                    "results": ", ".join(b["results"]) or "-",
                }
                for b in summary["benchmarks"]
            ]
        )
    )
    for b in summary["benchmarks"]:
        for name, res in b["results"].items():
            out += ["", f"## {name} (from {b['script']}, peak RSS {b['peak_rss_mb']} MB)", ""]
            if not isinstance(res, dict):
                out.append(f"`{_fmt(res)}`")
                continue
            scalars = [
                {"figure": k, "value": v}
                for k, v in res.items()
                if isinstance(v, (int, float, str, bool)) and k != "table"
            ]
            if scalars:
                out += [markdown_table(scalars), ""]
            table = res.get("table")
            if isinstance(table, list) and table and all(isinstance(r, dict) for r in table):
                out.append(markdown_table(table))
        if b["status"] not in ("ok", "skipped", "collected"):
            out += [
                "",
                f"**{b['script']}: {b['status']}** (exit {b['returncode']}); log `{b['log']}`:",
                "```",
            ]
            out += b.get("log_tail", []) + ["```"]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Run every benchmarks/bench_*.py and collect the results."
    )
    ap.add_argument(
        "--quick", action="store_true", help="pass --quick to every benchmark (tiny configurations)"
    )
    ap.add_argument("--only", default=None, help="comma-separated names, e.g. train_step,serving")
    ap.add_argument("--results-dir", default=str(BENCH_DIR / "results"))
    ap.add_argument("--scripts-dir", default=str(BENCH_DIR), help=argparse.SUPPRESS)
    ap.add_argument(
        "--timeout", type=float, default=3600, help="seconds per benchmark (killed after)"
    )
    ap.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: write summary.json and SUMMARY.md from the result JSON already there",
    )
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        ap.error(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    results = Path(args.results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    scripts = discover(Path(args.scripts_dir), args.only.split(",") if args.only else None)
    if not scripts:
        print(f"no benchmarks/bench_*.py found in {args.scripts_dir}", file=sys.stderr)
    summary = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "load_avg_start": list(os.getloadavg()),
            "python": platform.python_version(),
        },
        "benchmarks": [],
    }
    if args.collect:
        summary["benchmarks"] = collected_records(results)
        scripts = []
    for script in scripts:
        if args.quick and "--quick" not in script.read_text():
            rec = {
                "script": script.name,
                "command": "",
                "returncode": None,
                "status": "skipped",
                "wall_s": 0.0,
                "peak_rss_mb": None,
                "results": {},
                "note": "has no --quick mode (not run by run_all --quick)",
            }
            print(f"[run_all] {script.name}: skipped (no --quick mode)", flush=True)
            summary["benchmarks"].append(rec)
            continue
        print(f"[run_all] {script.name} ...", flush=True)
        rec = run_script(script, results, args.quick, args.timeout)
        print(
            f"[run_all] {script.name}: {rec['status']} in {rec['wall_s']} s, peak RSS "
            f"{rec['peak_rss_mb']} MB, "
            f"results {list(rec['results'])}",
            flush=True,
        )
        summary["benchmarks"].append(rec)
        # written after every benchmark so that a long run leaves a partial summary behind
        write_json_atomic(results / "summary.json", summary)
        write_text_atomic(results / "SUMMARY.md", render_markdown(summary))
    write_json_atomic(results / "summary.json", summary)
    write_text_atomic(results / "SUMMARY.md", render_markdown(summary))
    print(f"[run_all] wrote {results / 'summary.json'} and {results / 'SUMMARY.md'}")
    return (
        0
        if all(b["status"] in ("ok", "skipped", "collected") for b in summary["benchmarks"])
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
