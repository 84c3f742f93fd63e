"""indep_seg.serving.limits: image headers read as TensorFlow's decoders read them, request
budgets."""

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from indep_seg.serving.errors import ServingError
from indep_seg.serving.limits import (
    HeaderError,
    RequestLimits,
    check_encoded_images,
    declared_string_bytes,
    declared_tensor_size,
    image_header,
)


def _pil(fmt, size=(37, 23), **kwargs):
    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _gif_animated(size=(20, 11), frames=3):
    from PIL import Image

    ims = [Image.new("RGB", size, (i * 40, 0, 0)) for i in range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:])
    return buf.getvalue()


def _chunk(kind, data, crc=None):
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(w, h, bad_text_crc=True):
    """A PNG whose header declares w x h (RGB 8 bit), an IDAT of a few bytes and a tEXt chunk
    with a wrong CRC (Pillow refuses such files; TensorFlow decodes them)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    text = _chunk(b"tEXt", b"k\x00v", crc=0 if bad_text_crc else None)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + text
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def jpeg_bomb(w, h):
    """A 91-byte-class JPEG: SOI, a DQT, an SOF0 declaring w x h, nothing else of use."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + dqt + sof + b"\xff\xd9"


def gif_bomb(sw, sh, frames, fw=None, fh=None):
    fw, fh = fw or sw, fh or sh
    out = b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0x80, 0, 0) + b"\x00" * 6
    for _ in range(frames):
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, fw, fh, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def bmp_header(w, h):
    return (
        b"BM"
        + struct.pack("<IHHI", 54, 0, 0, 54)
        + struct.pack("<IiiHH", 40, w, h, 1, 24)
        + b"\x00" * 24
    )


def webp_vp8x(w, h, animated=False):
    payload = (
        bytes([0x02 if animated else 0x00, 0, 0, 0])
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "fmt,kwargs",
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("WEBP", {"lossless": False}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"exif": b"Exif\x00\x00II*\x00"}),
    ],
)
def test_header_size_is_what_tensorflow_decodes(fmt, kwargs):
    import tensorflow as tf

    data = _pil(fmt, **kwargs)
    head = image_header(data)
    shape = tf.io.decode_image(data, channels=3, expand_animations=False).shape
    assert (head.height, head.width) == tuple(shape[:2]) == (23, 37)
    assert head.pixels >= 23 * 37


def test_gif_counts_every_frame():
    head = image_header(_gif_animated(frames=5))
    assert (head.format, head.width, head.height, head.frames) == ("GIF", 20, 11, 5)
    assert head.pixels >= 5 * 20 * 11
    bomb = image_header(
        gif_bomb(4000, 4000, 10)
    )  # 16 M pixels per frame: fine alone, not 10 of them
    assert bomb.frames == 10 and bomb.pixels >= 10 * 4000 * 4000


@pytest.mark.parametrize(
    "data,declared",
    [
        (png_bomb(8200, 8200), 8200 * 8200),
        (png_bomb(65500, 65500, bad_text_crc=False), 65500 * 65500),
        (jpeg_bomb(65500, 65500), 65500 * 65500),
        (gif_bomb(65535, 65535, 1), 2 * 65535 * 65535),
        (bmp_header(65500, -65500), 65500 * 65500),
        (webp_vp8x(16384, 16384), 16384 * 16384),
    ],
)
def test_bombs_declare_their_size(data, declared):
    assert image_header(data).pixels >= declared
    with pytest.raises(ServingError) as e:
        check_encoded_images("image_bytes", [data], RequestLimits())
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "over this server's cap of 67,108,864" in e.value.message


@pytest.mark.parametrize(
    "data,why",
    [
        (b"\xff\x0a\xfa\x7f\xfa\x7f" + b"\x00" * 85, "JPEG XL"),  # JPEG XL codestream
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\x00" * 20, "JPEG XL"),  # JPEG XL container
        (b"II*\x00" + b"\x00" * 40, "Unknown image file format"),  # TIFF
        (b"", "Unknown image file format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "truncated"),
        (png_bomb(10, 10)[:29] + b"\x00\x00\x00\x00" + png_bomb(10, 10)[33:], "IHDR CRC"),
        (b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", b"a\x00b" * 5) + b"\x00" * 8, "IHDR"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20, "no SOF"),
        (jpeg_bomb(0, 100), "zero"),
        (b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", "scan before any SOF"),
        (b"GIF89a" + struct.pack("<HH", 10, 10) + b"\x00\x00\x00" + b"\x3b", "no image descriptor"),
        (b"GIF8zz" + b"\x00" * 20, "version"),
        (b"BM" + b"\x00" * 10, "truncated"),
        (bmp_header(-5, 10), "invalid size"),
        (webp_vp8x(100, 100, animated=True), "animated"),
        (b"RIFF\x20\x00\x00\x00WEBPXXXX" + b"\x00" * 20, "unknown first chunk"),
    ],
)
def test_unreadable_headers_are_refused(data, why):
    with pytest.raises(HeaderError, match=why):
        image_header(data)
    with pytest.raises(ServingError) as e:
        check_encoded_images("image_bytes", [data], RequestLimits())
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and e.value.message.startswith(
        "image_bytes[0]: "
    )


def test_jpeg_scans_are_bounded():
    good = _pil("JPEG", progressive=True)
    assert image_header(good).format == "JPEG"
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x12\x34"
    many = good[:-2] + sos * 101 + b"\xff\xd9"
    with pytest.raises(HeaderError, match="more than 100 scans"):
        image_header(many)


def test_request_pixel_budget_is_resource_exhausted():
    limits = RequestLimits(max_image_pixels=100 * 100, max_request_pixels=3 * 100 * 100)
    one = _pil("PNG", size=(100, 100))
    check_encoded_images("image_bytes", [one] * 3, limits)
    with pytest.raises(ServingError) as e:
        check_encoded_images("image_bytes", [one] * 4, limits)
    assert (
        e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "image_bytes[3]" in e.value.message
    )


def test_declared_tensor_size_ignores_nothing():
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for d in (1, 8192, 8192, 2):
        t.tensor_shape.dim.add(size=d)
    t.float_val.append(1.0)
    assert declared_tensor_size(t) == (8192 * 8192 * 2, 8192 * 8192 * 2 * 4)
    t.tensor_shape.unknown_rank = True
    with pytest.raises(ValueError, match="unknown_rank"):
        declared_tensor_size(t)
    s = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    s.tensor_shape.dim.add(size=200000)
    s.string_val.append(b"abc")
    assert declared_tensor_size(s)[0] == 200000
    assert declared_string_bytes(s, 200000) == 600000
    neg = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    neg.tensor_shape.dim.add(size=-3)
    with pytest.raises(ValueError, match="negative"):
        declared_tensor_size(neg)


@pytest.mark.parametrize(
    "dtype", [types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 47, 1000, 2**31 - 1]
)
def test_declared_tensor_size_of_odd_dtypes(dtype):
    """DT_RESOURCE made tf.as_dtype(...).as_numpy_dtype raise KeyError (UNKNOWN in the fuzz run)."""
    t = tensor_pb2.TensorProto(dtype=dtype)
    t.tensor_shape.dim.add(size=3)
    assert declared_tensor_size(t) == (3, 3)
