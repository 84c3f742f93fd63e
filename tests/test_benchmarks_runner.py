"""benchmarks/run_all.py on tiny configurations: it runs the scripts, attributes their JSON and
peak memory to them, survives failures and timeouts, and writes summary.json + SUMMARY.md.
The benchmark figures themselves are never asserted."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_ALL = REPO / "benchmarks" / "run_all.py"


def _script(d: Path, name: str, body: str):
    (d / name).write_text(textwrap.dedent(body))


def _run(args, timeout=120):
    return subprocess.run(
        [sys.executable, str(RUN_ALL)] + args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_runner_collects_results_memory_and_failures(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    results = tmp_path / "results"
    common = """
        # accepts --quick
        import json, os, sys
        from pathlib import Path
        out = Path(os.environ["INDEP_SEG_BENCH_RESULTS"])
    """
    _script(
        scripts,
        "bench_big.py",
        common
        + """
        block = bytearray(300 * 1024 * 1024)       # touch 300 MB so that it is resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        rows = [{"preset": "a", "images_per_s": 1.5}, {"preset": "b", "images_per_s": 2.5}]
        result = {"quick": "--quick" in sys.argv, "iou": 0.5, "table": rows}
        (out / "big.json").write_text(json.dumps(result))
    """,
    )
    _script(
        scripts,
        "bench_small.py",
        common
        + """
        (out / "small.json").write_text(json.dumps({"count_error": 3}))
    """,
    )
    _script(
        scripts,
        "bench_noquick.py",
        "raise SystemExit('a script without a quick mode must not run')\n",
    )
    _script(
        scripts,
        "bench_broken.py",
        """
        # --quick
        raise RuntimeError("this benchmark is broken on purpose")
    """,
    )
    _script(
        scripts,
        "bench_slow.py",
        """
        # --quick
        import time
        time.sleep(60)
    """,
    )
    _script(scripts, "not_a_benchmark.py", "raise SystemExit('must not run')\n")
    p = _run(
        ["--quick", "--scripts-dir", str(scripts), "--results-dir", str(results), "--timeout", "10"]
    )
    assert p.returncode == 1, p.stdout + p.stderr  # two benchmarks failed
    summary = json.loads((results / "summary.json").read_text())
    by = {b["script"]: b for b in summary["benchmarks"]}
    assert sorted(by) == [
        "bench_big.py",
        "bench_broken.py",
        "bench_noquick.py",
        "bench_slow.py",
        "bench_small.py",
    ]
    assert by["bench_noquick.py"]["status"] == "skipped"
    assert by["bench_big.py"]["status"] == "ok"
    assert by["bench_big.py"]["results"]["big.json"]["quick"] is True  # --quick was passed
    assert by["bench_small.py"]["results"] == {"small.json": {"count_error": 3}}
    assert by["bench_broken.py"]["status"] == "failed"
    assert "broken on purpose" in " ".join(by["bench_broken.py"]["log_tail"])
    assert by["bench_slow.py"]["status"] == "timeout"
    assert by["bench_slow.py"]["wall_s"] < 30
    # peak memory is per benchmark, not the maximum over all children so far
    assert by["bench_big.py"]["peak_rss_mb"] >= 300
    assert by["bench_small.py"]["peak_rss_mb"] < 100
    md = (results / "SUMMARY.md").read_text()
    assert "| preset | images_per_s |" in md and "| b | 2.5 |" in md
    assert "| count_error | 3 |" in md
    assert "bench_slow.py: timeout" in md


def test_runner_only_rejects_unknown_names(tmp_path):
    p = _run(["--only", "no_such_benchmark", "--results-dir", str(tmp_path)], timeout=60)
    assert p.returncode != 0 and "no_such_benchmark" in p.stderr


@pytest.mark.slow
def test_runner_runs_the_real_train_step_benchmark_quick(tmp_path):
    p = _run(["--quick", "--only", "train_step", "--results-dir", str(tmp_path)], timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    (rec,) = summary["benchmarks"]
    res = rec["results"]["train_step.json"]
    (row,) = res["table"]
    assert "error" not in row, row
    assert row["images_per_s"] > 0 and row["model_gflop_per_step"] > 0
    assert res["peak_gflops"] > 0
    assert "train_step.json" in (tmp_path / "SUMMARY.md").read_text()


def test_collect_tables_the_json_already_there_without_running(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    _script(scripts, "bench_boom.py", "raise SystemExit('--collect must not run anything')\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "hoc_nuclei.json").write_text(
        json.dumps({"count": 117, "one_object_fraction": 0.97})
    )
    (results / "train_step.json").write_text(
        json.dumps(
            {
                "table": [
                    {"preset": "box_seg_paper", "variant": "baseline", "efficiency_pct": 30.0},
                    {"preset": "box_seg_paper", "variant": "xla", "efficiency_pct": 41.5},
                ],
                "maxrss_mb": 812,
            }
        )
    )
    (results / "broken.json").write_text("{not json")
    p = _run(["--collect", "--scripts-dir", str(scripts), "--results-dir", str(results)])
    assert p.returncode == 0, p.stdout + p.stderr
    summary = json.loads((results / "summary.json").read_text())
    by = {b["script"]: b for b in summary["benchmarks"]}
    assert sorted(by) == ["broken.json", "hoc_nuclei.json", "train_step.json"]
    assert {b["status"] for b in by.values()} == {"collected"}
    assert by["train_step.json"]["peak_rss_mb"] == 812
    assert "unreadable JSON" in by["broken.json"]["results"]["broken.json"]["error"]
    md = (results / "SUMMARY.md").read_text()
    headline = md.split("## Headline figures", 1)[1].split("\n## ", 1)[0]
    assert "| hoc: `indep-seg count` on the nuclei image (125) | 117 | 113-137 |" in headline
    # the best variant of each preset, not the first
    assert "| 41.5 | >= 75 |" in headline and "(xla)" in headline and "| 30 |" not in headline


def test_profile_train_step_quick_names_the_convolutions(tmp_path):
    out = tmp_path / "profile.json"
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "profile_train_step.py"),
            "--quick",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["step_s"] > 0 and res["model_gflop_per_step"] > 0
    kinds = [k for k, _ in res["by_op_type_ms"]]
    assert any("Conv2D" in k for k in kinds), kinds
    assert all(ms >= 0 for _, ms in res["by_node_ms"])
    assert "ms per step by op type" in p.stdout


def test_bench_layers_quick_pairs_every_library_layer_with_keras(tmp_path):
    out = tmp_path / "layers.json"
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_layers.py"),
            "--quick",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["quick"] is True
    libs = {row["library_layer"] for row in res["table"]}
    assert libs == {
        "UnfusedBiasConv2D",
        "GemmConv2DTranspose",
        "GemmConv2D",
        "FusedBatchNormalization",
    }
    for row in res["table"]:
        assert row["keras_ms"] > 0 and row["library_ms"] > 0
        assert row["max_abs_output_difference"] < 1e-3, row  # same layer, same weights


def test_bench_train_step_rejects_a_bad_batch_size(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_train_step.py"),
            "--batch-size",
            "0",
            "--out",
            str(tmp_path / "x.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0 and "--batch-size" in p.stderr
    assert not (tmp_path / "x.json").exists()
