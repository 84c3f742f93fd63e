"""load_box_data: a clear error for photos without boxes, and a log line naming the layout."""

import numpy as np
import pytest
from PIL import Image

from indep_seg.training.experiments.box_seg import BoxSegDataError, load_box_data


def _photos(folder, n=2, size=(40, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_photos_without_boxes_say_boxes_are_missing(tmp_path):
    folder = _photos(tmp_path / "photos")
    with pytest.raises(BoxSegDataError) as e:
        load_box_data(folder)
    msg = str(e.value)
    assert "no boxes" in msg and "boxes.csv" in msg and "filename,x0,y0,x1,y1" in msg
    assert "--masks" in msg and str(folder) in msg and "\n" not in msg


def test_images_subfolder_without_boxes_is_refused_too(tmp_path):
    _photos(tmp_path / "set" / "images")
    with pytest.raises(BoxSegDataError, match="no boxes.*--masks"):
        load_box_data(tmp_path / "set")


def test_box_larger_than_image_names_file_and_row(tmp_path):
    folder = _photos(tmp_path / "photos")
    (folder / "boxes.csv").write_text(
        "filename,x0,y0,x1,y1\nim0.png,1,1,20,20\nim1.png,0,0,400,300\n"
    )
    with pytest.raises(
        BoxSegDataError, match=r"boxes.csv row 3: box .* leaves the image im1.png \(40x32\)"
    ):
        load_box_data(folder)


def test_log_states_layout_counts_and_source(tmp_path):
    folder = _photos(tmp_path / "photos", n=3)
    (folder / "boxes.csv").write_text("im0.png,1,1,20,20\nim0.png,5,5,30,30\nim1.png,2,2,10,10\n")
    lines = []
    load_box_data(folder, log=lines.append)
    assert any(
        "flat folder" in m
        and "2 photos, 3 boxes" in m
        and "boxes.csv" in m
        and "1 photo(s) without a row" in m
        for m in lines
    ), lines


def test_log_for_images_and_masks_layout(tmp_path):
    _photos(tmp_path / "set" / "images")
    (tmp_path / "set" / "masks").mkdir()
    for i in range(2):
        m = np.zeros((32, 40), np.uint8)
        m[4:20, 5:25] = 255
        Image.fromarray(m).save(tmp_path / "set" / "masks" / f"im{i}.png")
    lines = []
    items = load_box_data(tmp_path / "set", log=lines.append)
    assert len(items) == 2
    assert any(
        "images/ photos + masks/ masks" in m and "2 photos, 2 boxes" in m and "the masks in" in m
        for m in lines
    ), lines
