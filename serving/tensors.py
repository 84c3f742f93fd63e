"""NumPy <-> `TensorProto`, fast.

TF Serving answers in the typed fields (`float_val`, ...) by default. Filling
`float_val` element by element from Python costs about 0.5 ms for a 128x128 mask;
packed repeated fields have the same wire format as raw little-endian bytes, so
`tensor_proto_bytes` writes the serialised message directly (about 10 us) and `to_tensor_proto`
lets protobuf parse it; the server parses those bytes straight into the response's output
entry (`MergeFromString`), which saves the 0.1 ms a `CopyFrom` of a 128x128 mask costs.
`tensor_content=True` gives TF's compact `tensor_content` instead.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from indep_seg.serving.limits import declared_tensor_size

__all__ = ["tensor_proto_bytes", "to_tensor_proto", "to_ndarray", "dtype_name"]

# numpy dtype -> (DataType enum, packed typed field number, little-endian wire dtype)
_TYPED = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, 5, "<f4"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, 6, "<f8"),
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tensor_proto_bytes(array, tensor_content: bool = False) -> bytes:
    """The serialised `TensorProto` of `array`: typed fields (TF Serving's default) or
    `tensor_content`."""
    array = np.asarray(array)
    if tensor_content or array.dtype not in _TYPED:
        return tf.make_tensor_proto(array).SerializeToString()
    dtype_enum, field, wire = _TYPED[array.dtype]
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape]
    ).SerializeToString()
    data = np.ascontiguousarray(array, dtype=wire).tobytes()
    buf = b"\x08" + _varint(dtype_enum) + b"\x12" + _varint(len(shape)) + shape
    if data:
        buf += _varint((field << 3) | 2) + _varint(len(data)) + data
    return buf


def to_tensor_proto(array, tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """A `TensorProto` of `array`: typed fields (TF Serving's default) or `tensor_content`."""
    return tensor_pb2.TensorProto.FromString(tensor_proto_bytes(array, tensor_content))


#: Largest tensor `to_ndarray` expands (bytes). A TensorProto may hold fewer values than its
#: shape (the last one is repeated), so a 49-byte request claiming [1, 8192, 8192, 3] made the
#: server allocate and fill 4.5 GB (tests/reliability/test_server_fuzz.py).
MAX_TENSOR_BYTES = 256 * 1024 * 1024


def to_ndarray(proto, max_bytes: int = MAX_TENSOR_BYTES) -> np.ndarray:
    """The NumPy value of a `TensorProto` (typed fields or `tensor_content`).

    Raises:
        ValueError: `unknown_rank` is set (tf.make_ndarray would build the array of the dims anyway:
            512 MiB from a 48-byte message), the shape has a negative dimension, or claims more
            than `max_bytes` (`indep_seg.serving.limits.declared_tensor_size`).
    """
    num, nbytes = declared_tensor_size(proto)
    if nbytes > max_bytes:
        raise ValueError(
            f"tensor_shape: {[d.size for d in proto.tensor_shape.dim]} claims "
            f"{nbytes} bytes, more than the limit of {max_bytes}"
        )
    fast = _FAST_FIELDS.get(proto.dtype)
    if fast is not None and not proto.tensor_content and num > 1:
        # Float / double typed fields straight from the packed wire bytes: tf.make_ndarray
        # iterates them element by element (~0.6 ms for a 128x128 mask).
        field, wire, dtype = fast
        n_vals = len(proto.float_val) if field == 5 else len(proto.double_val)
        if n_vals == num:
            payload = _packed_field(proto.SerializeToString(), field)
            if payload is not None and len(payload) == num * np.dtype(wire).itemsize:
                return (
                    np.frombuffer(payload, dtype=wire)
                    .astype(dtype)
                    .reshape([d.size for d in proto.tensor_shape.dim])
                )
    return tf.make_ndarray(proto)


_FAST_FIELDS = {
    types_pb2.DT_FLOAT: (5, "<f4", np.float32),
    types_pb2.DT_DOUBLE: (6, "<f8", np.float64),
}


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _packed_field(buf: bytes, field: int):
    """Payload of a packed repeated field in a serialised message (None if absent / unpacked)."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if number == field:
                return buf[pos : pos + length]
            pos += length
        else:
            return None
    return None


def dtype_name(dtype) -> str:
    """`float32` -> `DT_FLOAT` (TF Serving's spelling in messages)."""
    return types_pb2.DataType.Name(tf.as_dtype(dtype).as_datatype_enum)
