"""`indep_seg.serving.export`: SavedModel signatures, versions, atomic layout, ONNX parity, the
--model resolver."""

import json

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.commands.predictor import load_predictor, resolve_model
from indep_seg.serving.export import export_onnx, export_segmenter, list_versions, next_version
from tests._serving_helpers import conv_model, png_bytes, segmenter


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export") / "base"
    seg = segmenter(conv_model(16), margin=0.1, square=True)
    path = export_segmenter(seg, base)
    return seg, base, path, tf.saved_model.load(str(path))


def test_layout_signatures_and_names(exported):
    seg, base, path, loaded = exported
    assert (
        path == base / "1" and (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    )
    assert not [p for p in base.iterdir() if p.name != "1"], "temporary export folder left behind"
    sigs = loaded.signatures
    assert set(sigs) == {"serving_default", "segment_in_box", "segment_bytes"}
    inputs = {k: dict(f.structured_input_signature[1]) for k, f in sigs.items()}
    assert set(inputs["serving_default"]) == {"image"}
    assert inputs["serving_default"]["image"].shape.as_list() == [None, None, None, 3]
    assert set(inputs["segment_in_box"]) == {"image", "box"}
    assert inputs["segment_in_box"]["box"].shape.as_list() == [None, 4]
    assert inputs["segment_bytes"]["image_bytes"].dtype == tf.string
    for f in sigs.values():
        assert list(f.structured_outputs) == ["mask"]


def test_savedmodel_equals_in_process_segmenter(exported):
    seg, _, _, loaded = exported
    rng = np.random.default_rng(0)
    for h, w in [(30, 40), (16, 16), (71, 33)]:
        img = rng.random((2, h, w, 3), dtype=np.float32)
        got = loaded.signatures["serving_default"](image=tf.constant(img))["mask"].numpy()
        assert got.shape == (2, h, w, 1)
        ref = np.stack(seg.predict(list(img)))
        np.testing.assert_allclose(got[..., 0], ref, atol=1e-5)
        boxes = np.array([[3, 2, w - 5, h - 4], [0, 1, w // 2, h // 2]], np.float32)
        got = loaded.signatures["segment_in_box"](image=tf.constant(img), box=tf.constant(boxes))[
            "mask"
        ]
        ref = np.stack(seg.predict(list(img), boxes=list(boxes)))
        np.testing.assert_allclose(got.numpy()[..., 0], ref, atol=1e-5)


def test_segment_bytes_decodes_png(exported):
    seg, _, _, loaded = exported
    img = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    got = loaded.signatures["segment_bytes"](image_bytes=tf.constant([png_bytes(img)] * 2))[
        "mask"
    ].numpy()
    ref = seg.predict([img])[0]
    assert got.shape == (2, 20, 24, 1)
    np.testing.assert_allclose(got[0, ..., 0], ref, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["segment_bytes"](image_bytes=tf.constant([b"not an image"]))


def test_versions_increment_and_existing_version_refused(tmp_path):
    seg = segmenter(conv_model(16))
    assert next_version(tmp_path / "none") == 1
    for v in (1, 3):  # stand-ins for earlier exports
        (tmp_path / str(v)).mkdir()
        (tmp_path / str(v) / "saved_model.pb").write_bytes(b"")
    (tmp_path / "junk").mkdir()
    (tmp_path / "7x").mkdir()
    assert next_version(tmp_path) == 4
    assert list_versions(tmp_path) == [1, 3]
    with pytest.raises(ValueError, match="version: .*already exists"):
        export_segmenter(seg, tmp_path, version=3)
    with pytest.raises(ValueError, match="version: expected a positive integer"):
        export_segmenter(seg, tmp_path, version=0)
    assert export_segmenter(seg, tmp_path).name == "4"
    assert list_versions(tmp_path) == [1, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "3", "4", "7x", "junk"]


@pytest.mark.parametrize("signature", ["serving_default", "segment_in_box"])
def test_onnx_parity(exported, tmp_path, signature):
    import onnxruntime as ort

    _, _, path, loaded = exported
    onnx_path = export_onnx(path, tmp_path / f"{signature}.onnx", signature=signature)
    assert not list(tmp_path.glob("*.tmp-*"))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = sorted(i.name for i in sess.get_inputs())
    assert names == (["image"] if signature == "serving_default" else ["box", "image"])
    assert [o.name for o in sess.get_outputs()] == ["mask"]
    rng = np.random.default_rng(2)
    # (16+2 = 18 and 30+2 = 32 = 16 * supersample hit onnxruntime's equal-size Resize shortcut)
    for h, w in [(30, 40), (16, 30), (64, 48), (7, 9)]:
        img = rng.random((2, h, w, 3), dtype=np.float32)
        feeds = {"image": img}
        kwargs = {"image": tf.constant(img)}
        if signature == "segment_in_box":
            feeds["box"] = np.array([[1, 2, w - 1, h - 3], [0, 0, w, h]], np.float32)
            kwargs["box"] = tf.constant(feeds["box"])
        ref = loaded.signatures[signature](**kwargs)["mask"].numpy()
        got = sess.run(None, feeds)[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4, (h, w, np.abs(got - ref).max())


def test_onnx_refuses_bytes_signature(exported, tmp_path):
    with pytest.raises(ValueError, match="signature: segment_bytes"):
        export_onnx(exported[2], tmp_path / "x.onnx", signature="segment_bytes")


def test_resolver_accepts_the_three_forms(exported, tmp_path):
    seg, base, path, _ = exported
    run_dir = tmp_path / "run"
    seg.save(run_dir / "segmenter")
    assert resolve_model(path).kind == "saved_model"
    r = resolve_model(base)
    assert (r.kind, r.path) == ("saved_model", base / "1")
    r = resolve_model(run_dir)
    assert (r.kind, r.path) == ("segmenter", run_dir / "segmenter")
    img = np.random.default_rng(3).random((25, 31, 3)).astype(np.float32)
    box = [2.0, 3.0, 20.0, 22.0]
    a = load_predictor(base).predict([img], [box])[0]
    b = load_predictor(run_dir).predict([img], [box])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="--model .*not an exported SavedModel"):
        resolve_model(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        resolve_model(tmp_path / "missing")
    json.dumps(str(r.path))


@pytest.mark.parametrize("upsampling", ["transpose", "conv_bilinear"])
def test_library_unet_exports_and_onnx_equals_savedmodel(tmp_path, upsampling):
    """The library's own UNet (FusedBatchNormalization, GemmConv2DTranspose on tiny maps and for
    the mask, GemmConv2D for the 1-channel mask, UnfusedBiasConv2D) through SavedModel and ONNX:
    both equal the in-process segmenter."""
    import onnxruntime as ort

    from indep_seg.networks.unet import unet_preset

    net = unet_preset("tiny", upsampling=upsampling)
    net(np.zeros((2, 16, 16, 3), np.float32), training=True)  # moving statistics away from init
    seg = segmenter(net, resolution=16)
    path = export_segmenter(seg, tmp_path / "unet")
    loaded = tf.saved_model.load(str(path))
    sess = ort.InferenceSession(
        str(export_onnx(path, tmp_path / "unet.onnx")), providers=["CPUExecutionProvider"]
    )
    img = np.random.default_rng(3).random((2, 16, 16, 3), dtype=np.float32)
    ref = np.stack(seg.predict(list(img)))[..., None]
    saved = loaded.signatures["serving_default"](image=tf.constant(img))["mask"].numpy()
    np.testing.assert_allclose(saved, ref, atol=1e-5)
    np.testing.assert_allclose(sess.run(None, {"image": img})[0], ref, atol=1e-4)
