"""A hostile or careless client against the model server (issue 23), over loopback only.

Each request of the 2026-12-04 robustness run that got around a limit or got a wrong answer is
kept here, with relatives: image bombs in every format TensorFlow decodes, TensorProto shape
bombs (`unknown_rank` too), string floods, an empty ReloadConfigRequest, reloads outside
`model_base_path_prefix`, 16 KiB names, `version_label: ""`, REST client mistakes that used to
get 500, request-smuggling framings, and a bounded slowloris. One server process (address space
capped) serves them all; after each test a well-formed request must still get the right answer
(the exported SavedModel run directly is the reference), and bombs must be refused at once
without the server's peak memory growing.
"""

import io
import json
import socket
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
from reliability_helpers import (
    ModelServerProcess,
    export_version,
    image_request,
    saved_model_masks,
    tiny_segmenter,
)
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

pytestmark = pytest.mark.reliability

NAME = "hostile"
READ_TIMEOUT = 1.5
IDLE_TIMEOUT = 3.0
MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile")
    root = work / "models"
    base = root / NAME
    v1 = export_version(tiny_segmenter(), base, 1)
    outside = work / "elsewhere" / "other"
    export_version(tiny_segmenter(seed=1), outside, 1)
    server = ModelServerProcess(
        NAME,
        base,
        work / "server",
        file_system_poll_wait_seconds=0,
        rest_api_port=0,
        rest_read_timeout=READ_TIMEOUT,
        rest_idle_timeout=IDLE_TIMEOUT,
        rest_max_connections=MAX_CONNECTIONS,
        model_base_path_prefix=str(root),
    ).start()
    channel = grpc.insecure_channel(
        server.address,
        options=[
            ("grpc.max_send_message_length", 256 * 2**20),
            ("grpc.max_receive_message_length", 64 * 2**20),
        ],
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    images = np.random.default_rng(1).random((2, 20, 24, 3), dtype=np.float32)
    ctx = {
        "server": server,
        "stub": stub,
        "model_stub": model_stub,
        "v1": v1,
        "root": root,
        "base": base,
        "outside": outside,
        "work": work,
        "reference": (images, saved_model_masks(v1, images)),
    }
    try:
        _assert_answers(ctx)  # warm: the first requests' allocations are not a bomb's
        _bytes_request_ok(ctx)
        yield ctx
    finally:
        channel.close()
        server.stop()


def _png(image_uint8):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_uint8).save(buf, format="PNG")
    return buf.getvalue()


def _assert_answers(ctx):
    """A well-formed Predict is answered with the SavedModel's own masks, and REST answers too."""
    images, reference = ctx["reference"]
    resp = ctx["stub"].Predict(image_request(NAME, images), timeout=30)
    got = np.array(resp.outputs["mask"].float_val, np.float32).reshape(
        [d.size for d in resp.outputs["mask"].tensor_shape.dim]
    )
    np.testing.assert_allclose(got, reference, atol=1e-5)
    status, _, doc = _http(ctx, b"GET /v1/models/%s HTTP/1.1\r\nHost: x\r\n\r\n" % NAME.encode())
    assert status == 200 and doc["model_version_status"][0]["state"] == "AVAILABLE", doc
    assert ctx["server"].alive(), ctx["server"].log()


def _bytes_request_ok(ctx):
    img = np.random.default_rng(2).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = NAME
    req.model_spec.signature_name = "segment_bytes"
    req.inputs["image_bytes"].dtype = types_pb2.DT_STRING
    req.inputs["image_bytes"].tensor_shape.dim.add(size=1)
    req.inputs["image_bytes"].string_val.append(_png(img))
    resp = ctx["stub"].Predict(req, timeout=30)
    assert [d.size for d in resp.outputs["mask"].tensor_shape.dim] == [1, 12, 16, 1]


def _bytes_request(*values, shape=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = NAME
    req.model_spec.signature_name = "segment_bytes"
    t = req.inputs["image_bytes"]
    t.dtype = types_pb2.DT_STRING
    t.tensor_shape.dim.add(size=len(values) if shape is None else shape)
    t.string_val.extend(values)
    return req


def _refused_at_once(ctx, req, codes, max_seconds=2.0, max_growth_mb=100):
    server = ctx["server"]
    before = server.peak_rss_mb()
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        ctx["stub"].Predict(req, timeout=60)
    took = time.monotonic() - t0
    assert e.value.code() in codes, (e.value.code(), e.value.details())
    grew = server.peak_rss_mb() - before
    assert took < max_seconds, f"refused after {took:.1f} s: {e.value.details()}"
    assert grew < max_growth_mb, (
        f"peak memory grew by {grew:.0f} MB for a {req.ByteSize()}-byte request"
    )
    _assert_answers(ctx)
    return e.value.details()


# ----------------------------------------------------------------------------- image bombs


def _chunk(kind, data, crc=None):
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def _png_8200_bad_text_crc():
    """The run's first bomb: 8200 x 8200 RGB of zeros (~200 KB compressed), and a tEXt chunk
    with a bad CRC so that Pillow refuses the file while TensorFlow decodes it."""
    c = zlib.compressobj(1)
    row = b"\x00" * (1 + 8200 * 3)
    idat = b"".join(c.compress(row) for _ in range(8200)) + c.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8200, 8200, 8, 2, 0, 0, 0))
        + _chunk(b"tEXt", b"k\x00v", crc=0)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _jpeg(w, h):
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + dqt + sof + b"\xff\xd9"


def _gif(sw, sh, frames):
    out = b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0x80, 0, 0) + b"\x00" * 6
    for _ in range(frames):
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, sw, sh, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def _bmp(w, h):
    return (
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHH", 40, w, h, 1, 24)
        + b"\x00" * 24
    )


def _webp(w, h, animated=False):
    payload = (
        bytes([0x02 if animated else 0, 0, 0, 0])
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


BOMBS = {
    "png_8200_bad_text_crc": (_png_8200_bad_text_crc, "8200x8200"),
    "png_65500": (
        lambda: (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", 65500, 65500, 8, 2, 0, 0, 0))
            + _chunk(b"IEND", b"")
        ),
        "65500x65500",
    ),
    "jpeg_65500": (lambda: _jpeg(65500, 65500), "65500x65500"),
    "gif_65535": (lambda: _gif(65535, 65535, 1), "65535x65535"),
    "gif_10_frames_of_4000": (lambda: _gif(4000, 4000, 10), "10 frames of 4000x4000"),
    "bmp_65500": (lambda: _bmp(65500, -65500), "65500x65500"),
    "webp_16384": (lambda: _webp(16384, 16384), "16384x16384"),
    "jpeg_xl_91_bytes": (lambda: b"\xff\x0a\xfa\x7f\xfa\x7f" + b"\x00" * 85, "JPEG XL"),
    "webp_animated": (lambda: _webp(64, 64, animated=True), "animated"),
    "png_bad_ihdr_crc": (
        lambda: (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0), crc=1)
            + _chunk(b"IEND", b"")
        ),
        "IHDR CRC",
    ),
    "tiff": (lambda: b"II*\x00" + b"\x00" * 100, "Unknown image file format"),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_image_bombs_are_refused_before_decoding(served, kind):
    make, words = BOMBS[kind]
    details = _refused_at_once(served, _bytes_request(make()), {grpc.StatusCode.INVALID_ARGUMENT})
    assert details.startswith("image_bytes[0]: ") and words in details, details


def test_request_pixel_budget(served):
    """Two 6000 x 6000 PNG headers: each under the per-image cap, together over the request's."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", 6000, 6000, 8, 2, 0, 0, 0)
    )
    details = _refused_at_once(
        served, _bytes_request(head, head), {grpc.StatusCode.RESOURCE_EXHAUSTED}
    )
    assert "image_bytes[1]" in details and "budget per request" in details


# ----------------------------------------------------------------------------- tensor shape bombs


def _shape_request(shape, unknown_rank=False, one_float=True):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = NAME
    t = req.inputs["image"]
    t.dtype = types_pb2.DT_FLOAT
    for d in shape:
        t.tensor_shape.dim.add(size=d)
    t.tensor_shape.unknown_rank = unknown_rank
    if one_float:
        t.float_val.append(0.5)
    return req


def test_unknown_rank_shape_bomb_is_refused_without_allocating(served):
    """The run's 48-byte request: unknown_rank, dims [1, 8192, 8192, 2], one float (512 MiB)."""
    req = _shape_request([1, 8192, 8192, 2], unknown_rank=True)
    assert req.inputs["image"].ByteSize() < 60
    details = _refused_at_once(served, req, {grpc.StatusCode.INVALID_ARGUMENT})
    assert "unknown_rank" in details
    _refused_at_once(
        served,
        _shape_request([1, 2**40, 2**20, 3], unknown_rank=True),
        {grpc.StatusCode.INVALID_ARGUMENT},
    )


def test_declared_bytes_over_the_request_budget_are_resource_exhausted(served):
    """[1, 4096, 4096, 3] from one float is 201 MB: under the old 256 MB cap per tensor, over the
    request budget (the 64 MiB message size), so it is refused before anything is built."""
    details = _refused_at_once(
        served, _shape_request([1, 4096, 4096, 3]), {grpc.StatusCode.RESOURCE_EXHAUSTED}
    )
    assert "budget" in details
    _refused_at_once(
        served,
        _shape_request([2**62, 2**62, 4, 3], one_float=False),
        {grpc.StatusCode.RESOURCE_EXHAUSTED},
    )


@pytest.mark.parametrize("signature", ["segment_bytes", "serving_default"])
def test_string_floods_are_refused_at_once(served, signature):
    """The run's 52-byte DT_STRING tensor of shape [200000] holding one value (7.5 s of work)."""
    req = _bytes_request(b"x", shape=200000)
    req.model_spec.signature_name = signature
    if signature == "serving_default":
        req.inputs["image"].CopyFrom(req.inputs.pop("image_bytes"))
    assert req.ByteSize() < 80
    details = _refused_at_once(served, req, {grpc.StatusCode.RESOURCE_EXHAUSTED}, max_seconds=1.0)
    assert "strings" in details
    # 1000 strings declared, one value of 100 KB repeated: 100 MB of strings
    _refused_at_once(
        served,
        _bytes_request(b"\x89PNG" + b"\x00" * 100_000, shape=1000),
        {grpc.StatusCode.RESOURCE_EXHAUSTED},
        max_seconds=1.0,
    )


# ----------------------------------------------------------------------------- reloads


def _config(*models):
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base in models:
        mc = config.model_config_list.config.add()
        mc.name, mc.base_path, mc.model_platform = name, str(base), "tensorflow"
    return config


def _reload(ctx, config=None):
    req = model_management_pb2.ReloadConfigRequest()
    if config is not None:
        req.config.CopyFrom(config)
    return ctx["model_stub"].HandleReloadConfigRequest(req, timeout=60)


def test_empty_reload_config_is_invalid_argument_and_unloads_nothing(served):
    with pytest.raises(grpc.RpcError) as e:
        _reload(served)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Only ModelConfigList is currently supported" in e.value.details()
    from tensorflow_serving.config import model_server_config_pb2

    custom = model_server_config_pb2.ModelServerConfig()
    custom.custom_model_config.Pack(custom.model_config_list)
    with pytest.raises(grpc.RpcError) as e:
        _reload(served, custom)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_answers(served)


def test_reloads_outside_the_base_path_prefix_are_refused(served, tmp_path):
    with pytest.raises(grpc.RpcError) as e:
        _reload(served, _config((NAME, served["base"]), ("other", served["outside"])))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "model_base_path_prefix" in e.value.details()
    link = served["root"] / "link_out"  # inside the prefix by name, outside once resolved
    link.symlink_to(served["outside"], target_is_directory=True)
    try:
        with pytest.raises(grpc.RpcError) as e:
            _reload(served, _config((NAME, served["base"]), ("other", link)))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as e:  # the ../ way out
            _reload(served, _config((NAME, served["root"] / ".." / "elsewhere" / "other")))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        link.unlink()
    _assert_answers(served)
    _reload(served, _config((NAME, served["base"])))  # allowed: answered OK, model kept
    _assert_answers(served)


# ----------------------------------------------------------------------------- names and labels


def test_long_names_are_clipped_in_errors(served):
    long = "n" * 16384
    cases = []
    req = image_request(long, np.zeros((1, 8, 8, 3), np.float32))
    cases.append((req, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nnn"))
    req = image_request(NAME, np.zeros((1, 8, 8, 3), np.float32), signature=long)
    cases.append((req, grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nnn'))
    req = image_request(NAME, np.zeros((1, 8, 8, 3), np.float32))
    req.inputs[long].CopyFrom(req.inputs["image"])
    cases.append(
        (req, grpc.StatusCode.INVALID_ARGUMENT, "input tensor alias not found in signature: nnn")
    )
    req = image_request(NAME, np.zeros((1, 8, 8, 3), np.float32))
    req.model_spec.version_label = long
    cases.append(
        (req, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nnn")
    )
    req = image_request(NAME, np.zeros((1, 8, 8, 3), np.float32))
    req.output_filter.append(long)
    cases.append(
        (req, grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: nnn")
    )
    for req, code, start in cases:
        with pytest.raises(grpc.RpcError) as e:
            served["stub"].Predict(req, timeout=30)
        assert e.value.code() == code, (start, e.value.code(), e.value.details()[:300])
        assert start in e.value.details() and "(16384 characters)" in e.value.details()
        assert len(e.value.details()) < 1024
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = long
    with pytest.raises(grpc.RpcError) as e:
        served["model_stub"].GetModelStatus(status, timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and len(e.value.details()) < 1024
    _assert_answers(served)


def test_empty_version_label_is_an_unknown_label(served):
    req = image_request(NAME, np.zeros((1, 8, 8, 3), np.float32))
    req.model_spec.version_label = ""
    assert req.model_spec.WhichOneof("version_choice") == "version_label"
    with pytest.raises(grpc.RpcError) as e:
        served["stub"].Predict(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "Unrecognized servable version label: "
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = NAME
    status.model_spec.version_label = ""
    with pytest.raises(grpc.RpcError) as e:
        served["model_stub"].GetModelStatus(status, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ----------------------------------------------------------------------------- REST over raw
# sockets


def _connect(ctx, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", ctx["server"].rest_port), timeout=timeout)
    s.settimeout(timeout)
    return s


def _read_all(sock, deadline=10.0):
    """Everything the server sends until it closes the connection (or `deadline` seconds)."""
    out = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True
        if not chunk:
            return out, True
        out += chunk
    return out, False


def _responses(raw):
    """[(status, headers, json body)] of the responses in `raw` (Content-Length framed)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])
        }
        n = int(headers[b"content-length"])
        body, raw = rest[:n], rest[n:]
        out.append((status, headers, json.loads(body) if body else None))
    return out


def _http(ctx, data, expect_close=False):
    """Sends raw bytes on a fresh connection; the first response (status, headers, JSON body)."""
    with _connect(ctx) as s:
        s.sendall(data)
        if expect_close:
            raw, closed = _read_all(s)
            assert closed, "the server kept the connection open after an error"
            rs = _responses(raw)
            assert len(rs) == 1, f"expected exactly one response, got {[r[0] for r in rs]}"
            return rs[0]
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        head, _, rest = raw.partition(b"\r\n\r\n")
        n = int(
            [
                ln.split(b":")[1]
                for ln in head.split(b"\r\n")
                if ln.lower().startswith(b"content-length")
            ][0]
        )
        while len(rest) < n:
            rest += s.recv(65536)
        return _responses(head + b"\r\n\r\n" + rest[:n])[0]


def _post(path, body, headers=b""):
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: "
        b"%d\r\n\r\n" % (path, headers, len(body)) + body
    )


PREDICT = b"/v1/models/hostile:predict"
GOOD = json.dumps({"instances": np.zeros((1, 4, 4, 3)).tolist()}).encode()


@pytest.mark.parametrize(
    "name,data,status",
    [
        (
            "content_length_abc",
            b"POST /v1/models/hostile:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
            400,
        ),
        (
            "content_length_negative",
            b"POST /v1/models/hostile:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            400,
        ),
        (
            "content_length_huge",
            b"POST /v1/models/hostile:predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + b"9" * 40
            + b"\r\n\r\n",
            400,
        ),
        (
            "content_length_conflict",
            b"POST /v1/models/hostile:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Content-Length: 3\r\n\r\n{}",
            400,
        ),
        (
            "int_401_digits",
            _post(PREDICT, b'{"instances": [[[[' + b"9" * 401 + b", 0, 0]]]]}"),
            400,
        ),
        ("int_5000_digits", _post(PREDICT, b'{"instances": [' + b"9" * 5000 + b"]}"), 400),
        ("nested_5000", _post(PREDICT, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"), 400),
        (
            "nested_objects_5000",
            _post(PREDICT, b'{"instances": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"),
            400,
        ),
        ("not_json", _post(PREDICT, b"\xff\xfe garbage"), 400),
        ("nan", _post(PREDICT, b'{"instances": [[[[NaN, 0, 0]]]]}'), 400),
        ("ragged", _post(PREDICT, b'{"instances": [[[[0, 0, 0]], [[0]]]]}'), 400),
        ("bad_request_line", b"HELLO\r\n\r\n", 400),
        ("bad_header", b"GET /v1/models/hostile HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
        ("unknown_method", b"DELETE /v1/models/hostile HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (
            "version_of_30_digits",
            b"GET /v1/models/hostile/versions/" + b"9" * 30 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
    ],
)
def test_rest_client_mistakes_are_4xx_with_tf_serving_error_bodies(served, name, data, status):
    got, headers, doc = _http(served, data, expect_close=True)
    assert got == status, (got, doc)
    assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
    assert headers.get(b"connection") == b"close"
    _assert_answers(served)


def test_rest_valid_requests_keep_the_connection(served):
    """Content-Length and chunked bodies, pipelined: each answered, in order, on one connection."""
    chunked = (
        b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % PREDICT
        + b"".join(
            b"%x\r\n%s\r\n" % (len(GOOD[i : i + 7]), GOOD[i : i + 7])
            for i in range(0, len(GOOD), 7)
        )
        + b"0\r\n\r\n"
    )
    get = b"GET /v1/models/hostile HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(served) as s:
        s.sendall(
            _post(PREDICT, GOOD) + chunked + get + b"GET /v1/models/hostile HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n"
        )
        raw, closed = _read_all(s)
    rs = _responses(raw)
    assert [r[0] for r in rs] == [200, 200, 200, 200] and closed
    assert np.asarray(rs[0][2]["predictions"]).shape == (1, 4, 4, 1)
    assert rs[1][2] == rs[0][2]


SMUGGLED = b"GET /v1/models/hostile/metadata HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "name,data,status",
    [
        # no Content-Length: the body must not become a second request
        ("post_without_length", b"POST %s HTTP/1.1\r\nHost: x\r\n\r\n" % PREDICT + SMUGGLED, 411),
        # both framings: refused, whichever a proxy would have believed
        (
            "te_and_cl",
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: "
            b"chunked\r\n\r\n" % PREDICT + b"0\r\n\r\n" + SMUGGLED,
            400,
        ),
        (
            "te_not_chunked",
            b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" % PREDICT
            + b"0\r\n\r\n"
            + SMUGGLED,
            501,
        ),
        (
            "te_obfuscated",
            b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n" % PREDICT
            + b"0\r\n\r\n"
            + SMUGGLED,
            400,
        ),
        # Content-Length shorter than the body: the error closes the connection, the rest is never
        # read
        (
            "short_content_length",
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (PREDICT, len(GOOD) - 5)
            + GOOD
            + SMUGGLED,
            400,
        ),
        (
            "get_with_body",
            b"GET /v1/models/hostile HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % len(SMUGGLED)
            + SMUGGLED,
            400,
        ),
        (
            "get_chunked",
            b"GET /v1/models/hostile HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
            400,
        ),
        (
            "bad_chunk_size",
            b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" % PREDICT
            + SMUGGLED,
            400,
        ),
    ],
)
def test_rest_smuggling_framings_get_one_answer_and_a_closed_connection(served, name, data, status):
    got, headers, doc = _http(served, data, expect_close=True)
    assert got == status, (got, doc)
    assert "signature_def" not in json.dumps(doc)  # the smuggled GET was never answered
    _assert_answers(served)


def test_rest_oversize_body_is_refused(served):
    with _connect(served) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (PREDICT, 2**40))
        raw, closed = _read_all(s, deadline=5)
    assert closed and _responses(raw)[0][0] == 429


# ----------------------------------------------------------------------------- slow clients


def test_slowloris_is_cut_off_and_valid_requests_are_answered(served):
    """Slow clients (a head dribbled a byte at a time, a body that never completes, a connection
    that sends nothing) hold a connection at most READ_TIMEOUT / IDLE_TIMEOUT seconds; valid gRPC
    and REST requests are answered meanwhile."""
    slow_heads = [_connect(served) for _ in range(3)]
    slow_bodies = [_connect(served) for _ in range(3)]
    silent = _connect(served)
    for s in slow_bodies:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{" % PREDICT)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % PREDICT
    t0 = time.monotonic()
    closed_at = {}
    i = 0
    while time.monotonic() - t0 < READ_TIMEOUT + 2.0 and len(closed_at) < 6:
        for n, s in enumerate(slow_heads + slow_bodies):
            if n in closed_at:
                continue
            try:
                s.sendall(head[i : i + 1] if n < 3 else b" ")
            except OSError:
                closed_at[n] = time.monotonic() - t0
        i += 1
        t_req = time.monotonic()
        _assert_answers(served)
        assert time.monotonic() - t_req < 5.0
        time.sleep(0.2)
    for n, s in enumerate(slow_heads + slow_bodies):
        if n not in closed_at:
            raw, closed = _read_all(s, deadline=READ_TIMEOUT + 1.0)
            assert closed, f"slow connection {n} still open after {time.monotonic() - t0:.1f} s"
            assert not raw or _responses(raw)[0][0] == 408
            closed_at[n] = time.monotonic() - t0
        s.close()
    assert max(closed_at.values()) < READ_TIMEOUT + 3.0, closed_at
    raw, closed = _read_all(silent, deadline=IDLE_TIMEOUT + 2.0)
    assert closed and raw == b"", raw  # an idle connection is closed without an answer
    silent.close()
    _assert_answers(served)


def test_connections_over_the_cap_get_503_at_once(served):
    held = [_connect(served) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        with _connect(served) as extra:
            raw, closed = _read_all(extra, deadline=3.0)
        assert closed and _responses(raw)[0][0] == 503 and time.monotonic() - t0 < 2.0
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    _assert_answers(served)
