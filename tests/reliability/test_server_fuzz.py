"""Fuzzing the model server through the unmodified `PredictionServiceStub` (issue 9).

>= 2000 malformed PredictRequests (random TensorProtos: dtypes incl. unknown enum values, shapes
with negative / zero / huge dims, values in the wrong typed field or missing, truncated
`tensor_content`; random model names, versions, labels, signature names, input aliases and
output filters) plus 300 raw byte strings (truncated / bit-flipped serialised requests and noise)
on a loopback port. Requirements: the server never dies, every answer is OK or a proper gRPC
status code with a message (UNKNOWN = an exception escaped the handler, INTERNAL, UNAVAILABLE or
DEADLINE_EXCEEDED are failures), and a well-formed request is still answered correctly
afterwards (compared with the exported SavedModel run directly).
"""

import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import (
    ServerProcess,
    export_version,
    image_request,
    saved_model_masks,
    tiny_segmenter,
)
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

pytestmark = pytest.mark.reliability

NAME = "fuzzed"
NUM_FUZZ = 2000
NUM_RAW = 300
PROPER = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}
STATS = {"ok": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    base = work / "models" / NAME
    v1 = export_version(tiny_segmenter(), base, 1)
    server = ServerProcess(NAME, base, work / "server").start()
    channel = grpc.insecure_channel(
        server.address, options=[("grpc.max_send_message_length", 256 * 2**20)]
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        yield server, stub, channel, v1
    finally:
        channel.close()
        server.stop()


def _assert_well_formed_answered(server, stub, v1):
    rng = np.random.default_rng(1)
    images = rng.random((2, 20, 24, 3), dtype=np.float32)
    resp = stub.Predict(image_request(NAME, images), timeout=30)
    got = np.array(resp.outputs["mask"].float_val, np.float32).reshape(
        [d.size for d in resp.outputs["mask"].tensor_shape.dim]
    )
    np.testing.assert_allclose(got, saved_model_masks(v1, images), atol=1e-5)
    assert resp.model_spec.version.value == 1
    assert server.alive(), server.log()


# ----------------------------------------------------------------------------- strategies

DTYPES = sorted(set(types_pb2.DataType.values())) + [47, 99, 1000, 2**31 - 1]
HUGE = [2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1]
dims = st.one_of(st.integers(-3, 6), st.integers(7, 64), st.sampled_from(HUGE), st.just(-1))
text = st.one_of(
    st.sampled_from(["image", "box", "image_bytes", "mask", "", "IMAGE", "image\x00", "ïmage"]),
    st.text(max_size=12),
)


@st.composite
def tensor_protos(draw):
    t = tensor_pb2.TensorProto()
    t.dtype = draw(
        st.one_of(
            st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_STRING]), st.sampled_from(DTYPES)
        )
    )
    if draw(st.integers(0, 9)) == 0:
        t.tensor_shape.unknown_rank = True
    for d in draw(st.lists(dims, max_size=6)):
        t.tensor_shape.dim.add(size=d, name=draw(st.sampled_from(["", "x"])))
    kind = draw(
        st.sampled_from(
            [
                "none",
                "content",
                "float",
                "double",
                "int",
                "int64",
                "string",
                "half",
                "bool",
                "scomplex",
                "one_float",
            ]
        )
    )
    if kind == "content":
        t.tensor_content = draw(st.binary(max_size=600))
    elif kind == "float":
        t.float_val.extend(draw(st.lists(st.floats(width=32), max_size=40)))
    elif kind == "one_float":
        t.float_val.append(draw(st.floats(width=32)))
    elif kind == "double":
        t.double_val.extend(draw(st.lists(st.floats(), max_size=20)))
    elif kind == "int":
        t.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=20)))
    elif kind == "int64":
        t.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20)))
    elif kind == "string":
        t.string_val.extend(draw(st.lists(st.binary(max_size=64), max_size=5)))
    elif kind == "half":
        t.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=20)))
    elif kind == "bool":
        t.bool_val.extend(draw(st.lists(st.booleans(), max_size=20)))
    elif kind == "scomplex":
        t.scomplex_val.extend(draw(st.lists(st.floats(width=32), max_size=9)))
    t.version_number = draw(st.sampled_from([0, 0, 1, -1, 2**31 - 1]))
    return t


@st.composite
def image_tensors(draw):
    """Nearly valid images: right dtype and content, odd sizes, some lies about the shape."""
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    c = draw(st.sampled_from([3, 3, 3, 1, 4]))
    seed = draw(st.integers(0, 2**16))
    arr = np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)
    special = draw(st.sampled_from(["none", "none", "nan", "inf", "negative", "big"]))
    if special == "nan":
        arr.flat[0] = np.nan
    elif special == "inf":
        arr.flat[-1] = np.inf
    elif special == "negative":
        arr -= 2.0
    elif special == "big":
        arr *= 1e30
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    shape = [n, h, w, c]
    lie = draw(
        st.sampled_from(
            ["none", "none", "none", "truncate", "bigger_shape", "huge_dim", "drop_dim"]
        )
    )
    content = arr.tobytes()
    if lie == "truncate":
        content = content[: draw(st.integers(0, max(0, len(content) - 1)))]
    elif lie == "bigger_shape":
        shape[1] *= 2
    elif lie == "huge_dim":
        shape[draw(st.integers(0, 3))] = draw(st.sampled_from(HUGE))
    elif lie == "drop_dim":
        shape = shape[1:]
    t.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=[{"size": s} for s in shape]))
    t.tensor_content = content
    return t


@st.composite
def predict_requests(draw):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = draw(st.one_of(st.just(NAME), st.just(NAME), st.just(NAME), text))
    which = draw(st.integers(0, 5))
    if which == 1:
        req.model_spec.version.value = draw(
            st.one_of(st.sampled_from([0, 1, 2, -1]), st.integers(-(2**63), 2**63 - 1))
        )
    elif which == 2:
        req.model_spec.version_label = draw(text)
    req.model_spec.signature_name = draw(
        st.one_of(st.sampled_from(["", "serving_default", "segment_in_box", "segment_bytes"]), text)
    )
    for _ in range(draw(st.integers(0, 3))):
        key = draw(text)
        req.inputs[key].CopyFrom(draw(st.one_of(tensor_protos(), image_tensors())))
    if draw(st.integers(0, 4)) == 0:
        req.output_filter.extend(draw(st.lists(text, max_size=3)))
    return req


def _check_answer(stub, req):
    try:
        resp = stub.Predict(req, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in PROPER, f"improper status {e.code()} {e.details()!r} for request {req}"[
            :3000
        ]
        assert e.details(), f"status {e.code()} without a message"
        return
    STATS["ok"] += 1
    for alias, t in resp.outputs.items():
        shape = [d.size for d in t.tensor_shape.dim]
        n = int(np.prod(shape)) if shape else 1
        assert len(t.float_val) == n or len(t.tensor_content) == 4 * n, (
            f"malformed output {alias} {shape}"
        )


# ----------------------------------------------------------------------------- tests


@settings(
    max_examples=NUM_FUZZ,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(req=predict_requests())
def test_fuzz_predict_requests(served, req):
    server, stub, _, _ = served
    _check_answer(stub, req)


def test_after_fuzzing_the_server_is_alive_and_correct(served):
    server, stub, _, v1 = served
    _assert_well_formed_answered(server, stub, v1)


def test_fuzz_raw_bytes(served):
    """Truncated and corrupted serialised requests, and noise, straight onto the wire."""
    server, stub, channel, v1 = served
    raw = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None,
        response_deserializer=None,
    )
    rng = np.random.default_rng(7)
    good = image_request(NAME, rng.random((1, 8, 8, 3), dtype=np.float32)).SerializeToString()
    codes = {}
    for i in range(NUM_RAW):
        kind = i % 3
        if kind == 0:
            data = good[: rng.integers(0, len(good))]
        elif kind == 1:
            b = bytearray(good)
            for _ in range(rng.integers(1, 8)):
                b[rng.integers(0, len(b))] = rng.integers(0, 256)
            data = bytes(b)
        else:
            data = rng.bytes(int(rng.integers(0, 400)))
        try:
            raw(data, timeout=30)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as e:
            # grpc's own "Exception deserializing request!" is INTERNAL, as in TF Serving.
            assert e.code() in PROPER | {grpc.StatusCode.INTERNAL}, (e.code(), e.details())
            codes[e.code().name] = codes.get(e.code().name, 0) + 1
    assert server.alive(), server.log()
    _assert_well_formed_answered(server, stub, v1)


@pytest.mark.parametrize(
    "shape,field",
    [
        (
            [1, 8192, 8192, 3],
            "one_float",
        ),  # 805 MB if expanded (took 4.5 GB and 51 s before the fix)
        ([1, 16384, 16384, 3], "none"),  # 3.2 GB of zeros
        ([2**40, 1, 1, 3], "one_float"),  # impossible
    ],
)
def test_shape_bombs_are_rejected_without_allocating(served, shape, field):
    """A tiny message whose shape claims a huge tensor (TensorProto fills the missing values with
    the last one): must be INVALID_ARGUMENT, without the server allocating the tensor."""
    server, stub, _, v1 = served
    req = predict_pb2.PredictRequest()
    req.model_spec.name = NAME
    t = req.inputs["image"]
    t.dtype = types_pb2.DT_FLOAT
    for d in shape:
        t.tensor_shape.dim.add(size=d)
    if field == "one_float":
        t.float_val.append(0.5)
    before = server.peak_rss_mb()
    t0 = time.time()
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=60)
    assert e.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ), (e.value.code(), e.value.details())
    grew = server.peak_rss_mb() - before
    assert grew < 150, (
        f"the server's peak memory grew by {grew:.0f} MB for a {len(req.SerializeToString())}-byte "
        f"request claiming shape {shape} ({time.time() - t0:.1f} s)"
    )
    assert server.alive(), server.log()
    _assert_well_formed_answered(server, stub, v1)
