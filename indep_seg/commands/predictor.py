"""One way to get masks from whatever `--model PATH` (or `--server`) names.

`resolve_model(path)` accepts, in this order:

1. an exported SavedModel directory (`saved_model.pb` in it),
2. a version base directory (integer sub-folders, as `indep-seg export` writes): the
   newest version,
3. a training `--model-dir` (or the `segmenter/` artifact folder itself).

`load_predictor(path)` returns an object with `predict(images, boxes=None)` ->
list of full-size float `[H, W]` masks, whichever of the three it is; `RemotePredictor`
does the same through a running model server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from indep_seg.segmenter import Segmenter
from indep_seg.serving.client import SegmentationClient
from indep_seg.serving.export import is_saved_model_dir, list_versions

__all__ = [
    "resolve_model",
    "load_predictor",
    "ResolvedModel",
    "SegmenterPredictor",
    "SavedModelPredictor",
    "RemotePredictor",
]


@dataclass
class ResolvedModel:
    kind: str  # "saved_model" or "segmenter"
    path: Path


def resolve_model(path) -> ResolvedModel:
    """Which model `path` names; ValueError (naming `path` and the accepted forms) otherwise."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--model {path}: no such file or folder")
    if is_saved_model_dir(path):
        return ResolvedModel("saved_model", path)
    versions = list_versions(path)
    if versions:
        return ResolvedModel("saved_model", path / str(versions[-1]))
    try:
        return ResolvedModel("segmenter", Segmenter.find(path))
    except FileNotFoundError:
        pass
    raise ValueError(
        f"--model {path}: not an exported SavedModel (no saved_model.pb), not a version base "
        "directory (no integer sub-folder holding one), and not a training model dir (no "
        "segmenter/segmenter.json + model.keras)"
    )


def _float_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"images: expected [H, W, 3], got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


def _check_boxes(images, boxes):
    if boxes is None:
        return [None] * len(images)
    if len(boxes) != len(images):
        raise ValueError(
            f"boxes: expected one box (or None) per image ({len(images)}), got {len(boxes)}"
        )
    return list(boxes)


class SegmenterPredictor:
    """In-process `indep_seg.segmenter.Segmenter`."""

    def __init__(self, segmenter, description=""):
        self.segmenter = segmenter
        self.description = description

    def predict(self, images, boxes=None):
        return self.segmenter.predict(images, _check_boxes(images, boxes))


class SavedModelPredictor:
    """An exported SavedModel's `segment_in_box` (or `serving_default` without boxes)."""

    def __init__(self, path):
        self.path = Path(path)
        self.description = str(path)
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = dict(self.loaded.signatures)
        if "serving_default" not in self.signatures:
            raise ValueError(f"--model {path}: SavedModel has no serving_default signature")

    def predict(self, images, boxes=None):
        out = []
        for image, box in zip(images, _check_boxes(images, boxes)):
            x = tf.constant(_float_image(image)[None])
            if box is None:
                m = self.signatures["serving_default"](image=x)["mask"]
            else:
                if "segment_in_box" not in self.signatures:
                    raise ValueError(
                        f"--model {self.path}: SavedModel has no segment_in_box signature, "
                        "so boxes cannot be given"
                    )
                m = self.signatures["segment_in_box"](image=x, box=tf.constant([box], tf.float32))[
                    "mask"
                ]
            out.append(np.asarray(m)[0, :, :, 0])
        return out


class RemotePredictor:
    """A model served by `indep-seg serve` (or tensorflow_model_server) via
    `indep_seg.serving.client`."""

    def __init__(self, target, model_name="default", version=None):
        self.client = SegmentationClient(target, model_name=model_name, version=version)
        self.description = f"{target} model {model_name}"

    def predict(self, images, boxes=None):
        return [
            self.client.segment(_float_image(im), box=box)
            for im, box in zip(images, _check_boxes(images, boxes))
        ]


def load_predictor(path):
    """A predictor for `--model PATH` (see `resolve_model`)."""
    resolved = resolve_model(path)
    if resolved.kind == "saved_model":
        return SavedModelPredictor(resolved.path)
    return SegmenterPredictor(Segmenter.load(resolved.path), str(resolved.path))
