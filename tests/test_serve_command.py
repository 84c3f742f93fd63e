"""`indep-seg serve --model_base_path_prefix ROOT` as a user calls it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _serve(*argv, env=None):
    e = {k: v for k, v in os.environ.items() if k != "INDEP_SEG_MODEL_BASE_PATH_PREFIX"}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "indep_seg", "serve", "--port", "0", *argv],
        cwd=ROOT,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_documents_the_prefix_flag():
    r = subprocess.run(
        [sys.executable, "-m", "indep_seg", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--model_base_path_prefix" in r.stdout and "INDEP_SEG_MODEL_BASE_PATH_PREFIX" in r.stdout


def test_base_path_outside_the_prefix_is_refused_in_one_line(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    (outside / "1").mkdir(parents=True)
    r = _serve(
        "--model_name",
        "m",
        "--model_base_path",
        str(outside),
        "--model_base_path_prefix",
        str(root),
    )
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("indep-seg serve: error:") and "--model_base_path_prefix" in lines[0]
    assert str(outside) in lines[0]
