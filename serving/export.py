"""Export a `Segmenter` as a versioned SavedModel (TF Serving layout) and as ONNX.

DESIGN.md §3, the serving contract:

- `keras.export.ExportArchive` with three signatures, all with named inputs and a
  `{"mask": ...}` output dict, dynamic batch and image size:

  ============== ======================================================= ======================
  signature      inputs                                                  output
  ============== ======================================================= ======================
  serving_default ``image`` float32 ``[N, H, W, 3]`` in [0, 1]            ``mask`` ``[N, H, W, 1]``
  segment_in_box  ``image`` as above, ``box`` float32 ``[N, 4]``          ``mask``
                  pixel ``x0, y0, x1, y1`` (x1, y1 exclusive)
  segment_bytes   ``image_bytes`` string ``[N]`` encoded JPEG / PNG       ``mask``
                  (same size within one request)
  ============== ======================================================= ======================

  The box-crop rule of the segmenter (`indep_seg.box_crop.box_window` with its margin and
  square flag; the whole image is the box in `serving_default` and `segment_bytes`, or, for a
  box-free segmenter (ILSGAN's post-hoc UNet), the crop window), the
  resize to the model resolution and the paste-back to the input's size are all inside
  the graph, so a client only sends pixels.
- Layout `BASE/<integer version>/saved_model.pb + variables/`, built in a temporary
  directory next to it and renamed into place, so a polling server never sees half a model.
- `export_onnx` converts one signature of the exported SavedModel with tf2onnx
  (`from_keras` fails on subclassed models, DESIGN.md §4) and writes the file atomically.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from indep_seg.segmenter import segment_in_boxes, whole_image_boxes, whole_image_margin

__all__ = [
    "SIGNATURES",
    "export_segmenter",
    "export_onnx",
    "list_versions",
    "next_version",
    "is_saved_model_dir",
]

#: Signature keys written by `export_segmenter`.
SIGNATURES = ("serving_default", "segment_in_box", "segment_bytes")

_VERSION_RE = re.compile(r"^[0-9]+$")


def is_saved_model_dir(path) -> bool:
    path = Path(path)
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def list_versions(base) -> list[int]:
    """Integer version folders of `base` that hold a SavedModel, ascending."""
    base = Path(base)
    if not base.is_dir():
        return []
    out = []
    for child in base.iterdir():
        if _VERSION_RE.match(child.name) and child.is_dir() and is_saved_model_dir(child):
            out.append(int(child.name))
    return sorted(out)


def next_version(base) -> int:
    """One more than the largest integer folder name under `base` (1 for an empty base)."""
    base = Path(base)
    if not base.is_dir():
        return 1
    names = [int(c.name) for c in base.iterdir() if _VERSION_RE.match(c.name) and c.is_dir()]
    return max(names, default=0) + 1


class _SegmenterModule(tf.Module):
    """The serving functions, as plain TF graph code around the Keras model."""

    def __init__(self, segmenter):
        super().__init__()
        self.resolution = int(segmenter.resolution)
        self.margin = float(segmenter.margin)
        self.square = bool(segmenter.square)
        self.box_free = bool(getattr(segmenter, "box_free", False))

    def segment(self, model, images, boxes):
        """Crop with the box rule, run the model, paste back: [N,H,W,3], [N,4] -> [N,H,W,1]
        (`indep_seg.segmenter.segment_in_boxes`, the graph of `BoxSegmenter`)."""
        return segment_in_boxes(
            model, images, boxes, self.resolution, self.margin, self.square, self.box_free
        )

    def whole_image_boxes(self, images):
        """The box of a request without one: the whole image; for a box-free network (ILSGAN's
        post-hoc UNet) the box whose crop window is the whole image, as `indep-seg segment`."""
        return whole_image_boxes(images, whole_image_margin(self.margin, self.box_free))


def _decode_batch(image_bytes):
    """Decodes a batch of JPEG / PNG / GIF / BMP strings of one size to float [N, H, W, 3]."""
    first = tf.io.decode_image(image_bytes[0], channels=3, expand_animations=False)
    first_hw = tf.shape(first)[:2]

    def decode(data):
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        tf.debugging.assert_equal(
            tf.shape(img)[:2],
            first_hw,
            message="image_bytes: all images of one request must have the same size",
        )
        return tf.image.convert_image_dtype(img, tf.float32)

    return tf.map_fn(
        decode, image_bytes, fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32)
    )


def build_export_archive(segmenter):
    """A `keras.export.ExportArchive` holding the segmenter's three serving signatures."""
    model = segmenter.model
    module = _SegmenterModule(segmenter)
    archive = keras.export.ExportArchive()
    archive.track(model)

    image_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="image")
    box_spec = tf.TensorSpec([None, 4], tf.float32, name="box")
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")

    def serving_default(image):
        return {"mask": module.segment(model, image, module.whole_image_boxes(image))}

    def segment_in_box(image, box):
        tf.debugging.assert_equal(
            tf.shape(box)[0],
            tf.shape(image)[0],
            message="box: expected one box per image (same first dimension as image)",
        )
        x0, y0, x1, y1 = tf.unstack(box, axis=-1)
        tf.debugging.assert_equal(
            tf.reduce_all((x1 > x0) & (y1 > y0)),
            True,
            message="box: expected x1 > x0 and y1 > y0 for every box",
        )
        return {"mask": module.segment(model, image, box)}

    def segment_bytes(image_bytes):
        tf.debugging.assert_greater(
            tf.size(image_bytes), 0, message="image_bytes: expected at least one image"
        )
        images = _decode_batch(image_bytes)
        return {"mask": module.segment(model, images, module.whole_image_boxes(images))}

    archive.add_endpoint("serving_default", serving_default, input_signature=[image_spec])
    archive.add_endpoint("segment_in_box", segment_in_box, input_signature=[image_spec, box_spec])
    archive.add_endpoint("segment_bytes", segment_bytes, input_signature=[bytes_spec])
    return archive


def export_segmenter(segmenter, export_base, version: int | None = None) -> Path:
    """Writes `export_base/<version>/` (SavedModel) atomically and returns its path.

    Args:
        segmenter: an `indep_seg.segmenter.Segmenter` or `indep_seg.BoxSegmenter` (a `keras.Model`;
            anything with the mask network as `.model` and `resolution`, `margin`, `square`).
        export_base: the model base path a server polls.
        version: positive integer; default one more than the largest existing version.

    Raises:
        ValueError: `version` is not a positive integer or already exists.
    """
    export_base = Path(export_base)
    if version is None:
        version = next_version(export_base)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version: expected a positive integer, got {version!r}")
    target = export_base / str(int(version))
    if target.exists():
        raise ValueError(f"version: {target} already exists (versions are immutable; pick another)")
    export_base.mkdir(parents=True, exist_ok=True)
    # The temporary name is not an integer, so a polling server ignores it.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-export-{version}-", dir=export_base))
    try:
        archive = build_export_archive(segmenter)
        archive.write_out(str(tmp), verbose=False)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def export_onnx(
    saved_model_dir, onnx_path, signature: str = "serving_default", opset: int | None = None
) -> Path:
    """Converts one signature of an exported SavedModel to ONNX with tf2onnx, atomically.

    The ONNX graph's inputs and outputs keep the signature's names (`image`, `box`,
    `mask`), with dynamic batch and size.
    """
    import tf2onnx  # heavy import, only when asked for

    saved_model_dir = Path(saved_model_dir)
    if not is_saved_model_dir(saved_model_dir):
        raise ValueError(f"saved_model_dir: {saved_model_dir} holds no saved_model.pb")
    if signature == "segment_bytes":
        raise ValueError(
            "signature: segment_bytes decodes strings and cannot be converted to ONNX; "
            "use serving_default or segment_in_box"
        )
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(f"{onnx_path.name}.tmp-{os.getpid()}")
    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
        if signature not in loaded.signatures:
            raise ValueError(f"signature: {signature!r} not in {sorted(loaded.signatures)}")
        fn = loaded.signatures[signature]
        specs = [
            tf.TensorSpec(s.shape, s.dtype, name=name)
            for name, s in sorted(fn.structured_input_signature[1].items())
        ]
        model_proto, _ = tf2onnx.convert.from_function(
            tf.function(lambda *args: fn(**{s.name: a for s, a in zip(specs, args)})),
            input_signature=specs,
            opset=opset,
            output_path=None,
        )
        # Output names: the function returns a dict {"mask": ...}; tf2onnx names it after the
        # graph tensor, so rename the graph output to the signature's key.
        out_keys = sorted(fn.structured_outputs)
        if len(model_proto.graph.output) == len(out_keys):
            for out, key in zip(model_proto.graph.output, out_keys):
                old = out.name
                if old == key:
                    continue
                for node in model_proto.graph.node:
                    for i, name in enumerate(node.output):
                        if name == old:
                            node.output[i] = key
                    for i, name in enumerate(node.input):
                        if name == old:
                            node.input[i] = key
                out.name = key
        tmp.write_bytes(model_proto.SerializeToString())
        os.replace(tmp, onnx_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return onnx_path
