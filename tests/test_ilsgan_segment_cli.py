"""`indep-seg segment` on ILSGAN's box-free post-hoc UNet (issue #21): without a box the network
must see the whole image, resized as in the in-process evaluation (`tf.image.resize` with
antialiasing, the filter of the training photos), so that the CLI's masks equal the in-process ones.

The bug: the whole image was treated as the object box and grown by the evaluation margin (0.25
per side), so the network saw the photo shrunk to 2/3 inside a black frame (test-half IoU 0.046
through the CLI against 0.244 in-process on the issue's run).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from indep_seg.cli import main
from indep_seg.posthoc import save_posthoc_segmenter
from indep_seg.segmenter import BoxSegmenter, Segmenter, image_box, whole_image_boxes

R = 16  # network side
SIDE = 64  # photo side: 4 R, as the 128-pixel evaluation crops are for the 32-pixel preset


def _red_channel_model(resolution=R):
    """mask = the red channel (a linear 1x1 conv): the mask shows exactly what the network saw."""
    inp = keras.Input((resolution, resolution, 3))
    conv = keras.layers.Conv2D(1, 1, use_bias=True, name="mask")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 1, 3, 1), np.zeros(1)])
    return model


def _photo(seed=0):
    """A 64x64 uint8 photo: a red blob on a textured background (fine stripes test the filter)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    blob = ((xx - 30) ** 2 / 18.0**2 + (yy - 36) ** 2 / 12.0**2) <= 1.0
    red = np.where(blob, 0.9, 0.25 + 0.2 * ((xx // 2) % 2))  # 2-pixel stripes outside the blob
    img = np.stack([red, rng.uniform(0, 1, red.shape), np.full(red.shape, 0.4)], axis=-1)
    return (img * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsgan_cli")
    save_posthoc_segmenter(_red_channel_model(), root, R)  # the artifact ILSGAN's training writes
    return root


def _segment(run_dir, image, tmp_path, capsys, *extra):
    src = tmp_path / "in"
    src.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(src / "p.png")
    args = ["segment", "--model", str(run_dir), str(src / "p.png"), "--out", str(tmp_path)]
    code = main(args + list(extra))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["written"] == 1
    return np.asarray(Image.open(tmp_path / "p.png"), np.float32) / 255.0


def _in_process(run_dir, image):
    """The in-process evaluation (benchmarks/bench_ilsgan_horse.py `evaluate_segmenter`): resize
    with antialiasing to the network's side, run it, resize the mask back bilinearly."""
    seg = Segmenter.load(run_dir)
    x = tf.image.resize(image[None].astype(np.float32) / 255.0, [R, R], antialias=True)
    pred = seg.predict_crops(x)
    return tf.image.resize(pred, image.shape[:2], method="bilinear").numpy()[0, :, :, 0]


def test_box_free_network_sees_the_whole_image(run_dir, tmp_path, capsys):
    red = np.zeros((SIDE, SIDE, 3), np.uint8)
    red[..., 0] = 255
    mask = _segment(run_dir, red, tmp_path, capsys)
    # the margin's black frame made the border ~1/6 of the side 0 (mask = red channel = 0 there)
    assert mask.shape == (SIDE, SIDE)
    assert mask.min() > 0.97, f"mask min {mask.min():.3f}: the network saw black around the photo"


def test_cli_masks_equal_the_in_process_evaluation(run_dir, tmp_path, capsys):
    photo = _photo()
    cli = _segment(run_dir, photo, tmp_path, capsys, "--refine", "none")
    ref = _in_process(run_dir, photo)
    # 8-bit PNG of the mask: 1/255 rounding; the box filter (average of 4x4) instead of the
    # antialiased resize differs by ~0.05 on the stripes' edges, the black frame by ~0.9
    assert np.abs(cli - ref).max() < 0.01, f"max |CLI - in-process| = {np.abs(cli - ref).max()}"


def test_the_default_refines_a_box_free_mask_on_the_photo(run_dir, tmp_path, capsys):
    """`segment`'s default `--refine grabcut` without a box: GrabCut from the network's own
    confidence (`indep_seg.refine.refine_unboxed`) turns the soft red-channel answer (0.9 on the
    blob, 0.25-0.45 on the stripes) into the blob's binary mask."""
    photo = _photo()
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    blob = ((xx - 30) ** 2 / 18.0**2 + (yy - 36) ** 2 / 12.0**2) <= 1.0
    raw = _segment(run_dir, photo, tmp_path / "raw", capsys, "--refine", "none")
    refined = _segment(run_dir, photo, tmp_path / "refined", capsys)
    assert set(np.unique(refined)) <= {0.0, 1.0} and len(np.unique(raw)) > 2
    inter = ((refined > 0.5) & blob).sum()
    assert inter / ((refined > 0.5) | blob).sum() > 0.9


def test_box_free_flag_survives_keras_and_artifact_round_trips(run_dir, tmp_path):
    seg = Segmenter.load(run_dir)
    assert seg.box_free and (seg.margin, seg.square) == (0.25, True)
    net = seg.as_keras()
    assert net.box_free
    photo = _photo(1)[None]
    expected = net.predict_on_batch(photo)
    net.save(tmp_path / "box.keras")
    again = keras.models.load_model(tmp_path / "box.keras")
    assert isinstance(again, BoxSegmenter) and again.box_free
    np.testing.assert_allclose(again.predict_on_batch(photo), expected, atol=1e-5)
    assert again.to_segmenter().box_free


def test_image_box_grown_by_the_margin_is_the_image():
    box = image_box(48, 64, 0.25)
    np.testing.assert_allclose(box, [64 / 6, 8.0, 64 - 64 / 6, 40.0])
    boxes = whole_image_boxes(tf.zeros([2, 48, 64, 3]), 0.25).numpy()
    np.testing.assert_allclose(boxes, [box, box], atol=1e-5)
    np.testing.assert_allclose(whole_image_boxes(tf.zeros([1, 48, 64, 3])), [[0, 0, 64, 48]])
    with pytest.raises(ValueError, match="margin"):
        image_box(48, 64, -0.1)


def test_a_box_level_network_still_grows_the_whole_image_box_by_its_margin():
    """Dai et al.'s box-level networks: without a box the whole image is the object box."""
    seg = Segmenter(_red_channel_model(), R, margin=0.25, square=True)
    assert not seg.box_free
    red = np.zeros((SIDE, SIDE, 3), np.uint8)
    red[..., 0] = 255
    crop, window = seg.crop(red.astype(np.float32) / 255.0)
    np.testing.assert_allclose(window.numpy(), [[-16, -16, 80, 80]])
    assert crop.numpy()[0, 0, 0, 0] == 0.0 and crop.numpy()[0, R // 2, R // 2, 0] == 1.0


def test_exported_box_free_model_sees_the_whole_image(run_dir, tmp_path):
    """The SavedModel's box-less signatures (`serving_default`, `segment_bytes`) crop as the CLI
    does, and `segment_in_box` keeps the margin around a given box."""
    import io

    from indep_seg.serving.export import export_segmenter

    seg = Segmenter.load(run_dir)
    path = export_segmenter(seg, tmp_path / "export", version=1)
    loaded = tf.saved_model.load(str(path))
    red = np.zeros((1, SIDE, SIDE, 3), np.float32)
    red[..., 0] = 1.0
    mask = loaded.signatures["serving_default"](image=tf.constant(red))["mask"].numpy()
    assert mask.min() > 0.97, f"serving_default: mask min {mask.min():.3f} (black frame)"
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="PNG")
    served = loaded.signatures["segment_bytes"](image_bytes=tf.constant([buf.getvalue()]))
    ref = _in_process(run_dir, _photo())
    assert np.abs(served["mask"].numpy()[0, ..., 0] - ref).max() < 0.01
    box = tf.constant([[16.0, 16.0, 48.0, 48.0]])
    inside = loaded.signatures["segment_in_box"](image=tf.constant(red), box=box)["mask"].numpy()
    assert inside[0, 0, 0, 0] == 0.0 and inside[0, 32, 32, 0] > 0.97  # window: box + margin
