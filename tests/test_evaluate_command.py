"""`indep-seg evaluate`: the protocol of ../shared/datasets/README.md, JSON, grid PNG, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from indep_seg.cli import main
from tests._serving_helpers import red_model, segmenter


def _ellipse(h, w, box):
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:h, :w] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    boxes = [(10, 8, 50, 40), (5, 20, 45, 50), (30, 10, 70, 34)]
    for i, box in enumerate(boxes):
        obj = _ellipse(60, 80, box)
        img = np.zeros((60, 80, 3), np.uint8)
        img[obj, 0] = 255
        img[..., 2] = 90  # blue everywhere: the red model ignores it
        Image.fromarray(img).save(root / "images" / f"p{i}.png")
        Image.fromarray(np.uint8(obj) * 255).save(root / "masks" / f"p{i}.png")
    segmenter(red_model(32), resolution=32).save(root / "red" / "segmenter")
    # A "filled box" model: mask 1 everywhere in the crop = the box itself.
    ones = red_model(32, gain=0.0)
    ones.layers[-1].set_weights([np.zeros((1, 1, 3, 1), np.float32), np.array([20.0], np.float32)])
    segmenter(ones, resolution=32).save(root / "box" / "segmenter")
    return root


def _evaluate(data, model, capsys, *extra):
    code = main(
        [
            "evaluate",
            "--model",
            str(data / model),
            "--images",
            str(data / "images"),
            "--masks",
            str(data / "masks"),
            "--grid",
            str(data / f"{model}.png"),
            "--resolution",
            "64",
            *extra,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_perfect_model_scores_near_one(data, capsys):
    res = _evaluate(data, "red", capsys, "--per-image")
    assert res["images"] == 3 and res["resolution"] == 64
    assert res["iou"] > 0.93 and res["dice"] > 0.96
    assert len(res["per_image"]) == 3
    grid = np.asarray(Image.open(data / "red.png"))
    assert grid.shape == (16 + 3 * 66 + 2, 3 * 66 + 2, 3)  # a 16-pixel band of column titles on top
    band = grid[:16]
    for c in range(3):  # every column has a title: dark text pixels above it
        assert (band[:, 2 + c * 66 : 2 + (c + 1) * 66 - 2] < 100).any(), c


def test_grid_goes_to_the_model_dir_or_out_never_the_cwd(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        "evaluate",
        "--model",
        str(data / "red"),
        "--images",
        str(data / "images"),
        "--masks",
        str(data / "masks"),
        "--resolution",
        "64",
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["grid"] == str(data / "red" / "evaluate_grid.png")
    assert (data / "red" / "evaluate_grid.png").is_file()
    assert "1/3 images" in out.err and "3/3 images" in out.err  # a progress line as it works
    assert main(argv + ["--out", str(tmp_path / "ev")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (
        res["grid"] == str(tmp_path / "ev" / "evaluate_grid.png")
        and (tmp_path / "ev" / "evaluate_grid.png").is_file()
    )
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["images"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"]  # nothing in the current folder


def test_filled_box_scores_ellipse_area_ratio(data, capsys):
    """Independent reference: the filled box against an inscribed ellipse gives IoU pi/4."""
    res = _evaluate(data, "box", capsys)
    assert abs(res["iou"] - np.pi / 4) < 0.03
    assert abs(res["dice"] - 2 * (np.pi / 4) / (1 + np.pi / 4)) < 0.03


def test_bad_input_is_named(data, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(np.zeros((10, 30), np.uint8)).save(tmp_path / "masks" / "x.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "y.png")
    args = [
        "evaluate",
        "--model",
        str(data / "red"),
        "--images",
        str(tmp_path / "images"),
        "--masks",
        str(tmp_path / "masks"),
        "--grid",
        str(tmp_path / "g.png"),
    ]
    assert main(args) == 2
    assert "x.png: mask is 30x10 but x.png is 10x10" in capsys.readouterr().err
    assert main(args + ["--skip-bad"]) == 2  # nothing left to evaluate
    err = capsys.readouterr().err
    assert "no image with the stem 'y'" in err and "no image / mask pair could be evaluated" in err
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(data / "red"),
                "--images",
                str(tmp_path / "nope"),
                "--masks",
                str(tmp_path / "masks"),
            ]
        )
        == 2
    )
    assert "--images" in capsys.readouterr().err


def test_real_horses_round_trip(shared_datasets, tmp_path, capsys):
    horse = shared_datasets / "weizmann_horse"
    code = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "missing"),
            "--images",
            str(horse / "rgb"),
            "--masks",
            str(horse / "figure_ground"),
        ]
    )
    assert code == 2
    capsys.readouterr()
    segmenter(red_model(32), resolution=32).save(tmp_path / "red" / "segmenter")
    code = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "red"),
            "--images",
            str(horse / "rgb"),
            "--masks",
            str(horse / "figure_ground"),
            "--limit",
            "3",
            "--grid",
            str(tmp_path / "g.png"),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    assert res["images"] == 3 and 0.0 <= res["iou"] <= 1.0
