"""`Segmenter`: a trained image -> mask network together with the crop rule it was trained with.

Every segmentation experiment (the box-level GAN of Dai et al. 2019 and its distilled
student, ILSGAN's post-hoc UNet) ends by saving one of these. `indep-seg segment`,
`evaluate` and `export` consume only this artifact, so they work for every experiment.

On disk (`Segmenter.save(dir)`)::

    dir/model.keras        Keras model, [N, R, R, 3] float in [0, 1] -> [N, R, R, 1] mask
    dir/segmenter.json     {"resolution": R, "margin": m, "square": bool, "experiment": name, ...}
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from indep_seg.box_crop import box_window, crop_to_window, paste_back

ARTIFACT_DIR = "segmenter"
MODEL_FILE = "model.keras"
META_FILE = "segmenter.json"


class Segmenter:
    """A mask network plus its box-crop rule.

    Args:
        model: Keras model mapping `[N, R, R, 3]` images in [0, 1] to `[N, R, R, 1]` masks.
        resolution: R, the side the model was trained at.
        margin: crop margin of `indep_seg.box_crop.box_window` used in training.
        square: whether training crops were squares around the box.
        experiment: name of the experiment that produced it (informational).
        extra: more JSON-serialisable metadata to keep (e.g. which checkpoint was chosen).

    Example:
        >>> seg = Segmenter.load("runs/horse")          # doctest: +SKIP
        >>> masks = seg.predict([image], boxes=[[10, 20, 200, 180]])   # doctest: +SKIP
    """

    def __init__(self, model, resolution: int, margin: float = 0.0, square: bool = False,
                 experiment: str = "", extra: dict | None = None):
        if not (isinstance(resolution, (int, np.integer)) and resolution > 0):
            raise ValueError(f"resolution: expected a positive integer, got {resolution!r}")
        if not (isinstance(margin, (int, float)) and margin >= 0):
            raise ValueError(f"margin: expected a number >= 0, got {margin!r}")
        self.model = model
        self.resolution = int(resolution)
        self.margin = float(margin)
        self.square = bool(square)
        self.experiment = experiment
        self.extra = dict(extra or {})

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict:
        return {"resolution": self.resolution, "margin": self.margin, "square": self.square,
                "experiment": self.experiment, **self.extra}

    def save(self, directory) -> Path:
        """Writes the artifact to `directory` atomically (temporary folder, then rename)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            self.model.save(tmp / MODEL_FILE)
            (tmp / META_FILE).write_text(json.dumps(self.metadata(), indent=2))
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @staticmethod
    def find(path) -> Path:
        """The artifact folder for `path`: the folder itself or `path/segmenter`."""
        path = Path(path)
        for candidate in (path, path / ARTIFACT_DIR):
            if (candidate / META_FILE).is_file() and (candidate / MODEL_FILE).is_file():
                return candidate
        raise FileNotFoundError(
            f"{path}: no segmenter artifact (expected {META_FILE} and {MODEL_FILE} in it or in "
            f"{path / ARTIFACT_DIR})")

    @classmethod
    def load(cls, path) -> "Segmenter":
        import keras

        import indep_seg.networks  # noqa: F401  registers the project's layers with Keras

        folder = cls.find(path)
        meta = json.loads((folder / META_FILE).read_text())
        model = keras.models.load_model(folder / MODEL_FILE, compile=False)
        known = {"resolution", "margin", "square", "experiment"}
        return cls(model, resolution=int(meta["resolution"]), margin=float(meta.get("margin", 0.0)),
                   square=bool(meta.get("square", False)), experiment=meta.get("experiment", ""),
                   extra={k: v for k, v in meta.items() if k not in known})

    # ------------------------------------------------------------------ inference
    def crop(self, image, box=None):
        """The model input for one `[H, W, 3]` image in [0, 1] and its box (whole image if None)."""
        image = tf.convert_to_tensor(image, tf.float32)
        h, w = int(image.shape[0]), int(image.shape[1])
        if box is None:
            box = [0.0, 0.0, float(w), float(h)]
        window = box_window([box], self.margin, self.square)
        return crop_to_window(image[tf.newaxis], window, self.resolution), window

    def predict_crops(self, crops):
        """Masks `[N, R, R, 1]` for model-resolution crops `[N, R, R, 3]`."""
        return self.model(tf.convert_to_tensor(crops, tf.float32), training=False)

    def predict(self, images, boxes=None, refine=None):
        """Full-size float masks in [0, 1], one `[H, W]` array per image.

        Args:
            images: sequence of `[H, W, 3]` arrays (uint8, or float in [0, 1]).
            boxes: None (whole image), or one `x0, y0, x1, y1` box (or None) per image.
            refine: None, or "grabcut": the mask of each boxed image is refined on the photo's
                colour edges (`indep_seg.box_prior.refine_full_mask`); images without a box are
                not refined.
        """
        if refine not in (None, "none", "grabcut"):
            raise ValueError(f"refine: expected None or 'grabcut', got {refine!r}")
        if boxes is None:
            boxes = [None] * len(images)
        if len(boxes) != len(images):
            raise ValueError(f"boxes: expected one box per image ({len(images)}), got {len(boxes)}")
        out = []
        for i, (image, box) in enumerate(zip(images, boxes)):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"images[{i}]: expected [H, W, 3], got shape {image.shape}")
            if image.dtype == np.uint8:
                image = image.astype(np.float32) / 255.0
            crop, window = self.crop(image, box)
            mask = self.predict_crops(crop)
            full = paste_back(mask, window, image.shape[:2])
            full = np.clip(full.numpy()[0, :, :, 0], 0.0, 1.0)
            if refine == "grabcut" and box is not None:
                from indep_seg.box_prior import refine_full_mask
                full = refine_full_mask(image, full, box)
            out.append(full)
        return out
