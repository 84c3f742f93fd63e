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
    seg = Segmenter(
        _conv_model(),
        resolution=16,
        margin=0.1,
        square=True,
        experiment="t",
        extra={"chosen_step": 7},
    )
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


# --------------------------------------------------------------------------- BoxSegmenter
# (keras.Model)
def _reference_mask(net, image, box, r, margin=0.0, square=False):
    """The per-image computation `Segmenter.predict` did before it batched: crop, network, paste
    back."""
    from indep_seg.box_crop import box_window, crop_to_window, paste_back

    window = box_window([box], margin, square)
    mask = net(crop_to_window(image[None], window, r), training=False)
    return np.clip(paste_back(mask, window, image.shape[:2]).numpy()[0, :, :, 0], 0.0, 1.0)


def test_box_segmenter_is_a_keras_model_matching_the_per_image_computation():
    from indep_seg.segmenter import BoxSegmenter

    rng = np.random.default_rng(0)
    net = _conv_model()
    seg = BoxSegmenter(net, resolution=16, margin=0.1, square=True)
    assert isinstance(seg, keras.Model)
    images = rng.random((3, 30, 44, 3)).astype("float32")
    boxes = np.array([[2, 3, 20, 25], [0, 0, 44, 30], [10.5, 4, 40, 29]], np.float32)
    masks = seg.predict({"image": images, "box": boxes}, verbose=0)
    assert masks.shape == (3, 30, 44, 1)
    for i in range(3):
        np.testing.assert_allclose(
            masks[i, :, :, 0], _reference_mask(net, images[i], boxes[i], 16, 0.1, True), atol=1e-5
        )
    whole = seg.predict_on_batch(
        {"image": (images * 255).astype("uint8")}
    )  # no box: the whole image
    np.testing.assert_allclose(whole[1], masks[1], atol=0.02)


def test_segmenter_predict_runs_one_graph_call_per_image_size(monkeypatch):
    from indep_seg.segmenter import BoxSegmenter

    calls = []
    original = BoxSegmenter.predict_on_batch
    monkeypatch.setattr(
        BoxSegmenter,
        "predict_on_batch",
        lambda self, x: calls.append(x["image"].shape) or original(self, x),
    )
    net = _conv_model()
    seg = Segmenter(net, resolution=16, margin=0.25, square=True)
    rng = np.random.default_rng(1)
    images = [rng.random((24, 32, 3)).astype("float32") for _ in range(4)] + [
        rng.random((20, 20, 3))
    ]
    boxes = [[1, 2, 20, 22], None, [5, 5, 30, 23], [0, 0, 10, 10], [2, 2, 18, 18]]
    masks = seg.predict(images, boxes)
    assert sorted(calls) == [(1, 20, 20, 3), (4, 24, 32, 3)]
    for image, box, mask in zip(images, boxes, masks):
        h, w = image.shape[:2]
        ref = _reference_mask(net, np.float32(image), box or [0, 0, w, h], 16, 0.25, True)
        np.testing.assert_allclose(mask, ref, atol=1e-5)


def test_box_segmenter_saves_loads_and_exports_the_same_masks(tmp_path):
    import tensorflow as tf

    from indep_seg.segmenter import BoxSegmenter
    from indep_seg.serving.export import export_segmenter

    seg = BoxSegmenter(_conv_model(), resolution=16, margin=0.25)
    images = np.random.default_rng(2).random((2, 26, 30, 3)).astype("float32")
    boxes = np.array([[3, 4, 20, 22], [6, 1, 29, 25]], np.float32)
    masks = seg.predict_on_batch({"image": images, "box": boxes})
    seg.save(tmp_path / "seg.keras")
    loaded = keras.models.load_model(tmp_path / "seg.keras")
    assert isinstance(loaded, BoxSegmenter) and (loaded.resolution, loaded.margin) == (16, 0.25)
    np.testing.assert_allclose(
        loaded.predict_on_batch({"image": images, "box": boxes}), masks, atol=1e-6
    )
    served = tf.saved_model.load(str(export_segmenter(seg, tmp_path / "export"))).signatures[
        "segment_in_box"
    ]
    np.testing.assert_allclose(
        served(image=tf.constant(images), box=tf.constant(boxes))["mask"], masks, atol=1e-5
    )
    artifact = seg.to_segmenter("t").save(tmp_path / "run" / "segmenter")
    again = Segmenter.load(artifact).predict(list(images), list(boxes))
    np.testing.assert_allclose(np.stack(again), masks[..., 0], atol=1e-5)


def test_box_segmenter_errors_name_the_input():
    from indep_seg.segmenter import BoxSegmenter

    seg = BoxSegmenter(_conv_model(), resolution=16)
    with pytest.raises(ValueError, match="missing key 'image'"):
        seg({"photo": np.zeros((1, 8, 8, 3), np.float32)})
    with pytest.raises(ValueError, match=r"inputs\['box'\]: expected \[N, 4\]"):
        seg({"image": np.zeros((1, 8, 8, 3), np.float32), "box": np.zeros((1, 3), np.float32)})
    with pytest.raises(ValueError, match="resolution"):
        BoxSegmenter(_conv_model(), resolution=0)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        Segmenter(_conv_model(), resolution=16).predict([np.zeros((8, 8, 3))], boxes=[[5, 5, 2, 9]])


def test_a_saved_box_segmenter_loads_in_a_fresh_process_after_importing_the_module(tmp_path):
    import subprocess
    import sys

    from indep_seg.networks.unet import unet_preset
    from indep_seg.segmenter import BoxSegmenter

    seg = BoxSegmenter(unet_preset("tiny").as_functional(), resolution=16, margin=0.25)
    images = np.random.default_rng(3).random((1, 20, 24, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "masks.npy", seg.predict_on_batch({"image": images}))
    seg.save(tmp_path / "seg.keras")
    code = (
        "import sys, keras, numpy as np\nimport indep_seg.segmenter\nd = sys.argv[1]\n"
        "m = keras.models.load_model(d + '/seg.keras')\n"
        "got = m.predict_on_batch({'image': np.load(d + '/images.npy')})\n"
        "np.testing.assert_allclose(got, np.load(d + '/masks.npy'), atol=1e-6)\nprint('LOADED', "
        "type(m).__name__)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and "LOADED BoxSegmenter" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("box_free", [False, True])
def test_every_holder_of_the_crop_rule_takes_the_same_box_for_a_whole_image(box_free):
    """`whole_image_margin` is the one rule: the per-image crop, the Keras model's graph and the
    serving module pick the same box when none is given (the margin only if box-free)."""
    from indep_seg.segmenter import image_box, whole_image_margin
    from indep_seg.serving.export import _SegmenterModule

    assert whole_image_margin(0.25, box_free) == (0.25 if box_free else 0.0)
    seg = Segmenter(_tiny_model(), 16, margin=0.25, extra={"box_free": box_free})
    image = np.random.default_rng(0).random((1, 24, 40, 3), dtype=np.float32)
    expected = image_box(24, 40, 0.25 if box_free else 0.0)
    _, window = seg.crop(image[0])
    grown = [[-10.0, -6.0, 50.0, 30.0]]  # the image grown by the margin on each side
    np.testing.assert_allclose(window.numpy(), [[0, 0, 40, 24]] if box_free else grown, atol=1e-4)
    net = seg.as_keras()
    np.testing.assert_allclose(
        net.predict_on_batch(image),
        net.predict_on_batch({"image": image, "box": np.float32([expected])}),
        atol=1e-6,
    )
    module_boxes = _SegmenterModule(seg).whole_image_boxes(image)
    np.testing.assert_allclose(module_boxes, [expected], atol=1e-5)
