"""`indep-seg` as a user calls it: --help without TensorFlow, quiet start-up logs unless --verbose,
one clear line (no traceback) for photos without boxes."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from indep_seg.cli import SUBCOMMANDS
from indep_seg.quiet import is_noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*argv, env=None, timeout=300):
    e = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "indep_seg", *argv],
        cwd=ROOT,
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_NO_TF = (
    "import sys\nfrom indep_seg import cli\ntry:\n    cli.main(sys.argv[1:])\n"
    "except SystemExit:\n    pass\nassert 'tensorflow' not in sys.modules, sorted(\n"
    "    m for m in sys.modules if m.startswith(('tensorflow', 'keras')))[:5]\nprint('NO-TF')\n"
)


@pytest.mark.parametrize(
    "argv",
    [["--help"]] + [[name, "--help"] for name in SUBCOMMANDS] + [["--verbose", "train", "--help"]],
)
def test_help_answers_without_importing_tensorflow(argv):
    r = subprocess.run(
        [sys.executable, "-c", _NO_TF, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "NO-TF" in r.stdout and "usage: indep-seg" in r.stdout


def test_verbose_flag_is_listed_in_help():
    r = _run("train", "--help")
    assert "--verbose" in r.stdout


def test_is_noise_matches_tensorflow_start_up_lines_only():
    assert is_noise(
        "I0000 00:00:1796393584.716753   11772 cudart_stub.cc:31] Could not find cuda drivers"
    )
    assert is_noise(
        "E0000 00:00:1796393392.009656   11357 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error"
    )
    assert is_noise(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    )
    assert not is_noise("indep-seg train: error: --data x: no boxes")
    assert not is_noise("F0000 00:00:1796393392.009656   11357 x.cc:52] fatal")


@pytest.fixture(scope="module")
def photos_without_boxes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(folder / f"im{i}.jpg")
    return folder


def test_train_on_photos_without_boxes_is_one_clear_line_and_quiet(photos_without_boxes, tmp_path):
    r = _run(
        "train",
        "--experiment",
        "box_seg",
        "--data",
        str(photos_without_boxes),
        "--model-dir",
        str(tmp_path / "run"),
    )
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith(f"indep-seg train: error: --data {photos_without_boxes}: no boxes")
    assert "filename,x0,y0,x1,y1" in lines[0] and "--masks" in lines[0]
    # and with --verbose, TensorFlow's start-up lines are shown again (so the filter is what hides
    # them)
    r = _run(
        "train",
        "--experiment",
        "box_seg",
        "--data",
        str(photos_without_boxes),
        "--model-dir",
        str(tmp_path / "run"),
        "--verbose",
    )
    assert r.returncode == 2
    assert any(is_noise(line) for line in r.stderr.splitlines()), r.stderr


def test_verbose_is_accepted_anywhere_even_after_a_nested_subcommand(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom indep_seg import cli\nsys.exit(cli.main(sys.argv[1:]))",
            "tfrecords",
            "inspect",
            str(tmp_path / "none-*.tfrecord"),
            "--verbose",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "unrecognized arguments" not in r.stderr and "indep-seg tfrecords: error:" in r.stderr, (
        r.stderr[-1500:]
    )


def test_stderr_filter_drops_noise_and_passes_everything_else():
    script = (
        "import os, sys, time\nfrom indep_seg import quiet\nquiet.configure(verbose=False)\n"
        "os.write(2, b'I0000 00:00:1796393584.716753   11772 cudart_stub.cc:31] Could not find "
        "cuda\\n')\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR\\n')\n"
        "os.write(2, b'  3%|bar| 1/30\\r')\n"
        "print('a real warning', file=sys.stderr)\n"
        "os.write(2, b'E0000 00:00:1796393392.009656   11357 cuda_platform.cc:52] failed call to "
        "cuInit\\n')\n"
        "os.write(2, b'no newline at the end')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b"  3%|bar| 1/30\ra real warning\nno newline at the end", r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["export", "--model-dir", "/no/such/run", "--export-base", "/tmp/x"],
        ["segment", "/no/such/photo.jpg", "--model", "/no/model", "--out", "/tmp/x"],
        ["evaluate", "--model", "/x", "--images", "/no/such", "--masks", "/no/such"],
        ["train", "--experiment", "box_seg"],
    ],
)
def test_plain_mistakes_answer_without_importing_tensorflow(argv):
    script = (
        "import sys\nfrom indep_seg import cli\nrc = cli.main(sys.argv[1:])\n"
        "assert rc == 2, rc\nassert 'tensorflow' not in sys.modules\nprint('NO-TF')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "NO-TF" in r.stdout, r.stderr[-1500:]
    assert f"indep-seg {argv[0]}: error:" in r.stderr
