"""`indep-seg train --experiment box_seg` on bad photo folders: one line naming the file, exit 2."""

import numpy as np
from PIL import Image

from indep_seg.cli import main


def _photos(folder, rows, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(
            folder / f"im{i}.png"
        )
    (folder / "boxes.csv").write_text("filename,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    return folder


def _train(folder, tmp_path, capsys):
    code = main(
        [
            "train",
            "--experiment",
            "box_seg",
            "--data",
            str(folder),
            "--model-dir",
            str(tmp_path / "run"),
            "--steps",
            "1",
        ]
    )
    return code, capsys.readouterr()


def test_box_larger_than_its_photo_names_file_and_row(tmp_path, capsys):
    folder = _photos(tmp_path / "photos", ["im0.png,2,2,20,20", "im1.png,0,0,400,300"])
    code, out = _train(folder, tmp_path, capsys)
    assert code == 2
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert (
        f"{folder / 'boxes.csv'} row 3: box [0.0, 0.0, 400.0, 300.0] leaves the image im1.png "
        "(40x32)" in lines[0]
    )
    assert "fix or remove the row" in lines[0]


def test_boxes_covering_whole_photos_say_how_to_pass_backgrounds(tmp_path, capsys):
    folder = _photos(tmp_path / "photos", [f"im{i}.png,0,0,40,32" for i in range(3)])
    code, out = _train(folder, tmp_path, capsys)
    assert code == 2, out.err[-2000:]
    lines = [line for line in out.err.splitlines() if line.strip() and "error" in line]
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert "no photo has enough pixels outside its box" in lines[0]
    assert "--override background=FOLDER" in lines[0]


def test_missing_background_folder_is_one_line(tmp_path, capsys):
    folder = _photos(tmp_path / "photos", [f"im{i}.png,4,4,30,24" for i in range(3)])
    code = main(
        [
            "train",
            "--experiment",
            "box_seg",
            "--data",
            str(folder),
            "--model-dir",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--override",
            f"background={tmp_path / 'no_such_folder'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert (
        f"background folder (--override background=...): {tmp_path / 'no_such_folder'} is not a "
        "directory" in err
    )
