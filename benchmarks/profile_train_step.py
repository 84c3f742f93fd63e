"""Where a training step's time goes: a TensorFlow profiler trace summed by op type and by node.

    .venv/bin/python benchmarks/profile_train_step.py --preset table1_reference --variant
    fused_fastlayers
    .venv/bin/python benchmarks/profile_train_step.py --preset box_seg_paper --batch-size 16
    .venv/bin/python benchmarks/profile_train_step.py --quick        # tiny reference step, seconds

Builds the step as `bench_train_step.py` does (the Table-1 reference step with a variant's
options, or an application's own step), runs it a few times, traces `--steps` steps with
`tf.profiler`, and prints the step time, the time of each op type and the slowest nodes. Op times
are summed over TensorFlow's executor threads, so with the default two inter-op threads they can
add up to more than the step; `--inter-op 1` runs one op at a time, which is what the per-layer
figures in docs/performance.md were read from. `--json FILE` also writes the tables.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _step(preset, variant, batch_size):
    from benchmarks.bench_train_step import APP_PRESETS, REFERENCE_PRESETS, VARIANTS

    opts = {k: v for k, v in VARIANTS[variant][1].items() if k != "policy"}
    if preset in ("table1_reference", "tiny"):
        from benchmarks.table1 import Table1Step

        sizes = dict(REFERENCE_PRESETS[preset])
        if batch_size:
            sizes["batch_size"] = batch_size
        ref = Table1Step(**sizes, **opts)
        return ref.step, ref.batch(), ref.model_flops()["per_step"]
    if preset in APP_PRESETS:
        from benchmarks import train_step_adapters as adapters

        h = adapters.ADAPTERS[preset](
            preset, jit_compile=bool(opts.get("jit_compile")), batch_size=batch_size
        )
        return h.step, h.batch, h.flops["per_step"]
    raise SystemExit(
        f"--preset: expected table1_reference, tiny or one of {APP_PRESETS}, got {preset!r}"
    )


def profile(preset, variant="baseline", batch_size=None, steps=2, inter_op=None, top=25):
    """Step time and {op type: ms per step}, {node: ms per step} from a profiler trace."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))
    step, batch, flops = _step(preset, variant, batch_size)

    def run(n):
        out = None
        for _ in range(n):
            out = step(*batch)
        tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, out)

    run(3)
    t = time.perf_counter()
    run(steps)
    untraced = (time.perf_counter() - t) / steps
    logdir = tempfile.mkdtemp(prefix="profile_train_step_")
    tf.profiler.experimental.start(logdir)
    t = time.perf_counter()
    run(steps)
    traced = (time.perf_counter() - t) / steps
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(
        Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes()
    )
    by_type, by_node = collections.defaultdict(float), collections.defaultdict(float)
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = names.get(ev.metadata_id, "")
                if ":" not in name:
                    continue
                node, kind = name.rsplit(":", 1)
                if (
                    kind.startswith("__inference")
                    or kind == "Run"
                    or node.startswith("ExecutorState")
                ):
                    continue  # the function call and the executor's own spans, not ops
                ms = ev.duration_ps / 1e9 / steps
                by_type[kind] += ms
                by_node[f"{node} ({kind})"] += ms

    def rank(d):
        return [(k, round(v, 2)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {
        "preset": preset,
        "variant": variant,
        "batch_size": batch_size,
        "inter_op": inter_op,
        "step_s": round(untraced, 4),
        "step_s_traced": round(traced, 4),
        "model_gflop_per_step": flops / 1e9,
        "ops_ms_total": round(sum(by_type.values()), 1),
        "by_op_type_ms": rank(by_type),
        "by_node_ms": rank(by_node),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="table1_reference")
    ap.add_argument(
        "--variant", default="baseline", help="a bench_train_step.py variant (step options only)"
    )
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=2, help="traced steps")
    ap.add_argument(
        "--inter-op",
        type=int,
        default=None,
        help="TensorFlow inter-op threads (1: one op at a time)",
    )
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--quick", action="store_true", help="the tiny reference step, one traced step")
    args = ap.parse_args()
    if args.quick:
        args.preset, args.steps, args.top = "tiny", 1, 10
    res = profile(args.preset, args.variant, args.batch_size, args.steps, args.inter_op, args.top)
    print(
        f"{res['preset']} / {res['variant']}: {res['step_s']:.3f} s per step "
        f"({res['step_s_traced']:.3f} traced), {res['model_gflop_per_step']:.3g} model GFLOP; "
        f"ops sum to {res['ops_ms_total']:.0f} ms per step"
    )
    for title, rows in (("op type", res["by_op_type_ms"]), ("node", res["by_node_ms"])):
        print(f"\nms per step by {title}:")
        for name, ms in rows:
            print(f"  {ms:9.2f}  {name}")
    if args.json:
        from benchmarks.common import write_json_atomic

        write_json_atomic(Path(args.json), res)


if __name__ == "__main__":
    main()
