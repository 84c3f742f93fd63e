"""`indep-seg segment`: one full-size mask PNG per input, boxes, cut-outs, --server, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from indep_seg.cli import main
from indep_seg.serving.export import export_segmenter
from tests._serving_helpers import red_model, segmenter


def _red_square(h, w, box):
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1, 0] = 255
    return img


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    seg = segmenter(red_model(16))
    seg.save(root / "run" / "segmenter")
    export_segmenter(seg, root / "export")
    imgs = root / "imgs"
    imgs.mkdir()
    Image.fromarray(_red_square(40, 60, (10, 8, 30, 28))).save(imgs / "a.png")
    Image.fromarray(_red_square(33, 21, (0, 0, 21, 33))).save(imgs / "b.jpg", quality=98)
    return root


def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out


@pytest.mark.parametrize("model", ["run", "export", "export/1"])
def test_masks_at_input_size_for_every_model_form(setup, tmp_path, capsys, model):
    code, out = _run(
        [
            "segment",
            "--model",
            str(setup / model),
            str(setup / "imgs"),
            "--out",
            str(tmp_path),
            "--cutout",
        ],
        capsys,
    )
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["written"] == 2
    a = np.asarray(Image.open(tmp_path / "a.png"))
    assert a.shape == (40, 60) and a.dtype == np.uint8
    # mask = sigmoid(20 (red - 0.5)): ~255 on the red square, ~0 elsewhere (whole image = box)
    assert a[13:23, 15:25].min() > 240 and a[:3].max() < 15 and a[:, 36:].max() < 15
    b = np.asarray(Image.open(tmp_path / "b.png"))
    assert b.shape == (33, 21) and b[3:-3, 3:-3].min() > 240
    cut = np.asarray(Image.open(tmp_path / "a_cutout.png"))
    assert cut.shape == (40, 60, 4)
    np.testing.assert_array_equal(cut[..., 3], a)


def test_box_limits_the_mask_and_csv_boxes_union(setup, tmp_path, capsys):
    code, out = _run(
        [
            "segment",
            "--model",
            str(setup / "run"),
            str(setup / "imgs" / "a.png"),
            "--out",
            str(tmp_path / "one"),
            "--box",
            "10,8,20,28",
            "--binary",
            "--refine",
            "none",
        ],
        capsys,
    )
    assert code == 0, out.err
    m = np.asarray(Image.open(tmp_path / "one" / "a.png"))
    assert set(np.unique(m)) <= {0, 255}
    assert m[9:27, 11:19].min() == 255 and m[:, 22:].max() == 0  # nothing outside the box
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,x0,y0,x1,y1\na.png,10,8,20,28\na.png,20,8,30,28\n")
    code, out = _run(
        [
            "segment",
            "--model",
            str(setup / "run"),
            str(setup / "imgs" / "a.png"),
            "--out",
            str(tmp_path / "two"),
            "--boxes",
            str(csv),
            "--binary",
            "--refine",
            "none",
        ],
        capsys,
    )
    assert code == 0, out.err
    m = np.asarray(Image.open(tmp_path / "two" / "a.png"))
    assert m[9:27, 11:29].min() == 255 and m[:, 32:].max() == 0
    # the default GrabCut refinement moves outlines inside the boxes, never past them
    code, out = _run(
        [
            "segment",
            "--model",
            str(setup / "run"),
            str(setup / "imgs" / "a.png"),
            "--out",
            str(tmp_path / "three"),
            "--boxes",
            str(csv),
            "--binary",
        ],
        capsys,
    )
    assert code == 0, out.err
    m = np.asarray(Image.open(tmp_path / "three" / "a.png"))
    assert m.max() == 255 and m[:, 32:].max() == 0 and m[:, :9].max() == 0 and m[:7].max() == 0


def test_bad_input_is_named(setup, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    model = str(setup / "run")
    cases = [
        (
            [
                "segment",
                "--model",
                model,
                str(tmp_path / "missing.png"),
                "--out",
                str(tmp_path / "o"),
            ],
            "missing.png: no such file",
        ),
        (
            ["segment", "--model", model, str(bad), "--out", str(tmp_path / "o")],
            "broken.png: cannot read",
        ),
        (
            [
                "segment",
                "--model",
                model,
                str(setup / "imgs" / "a.png"),
                "--out",
                str(tmp_path / "o"),
                "--box",
                "5,5,2,9",
            ],
            "--box: empty box",
        ),
        (
            [
                "segment",
                "--model",
                model,
                str(setup / "imgs" / "a.png"),
                "--out",
                str(tmp_path / "o"),
                "--box",
                "100,100,200,200",
            ],
            "lies outside the 60x40 image",
        ),
        (
            [
                "segment",
                "--model",
                str(tmp_path),
                str(setup / "imgs" / "a.png"),
                "--out",
                str(tmp_path / "o"),
            ],
            "not an exported SavedModel",
        ),
    ]
    for args, message in cases:
        code, out = _run(args, capsys)
        assert code == 2 and message in out.err, (args, out.err)
    csv = tmp_path / "bad.csv"
    csv.write_text("a.png,1,2,3\n")
    code, out = _run(
        [
            "segment",
            "--model",
            model,
            str(setup / "imgs" / "a.png"),
            "--out",
            str(tmp_path / "o"),
            "--boxes",
            str(csv),
        ],
        capsys,
    )
    assert code == 2 and "bad.csv row 1" in out.err
    code, out = _run(
        [
            "segment",
            "--model",
            model,
            str(bad),
            str(setup / "imgs" / "a.png"),
            "--out",
            str(tmp_path / "o"),
            "--skip-bad",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out.out)["skipped"] == 1 and "broken.png" in out.err


def test_segment_through_the_server(setup, tmp_path, capsys):
    from indep_seg.serving.server import ModelServer

    server = ModelServer.from_base_path(
        "horse", setup / "export", port=0, rest_api_port=0, file_system_poll_wait_seconds=0
    ).start()
    try:
        code, out = _run(
            [
                "segment",
                "--model",
                str(setup / "run"),
                str(setup / "imgs"),
                "--out",
                str(tmp_path / "local"),
                "--box",
                "2,2,20,30",
            ],
            capsys,
        )
        assert code == 0
        for target in (f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.rest_api_port}"):
            code, out = _run(
                [
                    "segment",
                    "--server",
                    target,
                    "--model-name",
                    "horse",
                    str(setup / "imgs"),
                    "--out",
                    str(tmp_path / "remote"),
                    "--box",
                    "2,2,20,30",
                ],
                capsys,
            )
            assert code == 0, out.err
            for name in ("a.png", "b.png"):
                local = np.asarray(Image.open(tmp_path / "local" / name)).astype(int)
                remote = np.asarray(Image.open(tmp_path / "remote" / name)).astype(int)
                assert np.abs(local - remote).max() <= 1
        code, out = _run(
            [
                "segment",
                "--server",
                f"127.0.0.1:{server.port}",
                "--model-name",
                "nope",
                str(setup / "imgs"),
                "--out",
                str(tmp_path / "x"),
            ],
            capsys,
        )
        assert code == 2 and "NOT_FOUND" in out.err and "Latest(nope)" in out.err
    finally:
        server.stop()


def test_a_folder_gets_one_progress_line_per_image(setup, tmp_path, capsys):
    code, out = _run(
        [
            "segment",
            "--model",
            str(setup / "run"),
            str(setup / "imgs"),
            "--out",
            str(tmp_path),
            "--refine",
            "none",
        ],
        capsys,
    )
    assert code == 0, out.err
    assert "[1/2] a.png" in out.err and "[2/2] b.jpg" in out.err
    json.loads(out.out)  # stdout stays one JSON document
