"""`indep_seg.serving.tensors`: the hand-written TensorProto bytes equal what protobuf / TensorFlow
build."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from indep_seg.serving.tensors import tensor_proto_bytes, to_ndarray, to_tensor_proto


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(1, 2, 3, 2) / 7,
        np.linspace(-1, 1, 5).astype(np.float64),
        np.zeros((0, 3), np.float32),
        np.arange(6, dtype=np.int32).reshape(2, 3),  # not typed here: TensorFlow's own proto
        np.float32(2.5),
    ],
)
@pytest.mark.parametrize("tensor_content", [False, True])
def test_bytes_parse_to_the_same_values_dtype_and_shape(array, tensor_content):
    proto = tensor_pb2.TensorProto.FromString(tensor_proto_bytes(array, tensor_content))
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    assert tf.make_ndarray(proto).dtype == array.dtype
    np.testing.assert_array_equal(to_ndarray(proto), array)
    assert to_tensor_proto(array, tensor_content) == proto


def test_float32_typed_field_is_packed_float_val():
    proto = to_tensor_proto(np.array([[1.5, -2.0]], np.float32))
    assert list(proto.float_val) == [1.5, -2.0] and not proto.tensor_content
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]


def test_merge_into_a_response_entry_equals_copy_from():
    mask = np.random.default_rng(0).random((1, 8, 8, 1)).astype(np.float32)
    a, b = predict_pb2.PredictResponse(), predict_pb2.PredictResponse()
    a.outputs["mask"].MergeFromString(tensor_proto_bytes(mask))
    b.outputs["mask"].CopyFrom(tf.make_tensor_proto(mask))
    np.testing.assert_array_equal(to_ndarray(a.outputs["mask"]), to_ndarray(b.outputs["mask"]))
    assert a.outputs["mask"].dtype == b.outputs["mask"].dtype


def test_to_ndarray_bounds_the_declared_shape_whatever_unknown_rank_says():
    """tf.make_ndarray builds the array of the dims even with unknown_rank (512 MiB from 48
    bytes)."""
    t = tensor_pb2.TensorProto(dtype=1)  # DT_FLOAT
    for d in (1, 8192, 8192, 2):
        t.tensor_shape.dim.add(size=d)
    t.float_val.append(0.5)
    t.tensor_shape.unknown_rank = True
    with pytest.raises(ValueError, match="unknown_rank"):
        to_ndarray(t)
    t.tensor_shape.unknown_rank = False
    with pytest.raises(ValueError, match="more than the limit of 1048576"):
        to_ndarray(t, max_bytes=2**20)
    small = to_tensor_proto(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(to_ndarray(small, max_bytes=24), np.ones((2, 3), np.float32))
