"""`indep-seg count`: JSON count + centres and an overlay PNG; bad input gives one clear line."""

import json

import numpy as np
import pytest
from PIL import Image
from test_hoc_counting import CENTRES, gaussian_blobs, oracle_counter  # noqa: E402

from indep_seg.cli import main
from indep_seg.hoc import counting


@pytest.fixture
def model_dir(tmp_path):
    counting.save_counter(
        tmp_path / "run" / "counter",
        oracle_counter(),
        {"window": 32, "resolution": 32, "sigma": 3.0, "experiment": "hoc"},
    )
    return tmp_path / "run"


def _write(path, img, kind):
    a = np.clip(img[..., 0], 0, 1)
    if kind == "gray8":
        Image.fromarray((a * 255 + 0.5).astype(np.uint8)).save(path)
    elif kind == "gray16":
        Image.fromarray((a * 65535 + 0.5).astype(np.uint16)).save(path)
    elif kind == "rgba":
        rgba = np.stack([a, a, a, np.ones_like(a)], -1)
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), mode="RGBA").save(path)


@pytest.mark.parametrize("kind", ["gray8", "gray16", "rgba"])
def test_count_prints_json_and_writes_overlay(model_dir, tmp_path, capsys, kind):
    img = gaussian_blobs(120, 120, CENTRES, 3.0)
    path = tmp_path / f"blobs_{kind}.png"
    _write(path, img, kind)
    overlay = tmp_path / "overlay.png"
    assert main(["count", "--model", str(model_dir), str(path), "--overlay", str(overlay)]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["count"] == len(CENTRES)
    # progress on standard error, a line before and after the image (stdout keeps the JSON alone)
    assert f"counting {path} (1/1)" in captured.err
    assert f"{path}: {len(CENTRES)} counted" in captured.err
    assert len(out["centres"]) == len(CENTRES)
    ov = np.asarray(Image.open(overlay))
    assert ov.shape == (120, 120, 3)
    x, y = CENTRES[0]
    assert tuple(ov[y, x]) == (255, 255, 0)  # the centre dot


def test_unreadable_file_is_named(model_dir, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    assert main(["count", "--model", str(model_dir), str(bad)]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["count", "--model", str(model_dir), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_image_smaller_than_window(model_dir, tmp_path, capsys):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(path)
    assert main(["count", "--model", str(model_dir), str(path)]) == 2
    err = capsys.readouterr().err
    assert "40x20" in err and "32 px" in err


def test_missing_model(tmp_path, capsys):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    assert main(["count", "--model", str(tmp_path / "nope"), str(path)]) == 2
    assert "no counter found" in capsys.readouterr().err


def test_count_reports_calibration_and_can_skip_it(model_dir, tmp_path, capsys):
    """Blobs broader than the counter's Gaussian weigh 2 each: 2N raw, N calibrated (--no-calibrate:
    2N)."""
    path = tmp_path / "broad.png"
    _write(path, gaussian_blobs(120, 120, CENTRES, 3.0 * 2**0.5), "gray16")
    assert (
        main(["count", "--model", str(model_dir), str(path), "--overlay", str(tmp_path / "o.png")])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == len(CENTRES) and out["calibration"] == pytest.approx(2.0, rel=0.05)
    assert out["calibration_instances"] == len(CENTRES)
    assert (
        main(
            [
                "count",
                "--model",
                str(model_dir),
                str(path),
                "--overlay",
                str(tmp_path / "o.png"),
                "--no-calibrate",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["count_learned"] == 2 * len(CENTRES) and out["calibration"] is None
    # the automatic answer: the mean of the learned and the LoG counts (2N and N: within 2x)
    assert out["count_from"] == "mean"
    assert out["count"] == (2 * len(CENTRES) + out["count_log"] + 1) // 2
