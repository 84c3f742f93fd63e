"""`indep-seg demo` as a user runs it (a tiny budget): it says what its model is, leads on to
one's own photos, titles its panel's columns, writes only under --out, and is quiet."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from indep_seg.quiet import is_noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_demo_is_honest_and_leads_on(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "indep_seg",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--minutes",
            "0.02",
            "--num-images",
            "16",
            "--num-unseen",
            "2",
            "--skip-serving",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "knows only the embedded procedural shapes" in out
    tail = out[out.rindex("What next") :]
    assert (
        "indep-seg train --experiment box_seg --data PHOTOS --model-dir RUN --budget-minutes 30"
        in tail
    )
    assert "indep-seg segment --model RUN --boxes PHOTOS/boxes.csv PHOTOS --out OUT" in tail
    assert (
        "filename,x0,y0,x1,y1" in tail
        and "--masks MASKS" in tail
        and "whole photo is the box" in tail
    )
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert "procedural shapes" in summary["about"] and any(
        "indep-seg train" in line for line in summary["next"]
    )
    # the IoU of the masks `segment` wrote (the panel's), by hand over the whole image
    demo = tmp_path / "demo"
    ious = []
    for f in sorted((demo / "data" / "unseen" / "masks").glob("*.png")):
        t = np.asarray(Image.open(f).convert("L")) > 127
        p = np.asarray(Image.open(demo / "unseen_masks" / f.name).convert("L")) > 127
        ious.append((t & p).sum() / max((t | p).sum(), 1))
    assert ious and summary["unseen_iou_segment"] == pytest.approx(np.mean(ious), abs=1e-4)
    # the train log names the layout, the counts and the boxes' source
    assert "layout images/ photos + masks/ masks; 16 photos, 16 boxes from" in out
    # titled columns over the panel and the evaluation grid
    for name in ("panel.png", "evaluation_grid.png"):
        pic = np.asarray(Image.open(tmp_path / "demo" / name).convert("RGB"))
        band = pic[:14]
        w = (pic.shape[1] - 4) // 3
        for c in range(3):
            assert (band[:, c * w + 4 : (c + 1) * w] < 100).any(), (name, c)
    assert list(cwd.iterdir()) == []  # nothing written in the current folder
    assert not [line for line in r.stderr.splitlines() if is_noise(line)], r.stderr[-2000:]
    assert "cuInit" not in r.stderr and "Traceback" not in r.stderr
