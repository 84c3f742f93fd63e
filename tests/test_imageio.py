"""indep_seg.imageio: the one home for reading and writing image files (issue #20)."""

import numpy as np
import pytest
from PIL import Image

from indep_seg.imageio import (
    list_images,
    load_image,
    read_image,
    read_mask,
    to_rgb_float,
    write_png,
)


def test_read_image_and_mask(tmp_path):
    rgb = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 3).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    grey = np.array([[0, 127], [128, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), grey > 127)
    assert read_image(tmp_path / "m.png").shape == (2, 2, 3)


def test_load_image_keeps_16_bit_depth_and_composites_alpha_over_black(tmp_path):
    a16 = (np.arange(6 * 4).reshape(6, 4) * 2000).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out.dtype == np.float32 and out.shape == (6, 4, 3)
    np.testing.assert_allclose(out[..., 0], a16 / 65535.0, rtol=1e-6)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # transparent red shows nothing
    Image.fromarray(rgba).save(tmp_path / "t.png")
    np.testing.assert_array_equal(load_image(tmp_path / "t.png"), 0.0)
    np.testing.assert_allclose(to_rgb_float(np.full((2, 2), 255, np.uint8)), 1.0)


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(
        ValueError, match=r"broken.png: cannot read the image \(UnidentifiedImageError"
    ):
        read_image(bad)
    with pytest.raises(ValueError, match=r"broken.png: cannot read the mask"):
        read_mask(bad)
    with pytest.raises(ValueError, match=r"image: cannot read .*broken.png as an image"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match=r"image: file not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="got a directory"):
        load_image(tmp_path)


def test_list_images_and_write_png(tmp_path):
    path = write_png(tmp_path / "sub" / "x.png", np.zeros((3, 3), np.uint8))
    assert path.is_file() and not list(path.parent.glob("*.tmp-*"))
    (tmp_path / "sub" / "notes.txt").write_text("x")
    assert list_images([tmp_path / "sub"]) == [path]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list_images([tmp_path / "missing"])
    with pytest.raises(ValueError, match="folder holds no image file"):
        list_images([tmp_path])
