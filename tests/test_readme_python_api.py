"""The README's "Python API" example, run as written: the first ```python block of the section,
in a subprocess from the repository root (so `../shared/datasets` resolves), with its temporary
folder inside the test's own."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HORSES = ROOT.parent / "shared" / "datasets" / "weizmann_horse"


def _python_api_block():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    heading = re.search(r"^## [^\n]*Python API[^\n]*$", readme, re.M)
    assert heading, "README.md has no '## ... Python API' section"
    end = readme.find("\n## ", heading.end())
    section = readme[heading.end() : end if end >= 0 else len(readme)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the Python API section has no ```python block"
    return blocks[0]


def test_block_builds_from_a_preset_fits_on_tfrecords_and_segments():
    block = _python_api_block()
    for needed in ("from_preset(", "TFRecordWriter", ".fit(", "../shared/datasets"):
        assert needed in block, needed


@pytest.mark.skipif(
    not HORSES.is_dir(), reason=f"{HORSES} is absent (datasets/README.md: CI has it)"
)
def test_python_api_block_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env["TMPDIR"] = str(tmp_path)  # tempfile.mkdtemp() in the block lands here
    script = tmp_path / "readme_python_api.py"
    script.write_text(_python_api_block())
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    out = r.stdout

    losses = re.search(r"^d_loss (\S+) area_loss (\S+)$", out, re.M)
    assert losses, out
    assert all(np.isfinite(float(v)) for v in losses.groups()), losses.group(0)

    shapes = re.search(
        r"^photo \((\d+), (\d+), 3\) mask \((\d+), (\d+), 1\) (\S+) (\S+)$", out, re.M
    )
    assert shapes, out
    ph, pw, mh, mw = (int(v) for v in shapes.groups()[:4])
    lo, hi = float(shapes.group(5)), float(shapes.group(6))
    assert (mh, mw) == (ph, pw), "the mask has the photo's size"
    assert 0.0 <= lo <= hi <= 1.0 and hi > 0.0, (lo, hi)

    (work,) = [p for p in tmp_path.iterdir() if p.name.startswith("indep_seg_api_")]
    records = list(work.glob("*.tfrecord"))
    assert len(records) == 1 and records[0].stat().st_size > 100_000  # 24 JPEG photos
    mask_png = np.asarray(Image.open(work / "mask.png"))
    assert mask_png.shape[:2] == (ph, pw)
    assert (work / "gan.weights.h5").is_file()  # ModelCheckpoint
    assert list((work / "logs").rglob("events.out.tfevents.*"))  # TensorBoard
    assert not (work / "backup").exists()  # BackupAndRestore cleans up after a finished fit
    exported = re.search(r"^exported (\S+)$", out, re.M).group(1)
    assert (
        Path(exported) == work / "models" / "horses" / "1"
        and (Path(exported) / "saved_model.pb").is_file()
    )
    assert (work / "run" / "segmenter" / "segmenter.json").is_file()

    # the saved artifact is what `indep-seg segment` reads: its masks equal the keras model's
    import tensorflow as tf

    from indep_seg.segmenter import Segmenter

    photo = np.asarray(Image.open(sorted((HORSES / "rgb").glob("*.jpg"))[0]).convert("RGB"))
    seg = Segmenter.load(work / "run")
    (full,) = seg.predict([photo])
    served = (
        tf.saved_model.load(exported)
        .signatures["serving_default"](image=tf.constant(photo[None].astype(np.float32) / 255.0))[
            "mask"
        ]
        .numpy()[0, :, :, 0]
    )
    np.testing.assert_allclose(full, served, atol=1e-5)
