"""The model server's REST API (TF Serving's JSON), through plain urllib only."""

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from indep_seg.serving.export import export_segmenter
from indep_seg.serving.server import ModelServer
from tests._serving_helpers import conv_model, png_bytes, segmenter


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("rest") / "seg"
    seg = segmenter(conv_model(16))
    export_segmenter(seg, base, version=2)
    server = ModelServer.from_base_path(
        "seg",
        base,
        port=0,
        rest_api_port=0,
        file_system_poll_wait_seconds=0,
        max_message_size=1024 * 1024,
    ).start()
    yield {"seg": seg, "url": f"http://127.0.0.1:{server.rest_api_port}", "server": server}
    server.stop()


def _http(url, payload=None, raw=None):
    data = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_status_and_metadata(env):
    code, doc = _http(f"{env['url']}/v1/models/seg")
    assert code == 200
    assert doc == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert _http(f"{env['url']}/v1/models/seg/versions/2")[0] == 200
    code, doc = _http(f"{env['url']}/v1/models/seg/metadata")
    assert code == 200 and doc["model_spec"] == {
        "name": "seg",
        "signature_name": "",
        "version": "2",
    }
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert set(sigs["segment_in_box"]["inputs"]) == {"image", "box"}


def test_predict_row_and_columnar_equal_in_process(env):
    rng = np.random.default_rng(0)
    img = rng.random((2, 10, 14, 3), dtype=np.float32)
    ref = np.stack(env["seg"].predict(list(img)))
    code, doc = _http(f"{env['url']}/v1/models/seg:predict", {"instances": img.tolist()})
    assert code == 200
    np.testing.assert_allclose(np.asarray(doc["predictions"])[..., 0], ref, atol=1e-5)
    code, doc = _http(
        f"{env['url']}/v1/models/seg/versions/2:predict", {"inputs": {"image": img.tolist()}}
    )
    assert code == 200
    np.testing.assert_allclose(np.asarray(doc["outputs"])[..., 0], ref, atol=1e-5)
    boxes = [[1, 1, 9, 8], [0, 2, 14, 10]]
    code, doc = _http(
        f"{env['url']}/v1/models/seg:predict",
        {
            "signature_name": "segment_in_box",
            "instances": [{"image": img[i].tolist(), "box": boxes[i]} for i in range(2)],
        },
    )
    assert code == 200
    ref = np.stack(env["seg"].predict(list(img), boxes=boxes))
    np.testing.assert_allclose(np.asarray(doc["predictions"])[..., 0], ref, atol=1e-5)
    u8 = (img[0] * 255).astype(np.uint8)
    code, doc = _http(
        f"{env['url']}/v1/models/seg:predict",
        {
            "signature_name": "segment_bytes",
            "instances": [{"image_bytes": {"b64": base64.b64encode(png_bytes(u8)).decode()}}],
        },
    )
    assert code == 200
    np.testing.assert_allclose(
        np.asarray(doc["predictions"])[0, ..., 0], env["seg"].predict([u8])[0], atol=1e-5
    )


def test_errors_have_tf_serving_http_codes(env):
    u = env["url"]
    img = np.zeros((1, 6, 6, 3)).tolist()
    cases = [
        (
            f"{u}/v1/models/nope:predict",
            {"instances": img},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            f"{u}/v1/models/seg/versions/9:predict",
            {"instances": img},
            404,
            "Servable not found for request: Specific(seg, 9)",
        ),
        (
            f"{u}/v1/models/seg/labels/beta:predict",
            {"instances": img},
            400,
            "Unrecognized servable version label: beta",
        ),
        (
            f"{u}/v1/models/seg:predict",
            {"signature_name": "x", "instances": img},
            400,
            'Serving signature key "x" not found.',
        ),
        (
            f"{u}/v1/models/seg:predict",
            {"inputs": {"img": img}},
            400,
            "input tensor alias not found",
        ),
        (f"{u}/v1/models/seg:predict", {"instances": [[1, 2], [3]]}, 400, "rectangular"),
        (
            f"{u}/v1/models/seg:predict",
            {"instances": np.zeros((1, 6, 6, 2)).tolist()},
            400,
            "dimension 3 must be 3",
        ),
        (f"{u}/v1/models/seg:predict", {"instances": []}, 400, "non-empty"),
        (f"{u}/v1/models/seg:predict", {"instances": img, "inputs": img}, 400, "Not both"),
        (f"{u}/v1/models/seg:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
        (
            f"{u}/v1/models/seg:predict",
            {
                "signature_name": "segment_bytes",
                "instances": [{"b64": base64.b64encode(b"junk").decode()}],
            },
            400,
            "Unknown image file format",
        ),
        (f"{u}/v1/models/seg:classify", {"examples": []}, 501, "use :predict"),
        (f"{u}/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        (f"{u}/v2/whatever", None, 404, "Malformed request"),
    ]
    for url, payload, status, message in cases:
        code, doc = _http(url, payload)
        assert code == status, (url, payload if payload is None else str(payload)[:80], code, doc)
        assert message in doc["error"], (message, doc)
    code, doc = _http(f"{u}/v1/models/seg:predict", raw=b"{not json")
    assert code == 400 and "JSON" in doc["error"]
    big = b'{"instances": [' + b"0," * 600_000 + b"0]}"
    code, doc = _http(f"{u}/v1/models/seg:predict", raw=big)
    assert code == 429 and "exceeds the limit" in doc["error"]
    assert _http(f"{u}/v1/models/seg:predict", {"instances": img})[0] == 200  # still serving
