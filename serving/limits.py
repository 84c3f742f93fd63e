"""Request limits checked before the work they protect.

- `image_header(data)`: format and declared size of an encoded image, read from its header the
  way TensorFlow's `DecodeImageV2` picks its decoder (the same magic bytes, in the same order)
  and the way that decoder finds the size it allocates for: PNG's IHDR (CRC checked, as
  libpng does), JPEG's first SOF marker (libjpeg's marker walk, scans counted), GIF's logical
  screen and every frame descriptor (giflib's `DGifSlurp` reads every frame, even when only the
  first is kept), BMP's int32 width / height at offsets 18 / 22 (TF's own BMP reader) and
  WebP's VP8 / VP8L / VP8X headers (libwebp's `WebPGetFeatures`). Whatever is not one of
  those, or whose header cannot be parsed, is refused: TensorFlow never sees it. JPEG XL,
  which TF 2.21 also decodes, is refused (a 91-byte JPEG XL header made TF try to allocate
  12.9 GB), as are animated WebPs (TF refuses them for 3 channels anyway).
- `check_encoded_images`: every image of a request against `max_image_pixels`, and the sum
  over the request against `max_request_pixels`.
- `declared_tensor_size(proto)`: elements and bytes a `TensorProto` claims (from its shape,
  whatever `unknown_rank` says; a TensorProto repeats its last value up to the shape, so a
  48-byte message can claim gigabytes), computed without building anything.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from indep_seg.serving.errors import ServingError, clip

__all__ = [
    "ImageHeader",
    "image_header",
    "check_encoded_images",
    "declared_tensor_size",
    "RequestLimits",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_STRING_ELEMENTS",
    "MAX_JPEG_SCANS",
    "MAX_GIF_FRAMES",
]

DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
#: Strings (encoded images) in one request: a 52-byte DT_STRING tensor of shape [200000] with
#: one value cost 7.5 s of server work (issue 23).
DEFAULT_MAX_STRING_ELEMENTS = 1024
#: Scans in one JPEG (libjpeg decodes each; progressive files from common encoders have ~10).
MAX_JPEG_SCANS = 100
#: Frames in one GIF (giflib reads them all).
MAX_GIF_FRAMES = 4096


@dataclass(frozen=True)
class RequestLimits:
    """The per-request budgets; `ServingCore` holds one."""

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # one image
    max_request_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # all images of a request together
    max_tensor_bytes: int = 64 * 1024 * 1024  # all input tensors of a request, as declared
    max_string_elements: int = DEFAULT_MAX_STRING_ELEMENTS  # all string elements of a request


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    pixels: int  # what the decoder allocates for, in pixels (all frames for a GIF)
    frames: int = 1


class HeaderError(ValueError):
    """The bytes are not an image this server lets TensorFlow decode."""


_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# In entropy-coded data a marker is 0xFF followed by a byte other than 0x00 (stuffing),
# 0xD0-0xD7 (restart markers) or 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def image_header(data: bytes) -> ImageHeader:
    """The format and declared size of an encoded image, from its header only.

    Raises:
        HeaderError: unknown format, JPEG XL, animated WebP, or a header that cannot be parsed
            (the message says which).
    """
    data = bytes(data)
    if data.startswith(_JPEG):  # TF's order: JPEG, PNG, GIF, BMP, WebP, JPEG XL
        return _jpeg(data)
    if data.startswith(_PNG):
        return _png(data)
    if data.startswith(b"GIF8"):
        return _gif(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith(b"RIFF") and len(data) > 12 and data[8:12] == b"WEBP":
        return _webp(data)
    if data.startswith(b"\xff\x0a") or data.startswith(b"\x00\x00\x00\x0cJXL "):
        raise HeaderError(
            "JPEG XL images are not accepted by this server (JPEG, PNG, GIF, BMP, WebP are)"
        )
    raise HeaderError("Unknown image file format. One of JPEG, PNG, GIF, BMP, WebP required.")


def _png(data):
    if len(data) < 33:
        raise HeaderError("PNG: truncated before the end of the IHDR chunk")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise HeaderError("PNG: the first chunk is not a 13-byte IHDR")
    if zlib.crc32(data[12:29]) & 0xFFFFFFFF != struct.unpack(">I", data[29:33])[0]:
        raise HeaderError("PNG: IHDR CRC mismatch")
    w, h = struct.unpack(">II", data[16:24])
    if not (0 < w < 2**31 and 0 < h < 2**31):
        raise HeaderError(f"PNG: invalid size {w}x{h}")
    return ImageHeader("PNG", w, h, w * h)


def _jpeg(data):
    n = len(data)
    pos = 2
    size = None
    scans = 0
    while pos < n:
        # libjpeg's next_marker: skip garbage up to 0xFF, then fill bytes.
        ff = data.find(b"\xff", pos)
        if ff < 0:
            break
        pos = ff
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if marker == 0xD9:  # EOI
            break
        if marker == 0xD8:
            raise HeaderError("JPEG: a second SOI marker")
        if pos + 2 > n:
            break
        length = struct.unpack(">H", data[pos : pos + 2])[0]
        if length < 2:
            raise HeaderError("JPEG: marker segment shorter than its length field")
        if marker in _SOF:
            if size is not None:
                raise HeaderError("JPEG: more than one SOF marker")
            if pos + 8 > n or length < 8:
                raise HeaderError("JPEG: truncated SOF marker")
            h, w = struct.unpack(">HH", data[pos + 3 : pos + 7])
            if w == 0 or h == 0:
                raise HeaderError(
                    f"JPEG: SOF declares {w}x{h} (a zero or DNL-defined size is not accepted)"
                )
            size = (w, h)
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker
            if size is None:
                raise HeaderError("JPEG: scan before any SOF marker")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise HeaderError(f"JPEG: more than {MAX_JPEG_SCANS} scans")
            m = _NEXT_MARKER.search(data, pos)
            if m is None:
                break
            pos = m.start()
    if size is None:
        raise HeaderError("JPEG: no SOF marker (image size) found")
    w, h = size
    return ImageHeader("JPEG", w, h, w * h)


def _skip_sub_blocks(data, pos):
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1
        if size == 0:
            return pos
        pos += size
    return n


def _gif(data):
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise HeaderError("GIF: unknown version")
    if len(data) < 13:
        raise HeaderError("GIF: truncated logical screen descriptor")
    sw, sh, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    n = len(data)
    frames = 0
    pixels = 0
    while pos < n:
        kind = data[pos]
        if kind == 0x2C:  # image descriptor
            if pos + 10 > n:
                break
            _, _, fw, fh, fflags = struct.unpack("<HHHHB", data[pos + 1 : pos + 10])
            pos += 10 + (3 * 2 ** ((fflags & 7) + 1) if fflags & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)  # LZW minimum code size, then the data
            frames += 1
            # giflib keeps each frame's raster; TF composes them on the screen-sized canvas
            pixels += fw * fh + max(sw, fw) * max(sh, fh)
            if frames > MAX_GIF_FRAMES:
                raise HeaderError(f"GIF: more than {MAX_GIF_FRAMES} frames")
        elif kind == 0x21:  # extension
            pos = _skip_sub_blocks(data, pos + 2)
        else:  # trailer (0x3B), or something giflib stops at
            break
    if frames == 0:
        raise HeaderError("GIF: no image descriptor")
    if sw == 0 or sh == 0:
        raise HeaderError(f"GIF: logical screen {sw}x{sh}")
    return ImageHeader("GIF", sw, sh, pixels, frames)


def _bmp(data):
    if len(data) < 32:
        raise HeaderError("BMP: truncated header")
    w, h = struct.unpack("<ii", data[18:26])
    if w <= 0 or h == 0 or h == -(2**31):
        raise HeaderError(f"BMP: invalid size {w}x{h}")
    h = abs(h)
    return ImageHeader("BMP", w, h, w * h)


def _webp(data):
    if len(data) < 30:
        raise HeaderError("WebP: truncated header")
    chunk = data[12:16]
    payload = data[20:]
    if chunk == b"VP8 ":
        if payload[3:6] != b"\x9d\x01\x2a":
            raise HeaderError("WebP: VP8 start code missing")
        w, h = struct.unpack("<HH", payload[6:10])
        w, h = w & 0x3FFF, h & 0x3FFF
    elif chunk == b"VP8L":
        if payload[0] != 0x2F:
            raise HeaderError("WebP: VP8L signature missing")
        bits = struct.unpack("<I", payload[1:5])[0]
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":
        flags = payload[0]
        if flags & 0x02:
            raise HeaderError("WebP: animated WebP images are not accepted")
        w = int.from_bytes(payload[4:7], "little") + 1
        h = int.from_bytes(payload[7:10], "little") + 1
    else:
        raise HeaderError(f"WebP: unknown first chunk {chunk!r}")
    if w == 0 or h == 0:
        raise HeaderError(f"WebP: invalid size {w}x{h}")
    return ImageHeader("WebP", w, h, w * h)


def check_encoded_images(alias: str, values, limits: RequestLimits, spent: list | None = None):
    """Refuses a batch of encoded images before anything is decoded.

    Each image must have a header `image_header` can read (else INVALID_ARGUMENT), declare at
    most `limits.max_image_pixels` (else INVALID_ARGUMENT, as before) and all images of the
    request together at most `limits.max_request_pixels` (else RESOURCE_EXHAUSTED).
    `spent` ([pixels]) carries the running total across the inputs of one request.
    """
    total = spent if spent is not None else [0]
    for i, data in enumerate(values):
        if isinstance(data, str):
            data = data.encode("latin-1", "replace")
        try:
            head = image_header(data)
        except HeaderError as e:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{clip(alias)}[{i}]: {e}"
            ) from None
        if head.pixels > limits.max_image_pixels:
            what = (
                f"{head.width}x{head.height} = {head.width * head.height:,}"
                if head.frames == 1
                else f"{head.frames} frames of {head.width}x{head.height}, {head.pixels:,} in all,"
            )
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{clip(alias)}[{i}]: the image declares {what} pixels, over this server's cap "
                f"of {limits.max_image_pixels:,} (--max_image_pixels; {head.format} header)",
            )
        total[0] += head.pixels
        if total[0] > limits.max_request_pixels:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{clip(alias)}[{i}]: the images of this request declare more than "
                f"{limits.max_request_pixels:,} pixels together, this server's budget per "
                "request",
            )


def declared_tensor_size(proto) -> tuple[int, int]:
    """(elements, bytes) that a `TensorProto` declares, from its shape alone.

    Raises:
        ValueError: `unknown_rank` is set (TensorFlow's `Tensor::FromProto` refuses it: a
            request tensor has a shape), or a dimension is negative.
    """
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise ValueError("tensor_shape: unknown_rank is set; a request tensor needs a known shape")
    num = 1
    for d in shape.dim:
        if d.size < 0:
            raise ValueError(f"tensor_shape: dimension {d.size} is negative")
        num *= int(d.size)

    if proto.dtype == types_pb2.DT_STRING:
        return num, num * 8  # pointers; the string bytes are counted by `declared_string_bytes`
    itemsize = _ITEMSIZE.get(proto.dtype)
    if itemsize is None:
        try:
            itemsize = max(1, np.dtype(tf.as_dtype(proto.dtype).as_numpy_dtype).itemsize)
        except (
            Exception
        ):  # an unknown enum value, DT_RESOURCE / DT_VARIANT (KeyError): refused later
            itemsize = 1
    return num, num * itemsize


_ITEMSIZE = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 9: 8, 10: 1, 19: 2, 17: 2, 14: 2, 22: 4, 23: 8}


def declared_string_bytes(proto, elements: int) -> int:
    """Bytes of the strings a DT_STRING `TensorProto` declares (its last value repeats up to
    `elements`). Call only after bounding `elements` and `len(proto.string_val)`."""
    vals = proto.string_val
    if not vals:
        return 0
    total = sum(len(v) for v in vals)
    if elements > len(vals):
        total += (elements - len(vals)) * len(vals[-1])
    return total
