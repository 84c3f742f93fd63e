"""The README's serving contract, gRPC snippet and curl examples, run as written against a live
`indep-seg serve` (only the ports and the model path are put in)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from indep_seg.serving.export import export_segmenter
from tests._serving_helpers import free_port, red_model, segmenter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def _section(title):
    start = README.index(f"\n## {title}")
    end = README.index("\n## ", start + 4)
    return README[start:end]


def _blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_contract_table_names_the_exported_signatures_inputs_and_dtypes(tmp_path):
    import tensorflow as tf

    section = _section("Serving contract")
    loaded = tf.saved_model.load(str(export_segmenter(segmenter(red_model(16)), tmp_path / "m")))
    assert sorted(loaded.signatures) == ["segment_bytes", "segment_in_box", "serving_default"]
    for name, fn in loaded.signatures.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        for arg, spec in fn.structured_input_signature[1].items():
            assert f"`{arg}`: {spec.dtype.name} `[N" in row, (name, arg, row)
            assert len(spec.shape) == (4 if arg == "image" else 2 if arg == "box" else 1)
        (out,) = fn.structured_outputs.items()
        assert (
            out[0] == "mask"
            and out[1].dtype == tf.float32
            and "`mask`: float32 `[N, H, W, 1]`" in row
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    export_segmenter(segmenter(red_model(16)), root / "models" / "cats")
    img = np.zeros((36, 48, 3), np.uint8)
    img[3:30, 4:40, 0] = 255
    Image.fromarray(img).save(root / "photo.jpg", quality=98)
    port, rest = free_port(), free_port()
    ready = root / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indep_seg",
            "serve",
            "--port",
            str(port),
            "--rest_api_port",
            str(rest),
            "--model_name",
            "cats",
            "--model_base_path",
            str(root / "models" / "cats"),
            "--model_base_path_prefix",
            str(root / "models"),
            "--ready_file",
            str(ready),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    yield {"root": root, "port": port, "rest": rest}
    proc.terminate()
    proc.communicate(timeout=60)


def _fill(text, served):
    return text.replace("127.0.0.1:8500", f"127.0.0.1:{served['port']}").replace(
        "127.0.0.1:8501", f"127.0.0.1:{served['rest']}"
    )


def test_grpc_snippet_runs_as_written(served):
    (code,) = [b for b in _blocks(_section("Serving contract"), "python") if "Predict(" in b]
    r = subprocess.run(
        [sys.executable, "-c", _fill(code, served)],
        cwd=served["root"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    mask = np.asarray(Image.open(served["root"] / "mask.png"))
    assert mask.shape == (36, 48)
    assert (
        mask[8:25, 10:35].min() > 200 and mask[:, 42:].max() < 30
    )  # the red object, 0 outside the box


@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("base64") is None, reason="needs curl, base64"
)
def test_curl_examples_run_as_written(served):
    (script,) = [b for b in _blocks(_section("Serving contract"), "bash") if "curl" in b]
    r = subprocess.run(
        ["bash", "-c", "set -e -o pipefail\n" + _fill(script, served)],
        cwd=served["root"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    metadata, pixels = _two_documents(r.stdout)
    sigs = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(sigs["segment_in_box"]["inputs"]) == {"image", "box"}
    assert set(sigs["segment_bytes"]["inputs"]) == {"image_bytes"}
    assert np.asarray(pixels["predictions"]).shape == (1, 2, 2, 1)
    masks = np.asarray(json.loads((served["root"] / "masks.json").read_text())["predictions"])
    assert masks.shape == (1, 36, 48, 1) and masks[0, 8:25, 10:35].min() > 0.8


def _two_documents(text):
    dec = json.JSONDecoder()
    docs, i = [], 0
    text = text.strip()
    while i < len(text):
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    assert len(docs) == 2, text[:500]
    return docs
