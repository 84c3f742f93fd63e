"""Helpers shared by the benchmark scripts: where results go, atomic JSON writes, timing.

Convention for every `benchmarks/bench_*.py` (what `run_all.py` relies on):
- accepts `--quick` (a tiny configuration that finishes in seconds, for the runner's test);
- writes its figures as JSON into `results_dir()`: `$INDEP_SEG_BENCH_RESULTS` when set (the
  runner sets it), else `benchmarks/results/`; file name `<script name without bench_>.json`;
- a JSON may hold `"table": [ {column: value, ...}, ... ]`, rendered as a Markdown table in
  `SUMMARY.md`; other top-level scalars are listed as key / value.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def results_dir() -> Path:
    d = Path(os.environ.get("INDEP_SEG_BENCH_RESULTS") or BENCH_DIR / "results")
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_json_atomic(path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_text_atomic(path, text) -> Path:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def matmul_peak(n=2048, repeats=10, use_tf=True):
    """Best fp32 GFLOP/s of an n x n matmul: numpy's BLAS and TensorFlow's (oneDNN/Eigen)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    flop = 2.0 * n**3

    def best_rate(fn):
        for _ in range(2):
            fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return flop / min(times) / 1e9, flop / sorted(times)[len(times) // 2] / 1e9

    out = {}
    out["numpy_gflops_best"], out["numpy_gflops_median"] = best_rate(lambda: a @ b)
    if use_tf:
        import tensorflow as tf

        ta, tb = tf.constant(a), tf.constant(b)
        f = tf.function(lambda: tf.matmul(ta, tb))
        out["tf_gflops_best"], out["tf_gflops_median"] = best_rate(lambda: f().numpy())
    out["peak_gflops"] = max(v for k, v in out.items() if k.endswith("_best"))
    out["n"] = n
    return out
