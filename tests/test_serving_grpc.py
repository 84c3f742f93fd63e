"""The model server over gRPC, through the unmodified tensorflow_serving stubs only."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import wrappers_pb2  # noqa: F401
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from indep_seg.serving.export import export_segmenter
from indep_seg.serving.server import ModelServer
from tests._serving_helpers import conv_model, png_bytes, segmenter

MAX_MESSAGE = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("grpc") / "seg"
    seg = segmenter(conv_model(16), margin=0.1, square=True)
    export_segmenter(seg, base, version=1)
    server = ModelServer.from_base_path(
        "seg", base, port=0, file_system_poll_wait_seconds=0, max_message_size=MAX_MESSAGE
    ).start()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    yield {
        "seg": seg,
        "base": base,
        "server": server,
        "channel": channel,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
    }
    channel.close()
    server.stop()


def _request(model="seg", signature="", version=None, label=None, **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return req


def png_header(width, height):
    """A PNG of a few dozen bytes whose valid header declares width x height pixels (a decompression
    bomb's first chunk)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _code(fn, *args):
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=30)
    return info.value.code(), info.value.details()


def test_masks_equal_in_process_model_in_typed_fields(env):
    img = np.random.default_rng(0).random((2, 30, 40, 3), dtype=np.float32)
    resp = env["predict"].Predict(_request(image=img), timeout=30)
    out = resp.outputs["mask"]
    assert out.dtype == tf.float32.as_datatype_enum
    assert len(out.float_val) == 2 * 30 * 40 and out.tensor_content == b""  # TF Serving's default
    assert (
        resp.model_spec.name,
        resp.model_spec.version.value,
        resp.model_spec.signature_name,
    ) == ("seg", 1, "serving_default")
    ref = np.stack(env["seg"].predict(list(img)))
    np.testing.assert_allclose(tf.make_ndarray(out)[..., 0], ref, atol=1e-5)

    boxes = np.array([[2, 3, 30, 25], [10, 0, 40, 30]], np.float32)
    resp = env["predict"].Predict(
        _request(signature="segment_in_box", image=img, box=boxes), timeout=30
    )
    ref = np.stack(env["seg"].predict(list(img), boxes=list(boxes)))
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["mask"])[..., 0], ref, atol=1e-5)

    u8 = (img[0] * 255).astype(np.uint8)
    resp = env["predict"].Predict(
        _request(signature="segment_bytes", image_bytes=np.array([png_bytes(u8)], dtype=object)),
        timeout=30,
    )
    np.testing.assert_allclose(
        tf.make_ndarray(resp.outputs["mask"])[0, ..., 0], env["seg"].predict([u8])[0], atol=1e-5
    )


def test_tensor_content_option(tmp_path_factory, env):
    server = ModelServer.from_base_path(
        "seg", env["base"], port=0, file_system_poll_wait_seconds=0, tensor_content=True
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            img = np.random.default_rng(1).random((1, 8, 9, 3), dtype=np.float32)
            out = (
                prediction_service_pb2_grpc.PredictionServiceStub(ch)
                .Predict(_request(image=img), timeout=30)
                .outputs["mask"]
            )
            assert len(out.float_val) == 0 and len(out.tensor_content) == 8 * 9 * 4
            np.testing.assert_allclose(
                tf.make_ndarray(out)[0, ..., 0], env["seg"].predict([img[0]])[0], atol=1e-5
            )
    finally:
        server.stop()


def test_metadata_lists_named_signatures(env):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "seg"
    req.metadata_field.append("signature_def")
    resp = env["predict"].GetModelMetadata(req, timeout=30)
    assert resp.model_spec.version.value == 1
    sdm = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sdm)
    sigs = sdm.signature_def
    assert {"serving_default", "segment_in_box", "segment_bytes"} <= set(sigs)
    assert set(sigs["segment_in_box"].inputs) == {"image", "box"}
    assert set(sigs["serving_default"].outputs) == {"mask"}
    dims = [d.size for d in sigs["serving_default"].inputs["image"].tensor_shape.dim]
    assert dims == [-1, -1, -1, 3]
    req.metadata_field[:] = ["bogus"]
    assert _code(env["predict"].GetModelMetadata, req) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field bogus is not supported",
    )


def test_model_status_and_health(env):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "seg"
    resp = env["models"].GetModelStatus(req, timeout=30)
    (st,) = resp.model_version_status
    assert st.version == 1 and st.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert st.status.error_code == 0
    req.model_spec.name = "nope"
    assert _code(env["models"].GetModelStatus, req) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    req.model_spec.name = "seg"
    req.model_spec.version.value = 5
    assert _code(env["models"].GetModelStatus, req) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 5 of model seg",
    )
    health = health_pb2_grpc.HealthStub(env["channel"])
    for service in ("", "tensorflow.serving.PredictionService", "seg"):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_error_codes_and_messages(env):
    p = env["predict"].Predict
    img = np.random.default_rng(2).random((1, 12, 10, 3), dtype=np.float32)
    cases = [
        (
            _request(model="nope", image=img),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            _request(version=7, image=img),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(seg, 7)",
        ),
        (
            _request(label="canary", image=img),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: canary",
        ),
        (
            _request(signature="classify_me", image=img),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "classify_me" not found.',
        ),
        (
            _request(images=img),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input tensor alias not found in signature: images. Inputs expected to be in the set "
            "{image}.",
        ),
        (
            _request(signature="segment_in_box", image=img),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing but required: {box}",
        ),
        (
            _request(image=img.astype(np.float64)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "image: expects a DT_FLOAT tensor but DT_DOUBLE is provided",
        ),
        (
            _request(image=img[0]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "image: expected a tensor of rank 4",
        ),
        (_request(image=img[..., :2]), grpc.StatusCode.INVALID_ARGUMENT, "dimension 3 must be 3"),
        (_request(image=img[:0]), grpc.StatusCode.INVALID_ARGUMENT, "image: empty batch"),
        (
            _request(
                signature="segment_in_box", image=img, box=np.array([[5, 5, 2, 9]], np.float32)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "box: box 0 = [5.0, 5.0, 2.0, 9.0] is empty",
        ),
        (
            _request(
                signature="segment_in_box",
                image=img,
                box=np.tile(np.array([0, 0, 1, 1], np.float32), (2, 1)),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "equal 0th-dimension size",
        ),
        (
            _request(
                signature="segment_bytes", image_bytes=np.array([b"\x89PNG garbage"], dtype=object)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unknown image file format",
        ),
        (
            _request(image=np.zeros((1, 600, 600, 3), np.float32)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
        (
            _request(
                signature="segment_bytes",
                image_bytes=np.array([png_header(9000, 9000)], dtype=object),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "image_bytes[0]: the image declares 9000x9000 = 81,000,000 pixels, "
            "over this server's cap of 67,108,864",
        ),
        (
            _request(
                signature="segment_bytes",
                image_bytes=np.array([png_header(10**5, 10**5)], dtype=object),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "image_bytes[0]: the image declares 100000x100000 = ",
        ),
    ]
    for req, code, message in cases:
        got_code, details = _code(p, req)
        assert got_code == code, (message, got_code, details)
        assert message in details, (message, details)
        assert "Traceback" not in details and "[[" not in details
    # The server keeps serving everyone else.
    resp = p(_request(image=img), timeout=30)
    assert tf.make_ndarray(resp.outputs["mask"]).shape == (1, 12, 10, 1)


def test_unimplemented_methods(env):
    for fn, req in (
        (env["predict"].Classify, classification_pb2.ClassificationRequest()),
        (env["predict"].Regress, regression_pb2.RegressionRequest()),
        (env["predict"].MultiInference, inference_pb2.MultiInferenceRequest()),
    ):
        code, details = _code(fn, req)
        assert code == grpc.StatusCode.UNIMPLEMENTED and "use Predict" in details


def test_reload_config_rejects_bad_and_applies_good(env, tmp_path):
    from indep_seg.serving.config import parse_model_server_config

    req = model_management_pb2.ReloadConfigRequest()
    mc = req.config.model_config_list.config.add()
    mc.name = "seg"
    mc.base_path = str(env["base"])
    mc.model_platform = "pytorch"
    code, details = _code(env["models"].HandleReloadConfigRequest, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "model_platform 'pytorch'" in details
    good = parse_model_server_config(f'''model_config_list {{
        config {{ name: "seg" base_path: "{env["base"]}" model_platform: "tensorflow"
                 version_labels {{ key: "stable" value: 1 }} }}
        config {{ name: "seg2" base_path: "{env["base"]}" }} }}''')
    req = model_management_pb2.ReloadConfigRequest(config=good)
    env["models"].HandleReloadConfigRequest(req, timeout=60)
    img = np.random.default_rng(3).random((1, 9, 9, 3), dtype=np.float32)
    a = env["predict"].Predict(_request(label="stable", image=img), timeout=30)
    b = env["predict"].Predict(_request(model="seg2", image=img), timeout=30)
    assert a.model_spec.version.value == 1
    np.testing.assert_array_equal(
        tf.make_ndarray(a.outputs["mask"]), tf.make_ndarray(b.outputs["mask"])
    )
    # A label naming a version that is not loaded: TF Serving's FAILED_PRECONDITION, labels kept.
    bad = parse_model_server_config(f'''model_config_list {{
        config {{ name: "seg" base_path: "{env["base"]}"
                 version_labels {{ key: "stable" value: 1 }}
                 version_labels {{ key: "canary" value: 9 }} }} }}''')
    code, details = _code(
        env["models"].HandleReloadConfigRequest,
        model_management_pb2.ReloadConfigRequest(config=bad),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        "Request to assign label to version 9 of model seg, which is not currently available"
        in details
    )
    a = env["predict"].Predict(_request(label="stable", image=img), timeout=30)
    assert a.model_spec.version.value == 1
    assert (
        _code(env["predict"].Predict, _request(label="canary", image=img))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )
