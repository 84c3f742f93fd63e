"""Training-step efficiency: images/s and achieved FLOP/s / the machine's fp32 matmul rate.

    .venv/bin/python benchmarks/bench_train_step.py                 # all presets, all variants
    .venv/bin/python benchmarks/bench_train_step.py --presets box_seg_paper --variants baseline,xla
    .venv/bin/python benchmarks/bench_train_step.py --quick         # seconds, for the runner's test

Variants that need another environment (TF_ENABLE_ONEDNN_OPTS, TF_XLA_FLAGS), thread settings
or precision policy run in their own worker subprocess (those act only before TensorFlow
starts); the others of a preset share one worker (up to --max-group), are all built and
compiled (two warm-up steps each), and are then timed in interleaved bursts A B C A B C ...,
`--repeats` bursts of `--steps` steps each, so that variants compared with each other saw the
same share of the shared CPU. The best burst is the figure; the spread is recorded, and so is
the TensorFlow 2048^3 matmul rate measured inside the worker around its bursts
(`local_peak_gflops`: how much of the CPU the worker really had).

FLOP counting (see benchmarks/flops.py): the model FLOP of a step is counted from the
networks' layers (Conv2D / Conv2DTranspose / Dense multiply-adds), 3x the forward FLOP for
every network pass that is differentiated and 1x for a pass without gradient; the FLOP of
the traced step graph (TensorFlow's registry, what the step really executes, incl. the
power iterations of spectral norm) is recorded next to it. Efficiency = model FLOP/s /
the best fp32 2048x2048 matmul GFLOP/s of numpy and TensorFlow measured in the same run.

Presets: the application's own networks when `indep_seg.training.experiments` registers the preset
and its model is importable (column `impl`); otherwise the Table-1 reference step of
`benchmarks/table1.py` with the preset's sizes (`impl = table1_reference`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, matmul_peak, results_dir, write_json_atomic  # noqa: E402

# Sizes of the stand-alone Table-1 reference step (benchmarks/table1.py). `table1_reference`
# is Table 1 exactly at batch 16 (the issue's ~219 GFLOP step); the box_seg presets fall back
# to these sizes while the application's model is not importable.
REFERENCE_PRESETS = {
    "table1_reference": dict(resolution=128, width_mult=1.0, batch_size=16),
    "box_seg_paper": dict(resolution=128, width_mult=1.0, batch_size=16),
    "box_seg": dict(resolution=64, width_mult=0.5, batch_size=16),
    "tiny": dict(resolution=64, width_mult=0.0625, batch_size=2),
}
APP_PRESETS = ["box_seg_paper", "box_seg", "ilsgan_paper", "ilsgan", "hoc_paper", "hoc"]
# variants that only the reference step has (its step structure / layout are ours to change)
REFERENCE_ONLY = {
    "fused",
    "fused_fusedadam",
    "fused_fusedadam_fusedbn",
    "fused_fastlayers",
    "fused_fastlayers_unfusedbias",
    "fused_split2_intra1_inter2",
    "fused_split2",
    "xla_fused",
    "xla_fused_onednn_off",
    "nchw_xla_fused",
    "nchw",
    "bf16_mixed_xla_fused",
}
APP_VARIANTS = ["baseline", "onednn_off", "threads_intra2_inter1", "xla", "xla_auto_jit"]

# variant -> (environment, step options, threading)
VARIANTS = {
    "baseline": ({}, {}, None),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}, None),
    "threads_intra2_inter1": ({}, {}, (2, 1)),
    "threads_intra1_inter2": ({}, {}, (1, 2)),
    "fused": ({}, {"fused": True}, None),
    "fused_fusedadam": ({}, {"fused": True, "adam": "fused"}, None),
    "fused_fusedadam_fusedbn": ({}, {"fused": True, "adam": "fused", "bn": "fused"}, None),
    # session 5's library layers: FusedAdam, FusedBatchNormalization, GemmConv2DTranspose
    "fused_fastlayers": (
        {},
        {"fused": True, "adam": "fused", "bn": "fused", "deconv": "gemm"},
        None,
    ),
    # + UnfusedBiasConv2D in the discriminator (session 6: the library's layers since then)
    "fused_fastlayers_unfusedbias": (
        {},
        {"fused": True, "adam": "fused", "bn": "fused", "deconv": "gemm", "conv": "unfused_bias"},
        None,
    ),
    "xla": ({}, {"jit_compile": True}, None),
    "fused_split2": ({}, {"fused": True, "split": 2}, None),
    "fused_split2_intra1_inter2": ({}, {"fused": True, "split": 2}, (1, 2)),
    "xla_fused": ({}, {"jit_compile": True, "fused": True}, None),
    "xla_fused_onednn_off": (
        {"TF_ENABLE_ONEDNN_OPTS": "0"},
        {"jit_compile": True, "fused": True},
        None,
    ),
    "xla_auto_jit": ({"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"}, {}, None),
    "nchw_xla_fused": (
        {},
        {"jit_compile": True, "fused": True, "data_format": "channels_first"},
        None,
    ),
    "nchw": ({}, {"data_format": "channels_first"}, None),
    "bf16_mixed_xla_fused": (
        {},
        {"jit_compile": True, "fused": True, "policy": "mixed_bfloat16"},
        None,
    ),
}


def _build(preset, variant, opts, batch_size=None):
    """(callable step, batch tuple, batch size, model FLOP dict, impl, sizes, tf.function);
    `batch_size` overrides the preset's."""
    from benchmarks import train_step_adapters as adapters

    why_not = adapters.registered(preset) if preset in APP_PRESETS else "reference"
    if why_not is None:
        if variant in REFERENCE_ONLY:
            raise SystemExit(f"variant {variant} applies to the reference step only")
        h = adapters.ADAPTERS[preset](
            preset, jit_compile=bool(opts.get("jit_compile")), batch_size=batch_size
        )
        return h.step, h.batch, h.batch_size, h.flops, h.impl, h.config, h.step
    if preset in REFERENCE_PRESETS:
        from benchmarks.table1 import Table1Step

        sizes = dict(REFERENCE_PRESETS[preset])
        if batch_size:
            sizes["batch_size"] = int(batch_size)
        impl = "table1_reference" + ("" if why_not == "reference" else f" ({why_not})")
        ref = Table1Step(**sizes, **opts)
        return ref.step, ref.batch(), ref.batch_size, ref.model_flops(), impl, sizes, ref.step
    raise SystemExit(f"{preset}: {why_not}")


def _worker(preset, variants, steps, repeats, batch_size=None):
    """Builds every variant (they share environment, threads and precision policy), then times
    them in interleaved bursts (A B C A B C ...) so that all see the same share of the CPU."""
    env, _, threads = VARIANTS[variants[0]]
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    import resource

    import keras
    import numpy as np

    from benchmarks.common import matmul_peak

    policy = VARIANTS[variants[0]][1].get("policy")
    if policy:
        keras.mixed_precision.set_global_policy(policy)

    def first_value(out):
        leaf = tf.nest.flatten(out)[0]
        return float(tf.reshape(tf.cast(leaf, tf.float32), [-1])[0])

    built = {}
    for v in variants:
        opts = {k: val for k, val in VARIANTS[v][1].items() if k != "policy"}
        fn, batch, b_size, flops, impl, sizes, traced = _build(preset, v, opts, batch_size)
        t0 = time.perf_counter()
        first_value(fn(*batch))
        first_step_s = time.perf_counter() - t0
        first_value(fn(*batch))
        built[v] = dict(
            fn=fn,
            batch=batch,
            batch_size=b_size,
            flops=flops,
            impl=impl,
            sizes=sizes,
            traced=traced,
            opts=opts,
            first_step_s=first_step_s,
            bursts=[],
            out=None,
        )

    def matmul_cpu_rate(n=2048, reps=5):
        """TF matmul GFLOP per CPU-second of this process (insensitive to waiting for the CPU)."""
        a = tf.random.uniform((n, n))
        f = tf.function(lambda: tf.matmul(a, a))
        f().numpy()
        c = time.process_time()
        for _ in range(reps):
            f().numpy()
        return 2.0 * n**3 * reps / (time.process_time() - c) / 1e9

    local_peak = [matmul_peak(repeats=5)["tf_gflops_best"]]
    cpu_rates = [matmul_cpu_rate()]
    for _ in range(repeats):
        for v, b in built.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(steps):
                out = b["fn"](*b["batch"])
            first_value(out)
            b["bursts"].append((time.perf_counter() - t) / steps)
            b.setdefault("cpu", []).append((time.process_time() - c) / steps)
            b["out"] = out
    local_peak.append(matmul_peak(repeats=5)["tf_gflops_best"])
    cpu_rates.append(matmul_cpu_rate())
    results = []
    for v, b in built.items():
        g = {"error": "not traced"}
        try:
            from benchmarks.flops import graph_flops

            g = graph_flops(b["traced"].get_concrete_function(*b["batch"]))
        except Exception as e:  # counting must never hide the timing
            g = {"error": f"{type(e).__name__}: {e}"}
        results.append(
            {
                "preset": preset,
                "variant": v,
                "impl": b["impl"],
                "sizes": b["sizes"],
                "env": env,
                "step_options": b["opts"],
                "policy": policy,
                "threads": threads,
                "interleaved_with": [w for w in variants if w != v],
                "first_step_s": b["first_step_s"],
                "step_s_all": b["bursts"],
                "local_peak_gflops": max(local_peak),
                "cpu_s_per_step_all": b["cpu"],
                "matmul_gflop_per_cpu_s": max(cpu_rates),
                "step_s_best": min(b["bursts"]),
                "step_s_median": sorted(b["bursts"])[len(b["bursts"]) // 2],
                "batch_size": b["batch_size"],
                "model_flops": b["flops"],
                "graph_flops": g,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "loss_finite": bool(
                    all(
                        np.isfinite(np.asarray(tf.cast(x, tf.float32))).all()
                        for x in tf.nest.flatten(b["out"])
                    )
                ),
            }
        )
    return results


def _group_key(variant):
    env, opts, threads = VARIANTS[variant]
    return (
        tuple(sorted(env.items())),
        threads,
        opts.get("policy"),
        opts.get("data_format", "channels_last"),
    )


def _run_group(preset, variants, steps, repeats, timeout, batch_size=None):
    """One worker subprocess for variants that share environment / threads / policy."""
    env = dict(os.environ)
    env.update(VARIANTS[variants[0]][0])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--presets",
        preset,
        "--variants",
        ",".join(variants),
        "--steps",
        str(steps),
        "--repeats",
        str(repeats),
    ]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    try:
        p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [
            {"preset": preset, "variant": v, "error": f"timed out after {timeout} s"}
            for v in variants
        ]
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("["):
            return json.loads(line)
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return [
        {
            "preset": preset,
            "variant": v,
            "error": f"exit {p.returncode}: " + " | ".join(tail)[-600:],
        }
        for v in variants
    ]


def _row(r, peak):
    if "error" in r:
        return {"preset": r["preset"], "variant": r["variant"], "error": r["error"][:200]}
    f = r["model_flops"]["per_step"]
    gflops = f / r["step_s_best"] / 1e9
    spread = (max(r["step_s_all"]) - min(r["step_s_all"])) / min(r["step_s_all"])
    row = {
        "preset": r["preset"],
        "variant": r["variant"],
        "impl": r["impl"],
        "batch": r["batch_size"],
        "step_s_best": round(r["step_s_best"], 4),
        "step_spread_pct": round(100 * spread, 1),
        "images_per_s": round(r["batch_size"] / r["step_s_best"], 2),
        "model_gflop_per_step": round(f / 1e9, 2),
        "graph_gflop_per_step": round(r["graph_flops"].get("total", float("nan")) / 1e9, 2)
        if "total" in r["graph_flops"]
        else None,
        "achieved_gflops": round(gflops, 1),
        "efficiency_pct": round(100 * gflops / peak, 1),
        "local_peak_gflops": round(r["local_peak_gflops"], 1),
        # the same matmul measured inside the worker just before and after its bursts
        # (tracks how much of the shared CPU the run actually had)
        "efficiency_vs_local_peak_pct": round(100 * gflops / r["local_peak_gflops"], 1),
        # FLOP per CPU-second of the step / of the matmul, both in the worker: a utilisation
        # figure that waiting for a shared CPU does not change (busy-waiting threads count)
        "cpu_s_per_step": round(min(r["cpu_s_per_step_all"]), 3)
        if r.get("cpu_s_per_step_all")
        else None,
        "efficiency_per_cpu_s_pct": round(
            100 * (f / min(r["cpu_s_per_step_all"]) / 1e9) / r["matmul_gflop_per_cpu_s"], 1
        )
        if r.get("cpu_s_per_step_all")
        else None,
        "first_step_s": round(r["first_step_s"], 1),
        "maxrss_mb": round(r["maxrss_mb"]),
    }
    return row


def _merge(paths, out):
    parts = [json.loads(Path(p).read_text()) for p in paths]
    peak = max(p["peak_gflops"] for p in parts)
    runs = [r for p in parts for r in p["runs"]]
    result = dict(parts[-1])
    result.update(
        {
            "peak_gflops": peak,
            "runs": runs,
            "table": [_row(r, peak) for r in runs],
            "merged_from": [
                {
                    "file": str(p),
                    "time_utc": d.get("time_utc"),
                    "load_avg": d.get("load_avg"),
                    "peak_gflops": d["peak_gflops"],
                }
                for p, d in zip(paths, parts)
            ],
        }
    )
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny preset, baseline only, one short burst"
    )
    ap.add_argument("--presets", default=",".join(["table1_reference"] + APP_PRESETS))
    ap.add_argument(
        "--variants",
        default=None,
        help="comma-separated (default: all for table1_reference, "
        f"{','.join(APP_VARIANTS)} for the applications)",
    )
    ap.add_argument("--steps", type=int, default=3, help="steps per timed burst")
    ap.add_argument("--repeats", type=int, default=3, help="timed bursts per run")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size of every preset (default: each preset's own; the issue's box_seg_paper "
        "figure is at 16, the preset trains at 32)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds per worker subprocess")
    ap.add_argument(
        "--max-group",
        type=int,
        default=4,
        help="at most this many variants built in one worker and timed interleaved",
    )
    ap.add_argument("--out", default=None, help="JSON path (default RESULTS/train_step.json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="combine the runs of earlier result files into --out (table recomputed)",
    )
    args = ap.parse_args(argv)
    presets = args.presets.split(",")
    variants = args.variants.split(",") if args.variants else None
    for v in variants or []:
        if v not in VARIANTS:
            ap.error(f"--variants: unknown variant {v!r}; expected some of {', '.join(VARIANTS)}")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error(f"--batch-size: expected a positive int, got {args.batch_size}")
    known = set(REFERENCE_PRESETS) | set(APP_PRESETS)
    for p in presets:
        if p not in known:
            ap.error(
                f"--presets: unknown preset {p!r}; expected some of {', '.join(sorted(known))}"
            )
    if args.merge:
        return _merge(args.merge, Path(args.out) if args.out else results_dir() / "train_step.json")
    if args.worker:
        print(json.dumps(_worker(presets[0], variants, args.steps, args.repeats, args.batch_size)))
        return 0
    if args.quick:
        presets, variants, args.steps, args.repeats = ["tiny"], ["baseline"], 1, 1
    peak_before = matmul_peak(repeats=3 if args.quick else 10)
    runs = []
    from benchmarks import train_step_adapters as adapters

    for p in presets:
        app = p in APP_PRESETS and adapters.registered(p) is None
        if p in APP_PRESETS and not app and p not in REFERENCE_PRESETS:
            runs.append(
                {"preset": p, "variant": "-", "error": f"skipped: {adapters.registered(p)}"}
            )
            continue
        chosen = [
            v
            for v in (variants or (APP_VARIANTS if app else list(VARIANTS)))
            if not (app and v in REFERENCE_ONLY)
        ]
        groups = {}
        for v in chosen:
            groups.setdefault(_group_key(v), []).append(v)
        for group in groups.values():
            for i in range(0, len(group), args.max_group):
                for r in _run_group(
                    p,
                    group[i : i + args.max_group],
                    args.steps,
                    args.repeats,
                    args.timeout,
                    args.batch_size,
                ):
                    runs.append(r)
                    print(
                        json.dumps(
                            {k: r.get(k) for k in ("preset", "variant", "step_s_best", "error")}
                        ),
                        flush=True,
                    )
    peak_after = matmul_peak(repeats=3 if args.quick else 10)
    peak = max(peak_before["peak_gflops"], peak_after["peak_gflops"])
    table = [_row(r, peak) for r in runs]
    result = {
        "benchmark": "train_step",
        "quick": args.quick,
        "peak_gflops": round(peak, 1),
        "matmul_before": peak_before,
        "matmul_after": peak_after,
        "flop_rule": "model FLOP = 3x forward for each differentiated network pass, 1x for a pass "
        "without "
        "gradient; conv/deconv/dense multiply-adds x2 (benchmarks/flops.py)",
        "table": table,
        "runs": runs,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg": os.getloadavg(),
    }
    out = Path(args.out) if args.out else results_dir() / "train_step.json"
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
