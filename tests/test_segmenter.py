import json

import keras
import numpy as np
import pytest

from indep_seg.segmenter import Segmenter


def _tiny_model(r=16):
    inp = keras.Input((r, r, 3))
    # mask = red channel: easy to predict by hand
    out = keras.layers.Lambda(lambda x: x[..., :1])(inp)
    return keras.Model(inp, out)


def _conv_model(r=16):
    inp = keras.Input((r, r, 3))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    return keras.Model(inp, out)


def test_save_load_round_trip(tmp_path):
    seg = Segmenter(_conv_model(), resolution=16, margin=0.1, square=True, experiment="t",
                    extra={"chosen_step": 7})
    seg.save(tmp_path / "run" / "segmenter")
    loaded = Segmenter.load(tmp_path / "run")  # a model dir holding the artifact
    assert (loaded.resolution, loaded.margin, loaded.square) == (16, 0.1, True)
    assert loaded.extra == {"chosen_step": 7}
    x = np.random.rand(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(loaded.predict_crops(x), seg.predict_crops(x), atol=1e-6)
    meta = json.loads((tmp_path / "run" / "segmenter" / "segmenter.json").read_text())
    assert meta["resolution"] == 16


def test_predict_pastes_back_at_full_size_inside_the_box():
    seg = Segmenter(_tiny_model(), resolution=16)
    img = np.zeros((40, 60, 3), np.float32)
    img[10:30, 20:40, 0] = 1.0  # red square == the box
    (mask,) = seg.predict([img], boxes=[[20, 10, 40, 30]])
    assert mask.shape == (40, 60)
    assert mask[12:28, 22:38].min() > 0.99
    assert mask[:8].max() == 0.0 and mask[:, :18].max() == 0.0


def test_predict_whole_image_without_box_and_uint8():
    seg = Segmenter(_tiny_model(), resolution=16)
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :10, 0] = 255
    (mask,) = seg.predict([img])
    assert mask[:, :8].min() > 0.99 and mask[:, 12:].max() < 0.01


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="resolution"):
        Segmenter(_tiny_model(), resolution=0)
    with pytest.raises(FileNotFoundError, match="segmenter"):
        Segmenter.load(tmp_path)
    seg = Segmenter(_tiny_model(), resolution=16)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        seg.predict([np.zeros((4, 4))])
    with pytest.raises(ValueError, match="boxes"):
        seg.predict([np.zeros((4, 4, 3))], boxes=[None, None])
