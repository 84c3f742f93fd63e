"""Bad files through every CLI that reads images (issue 9): truncated PNG and JPEG, a zero-byte
file, a text file named .png, and a huge (20000 x 20000, 50 KB on disk) PNG, generated here.

For each (command, file): a non-zero exit, an error message that names the file, no traceback,
and nothing written (each call runs in a fresh empty working directory with fresh output
paths). The calls of one command go through `indep_seg.cli.main` in one subprocess (one
TensorFlow start per command instead of one per file), capped in address space so that a
decoder that tries to allocate the huge image fails there rather than exhaust the machine.
Commands that are still placeholders are skipped with the reason.
"""

import io
import json
import struct
import subprocess
import zlib

import numpy as np
import pytest
from reliability_helpers import PY, REPO, child_env, command_status

pytestmark = pytest.mark.reliability

_DRIVER = r"""
import contextlib, io, json, os, resource, sys, traceback
cap = 12 * 2 ** 30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from indep_seg import cli
out = []
for case in json.loads(sys.argv[1]):
    os.chdir(case["cwd"])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(case["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        code = "exception"
        err.write(traceback.format_exc())
    out.append({"file": case["file"], "code": code, "stderr": err.getvalue()[-3000:]})
print("RESULTS " + json.dumps(out))
"""


def _png(w, h, rows=None, bit_depth=8, color_type=2):
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def make_corpus(folder):
    """{kind: path} of the bad files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    jpg = buf.getvalue()
    files = {
        "truncated_png": ("truncated.png", png[: len(png) // 2]),
        "truncated_jpeg": ("truncated.jpg", jpg[: len(jpg) // 3]),
        "zero_byte": ("empty.png", b""),
        "wrong_extension": (
            "notes.png",
            b"filename,x0,y0,x1,y1\nthis is a text file, not an image\n",
        ),
        # valid 1-bit PNG of 20000 x 20000 pixels: 1.2 GB as uint8 RGB, 4.8 GB as float32
        "huge": (
            "huge.png",
            _png(20000, 20000, b"\x00" * ((20000 // 8 + 1) * 20000), bit_depth=1, color_type=0),
        ),
    }
    out = {}
    for kind, (name, data) in files.items():
        (folder / name).write_bytes(data)
        out[kind] = folder / name
    return out


def good_images(folder, n=2):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    names = []
    for i in range(n):
        name = f"good{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def _run_cases(cases, timeout=600):
    p = subprocess.run(
        [PY, "-c", _DRIVER, json.dumps(cases)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"the driver died (exit {p.returncode}): {p.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS ") :])


def _files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def _check(results, cases, allowed_files=()):
    failures = []
    for res, case in zip(results, cases):
        name = case["file_name"]
        problems = []
        if res["code"] == 0 or res["code"] == "exception":
            problems.append(f"exit {res['code']}")
        if name not in res["stderr"]:
            problems.append("the error does not name the file")
        if "Traceback" in res["stderr"]:
            problems.append("a traceback instead of a clear error")
        written = [f for f in _files_under(case["scratch_path"]) if f not in allowed_files]
        if written:
            problems.append(f"wrote {written}")
        if problems:
            failures.append(
                f"{case['kind']} ({name}): {'; '.join(problems)}; stderr: {res['stderr'][-400:]!r}"
            )
    assert not failures, "\n".join(failures)


def _cases(tmp_path, corpus, argv_fn):
    cases = []
    for kind, path in corpus.items():
        scratch = tmp_path / f"scratch_{kind}"
        scratch.mkdir()
        argv = argv_fn(kind, path, scratch)
        cases.append(
            {
                "kind": kind,
                "file": str(path),
                "file_name": path.name,
                "argv": [str(a) for a in argv],
                "cwd": str(scratch),
                "scratch_path": scratch,
            }
        )
    return cases


def _serialisable(cases):
    return [{k: v for k, v in c.items() if k != "scratch_path"} for c in cases]


def _go(tmp_path, corpus, argv_fn, allowed=()):
    cases = _cases(tmp_path, corpus, argv_fn)
    results = _run_cases(_serialisable(cases))
    _check(results, cases, allowed)


def _folder_with(tmp_path, kind, bad, boxes=True):
    """A folder of two good images plus one bad file (and a boxes.csv naming all three)."""
    d = tmp_path / f"folder_{kind}"
    names = good_images(d)
    (d / bad.name).write_bytes(bad.read_bytes())
    if boxes:
        rows = ["filename,x0,y0,x1,y1"] + [f"{n},4,4,60,60" for n in names + [bad.name]]
        (d / "boxes.csv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture
def corpus(tmp_path):
    return make_corpus(tmp_path / "corpus")


def test_bad_files_count(tmp_path, corpus):
    if command_status("count"):
        pytest.skip(command_status("count"))
    model = tmp_path / "no_model_needed"  # the image is read (and rejected) before the model
    _go(
        tmp_path,
        corpus,
        lambda kind, path, scratch: [
            "count",
            "--model",
            model,
            path,
            "--json-out",
            scratch / "out.json",
        ],
    )


def test_bad_files_segment(tmp_path, corpus):
    if command_status("segment"):
        pytest.skip(command_status("segment"))
    model = tmp_path / "model"
    from reliability_helpers import tiny_segmenter

    tiny_segmenter().save(model / "segmenter")
    _go(
        tmp_path,
        corpus,
        lambda kind, path, scratch: ["segment", "--model", model, path, "--out", scratch / "masks"],
    )


def test_bad_files_evaluate(tmp_path, corpus):
    if command_status("evaluate"):
        pytest.skip(command_status("evaluate"))
    model = tmp_path / "model"
    from reliability_helpers import tiny_segmenter

    tiny_segmenter().save(model / "segmenter")

    def argv(kind, path, scratch):
        images = _folder_with(tmp_path, kind, path, boxes=False)
        masks = tmp_path / f"masks_{kind}"
        masks.mkdir()
        from PIL import Image

        square = np.zeros((64, 64), np.uint8)
        square[16:48, 16:48] = 255
        for p in images.iterdir():
            Image.fromarray(square).save(masks / (p.stem + ".png"))
        return ["evaluate", "--model", model, "--images", images, "--masks", masks]

    _go(tmp_path, corpus, argv)


def test_bad_files_tfrecords(tmp_path, corpus):
    if command_status("tfrecords"):
        pytest.skip(command_status("tfrecords"))
    # one call per file through `folder` (a folder of good images plus the bad one) ...
    _go(
        tmp_path,
        corpus,
        lambda kind, path, scratch: [
            "tfrecords",
            "folder",
            _folder_with(tmp_path, kind, path),
            "--out",
            scratch / "data",
            "--no-progress",
        ],
    )
    # ... and through `patches` (the one image is the bad file)
    tmp2 = tmp_path / "patches"
    tmp2.mkdir()
    _go(
        tmp2,
        corpus,
        lambda kind, path, scratch: [
            "tfrecords",
            "patches",
            path,
            "--out",
            scratch / "data",
            "--window",
            16,
            "--stride",
            16,
            "--no-progress",
        ],
    )


def test_bad_files_train_data(tmp_path, corpus):
    if command_status("train"):
        pytest.skip(command_status("train"))
    # config.yaml (the resolved options of the run) is written before the data are read
    _go(
        tmp_path,
        corpus,
        lambda kind, path, scratch: [
            "train",
            "--experiment",
            "box_seg",
            "--model-dir",
            scratch / "run",
            "--steps",
            1,
            "--data",
            _folder_with(tmp_path, kind, path),
        ],
        allowed=("run/config.yaml",),
    )
