"""`Segmenter`: a trained image -> mask network together with the crop rule it was trained with;
`BoxSegmenter`: the same as a `keras.Model` that segments whole batches in one graph call.

Every segmentation experiment (the box-level GAN of Dai et al. 2019 and its distilled
student, ILSGAN's post-hoc UNet) ends by saving one of these. `indep-seg segment`,
`evaluate` and `export` consume only this artifact, so they work for every experiment.

On disk (`Segmenter.save(dir)`)::

    dir/model.keras        Keras model, [N, R, R, 3] float in [0, 1] -> [N, R, R, 1] mask
    dir/segmenter.json     {"resolution": R, "margin": m, "square": bool, "experiment": name, ...}

A box-free network (`"box_free": true`, ILSGAN's post-hoc UNet, trained on whole generated scenes)
takes the whole image as its crop when no box is given: the window is the image itself (its
enclosing square when `square`), not the image grown by the margin. The margin applies only around a
given object box (the evaluation protocol's crop). Its crops are resized with antialiasing, as its
training photos were (`network_crops`). A box-level network (Dai et al. 2019) treats the whole image
as the object box and crops it with its margin, as in training.

`BoxSegmenter` maps `{"image": [N, H, W, 3], "box": [N, 4]}` (the box optional: the whole image)
to masks `[N, H, W, 1]`: crop with the box rule, run the network, paste back, in one graph (the
same function, `segment_in_boxes`, that the exported SavedModel's signatures run). It works with
Keras' `predict`, `predict_on_batch`, `save` / `keras.models.load_model` (after
`import indep_seg.segmenter`, which registers it and the project's layers), and
`indep_seg.serving.export.export_segmenter` (TF Serving layout). GrabCut refinement
(`refine="grabcut"`) is NumPy / OpenCV post-processing and stays outside the graph, in
`Segmenter.predict`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import indep_seg.networks  # noqa: F401  registers the project's layers: load_model finds them
from indep_seg.box_crop import box_window, crop_to_window, paste_back

__all__ = [
    "Segmenter",
    "BoxSegmenter",
    "segment_in_boxes",
    "network_crops",
    "whole_image_boxes",
    "image_box",
    "whole_image_margin",
]

ARTIFACT_DIR = "segmenter"
MODEL_FILE = "model.keras"
META_FILE = "segmenter.json"


def _crop_rule(resolution, margin, square):
    """(resolution, margin, square) checked: a positive integer, a number >= 0, a flag."""
    if not (
        isinstance(resolution, (int, np.integer))
        and not isinstance(resolution, bool)
        and resolution > 0
    ):
        raise ValueError(f"resolution: expected a positive integer, got {resolution!r}")
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool) and margin >= 0):
        raise ValueError(f"margin: expected a number >= 0, got {margin!r}")
    return int(resolution), float(margin), bool(square)


class Segmenter:
    """A mask network plus its box-crop rule.

    Args:
        model: Keras model mapping `[N, R, R, 3]` images in [0, 1] to `[N, R, R, 1]` masks.
        resolution: R, the side the model was trained at.
        margin: crop margin of `indep_seg.box_crop.box_window` used in training.
        square: whether training crops were squares around the box.
        experiment: name of the experiment that produced it (informational).
        extra: more JSON-serialisable metadata to keep (e.g. which checkpoint was chosen);
            `{"box_free": True}` marks a network trained on whole scenes (see `box_free`).

    Example:
        >>> seg = Segmenter.load("runs/horse")          # doctest: +SKIP
        >>> masks = seg.predict([image], boxes=[[10, 20, 200, 180]])   # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        resolution: int,
        margin: float = 0.0,
        square: bool = False,
        experiment: str = "",
        extra: dict | None = None,
    ):
        self.model = model
        self.resolution, self.margin, self.square = _crop_rule(resolution, margin, square)
        self.experiment = experiment
        self.extra = dict(extra or {})
        self._keras = None

    @property
    def box_free(self) -> bool:
        """True for a network trained on whole scenes (ILSGAN's post-hoc UNet): without a box its
        crop window is the image itself (`image_box`), not the image grown by the margin."""
        return bool(self.extra.get("box_free", False))

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict:
        return {
            "resolution": self.resolution,
            "margin": self.margin,
            "square": self.square,
            "experiment": self.experiment,
            **self.extra,
        }

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
            f"{path / ARTIFACT_DIR})"
        )

    @classmethod
    def load(cls, path) -> "Segmenter":
        folder = cls.find(path)
        meta = json.loads((folder / META_FILE).read_text())
        model = keras.models.load_model(folder / MODEL_FILE, compile=False)
        known = {"resolution", "margin", "square", "experiment"}
        return cls(
            model,
            resolution=int(meta["resolution"]),
            margin=float(meta.get("margin", 0.0)),
            square=bool(meta.get("square", False)),
            experiment=meta.get("experiment", ""),
            extra={k: v for k, v in meta.items() if k not in known},
        )

    # ------------------------------------------------------------------ inference
    def crop(self, image, box=None):
        """The model input for one `[H, W, 3]` image in [0, 1] and its box (whole image if None)."""
        image = tf.convert_to_tensor(image, tf.float32)
        h, w = int(image.shape[0]), int(image.shape[1])
        if box is None:
            box = image_box(h, w, whole_image_margin(self.margin, self.box_free))
        window = box_window([box], self.margin, self.square)
        return network_crops(image[tf.newaxis], window, self.resolution, self.box_free), window

    def predict_crops(self, crops):
        """Masks `[N, R, R, 1]` for model-resolution crops `[N, R, R, 3]`."""
        return self.model(tf.convert_to_tensor(crops, tf.float32), training=False)

    def as_keras(self) -> "BoxSegmenter":
        """This segmenter as a `BoxSegmenter` (a `keras.Model`), sharing its network."""
        if self._keras is None:
            self._keras = BoxSegmenter(
                self.model, self.resolution, self.margin, self.square, box_free=self.box_free
            )
        return self._keras

    def predict(self, images, boxes=None, refine=None):
        """Full-size float masks in [0, 1], one `[H, W]` array per image.

        Images of the same size go through the network together, one graph call per size
        (`BoxSegmenter.predict_on_batch`); refinement runs afterwards, image by image.

        Args:
            images: sequence of `[H, W, 3]` arrays (uint8, or float in [0, 1]).
            boxes: None (whole image), or one `x0, y0, x1, y1` box (or None) per image. Without a
                box the whole image is the object box, or, for a `box_free` network, the crop
                window (`image_box`).
            refine: None, or "grabcut": the mask of each image is refined on its colour edges
                (`indep_seg.refine.refine_mask`: in its box, or, given without a box, from the
                network's confidence).
        """
        if refine not in (None, "none", "grabcut"):
            raise ValueError(f"refine: expected None or 'grabcut', got {refine!r}")
        if boxes is None:
            boxes = [None] * len(images)
        if len(boxes) != len(images):
            raise ValueError(f"boxes: expected one box per image ({len(images)}), got {len(boxes)}")
        arrays, groups = [], {}
        for i, (image, box) in enumerate(zip(images, boxes)):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"images[{i}]: expected [H, W, 3], got shape {image.shape}")
            if image.dtype == np.uint8:
                image = image.astype(np.float32) / 255.0
            image = image.astype(np.float32, copy=False)
            h, w = image.shape[:2]
            if box is None:
                box = image_box(h, w, whole_image_margin(self.margin, self.box_free))
            box = np.asarray(box, np.float32).reshape(-1)
            if (
                box.shape != (4,)
                or not np.isfinite(box).all()
                or box[2] <= box[0]
                or box[3] <= box[1]
            ):
                raise ValueError(
                    f"boxes[{i}]: expected x0, y0, x1, y1 with x1 > x0 and y1 > y0, "
                    f"got {np.asarray(boxes[i]).tolist()}"
                )
            arrays.append((image, box))
            groups.setdefault(image.shape, []).append(i)
        out = [None] * len(arrays)
        net = self.as_keras()
        for indices in groups.values():
            batch = {
                "image": np.stack([arrays[i][0] for i in indices]),
                "box": np.stack([arrays[i][1] for i in indices]),
            }
            masks = np.asarray(net.predict_on_batch(batch))
            for j, i in enumerate(indices):
                out[i] = np.clip(masks[j, :, :, 0], 0.0, 1.0)
        if refine == "grabcut":
            from indep_seg.refine import refine_mask

            for i, box in enumerate(boxes):
                out[i] = refine_mask(arrays[i][0], out[i], box)
        return out


def whole_image_margin(margin, box_free):
    """The margin of the box that stands for a whole image given without one.

    A box-free network (ILSGAN's post-hoc UNet, trained on whole scenes) takes the image itself as
    its crop window, so its box is the image shrunk by the crop `margin` (`image_box(h, w,
    margin)`); a box-level network (Dai et al. 2019) takes the whole image as the object box
    (margin 0), and its window grows around it by `margin`, as in training.
    """
    return float(margin) if box_free else 0.0


def image_box(height, width, margin=0.0):
    """The box `[x0, y0, x1, y1]` whose crop window `box_window(box, margin, square)` is the whole
    `height x width` image (with `square`, the square of side max(height, width) around it).

    `margin=0` gives the image itself. With `margin > 0` it is the image shrunk about its centre by
    `1 + 2 margin`, so that growing it by the margin gives the image back: a box-free network sees
    the whole image, as in training, instead of the image shrunk inside a black frame.
    """
    if not (isinstance(margin, (int, float)) and margin >= 0 and np.isfinite(margin)):
        raise ValueError(f"margin: expected a finite number >= 0, got {margin!r}")
    half_w = float(width) / (2.0 * (1.0 + 2.0 * margin))
    half_h = float(height) / (2.0 * (1.0 + 2.0 * margin))
    cx, cy = float(width) / 2.0, float(height) / 2.0
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def whole_image_boxes(images, margin=0.0):
    """`[N, 4]` boxes of each image of a `[N, H, W, C]` batch: the whole image (`margin=0`), or the
    box whose crop window with `margin` is the whole image (`image_box`, graph version)."""
    if not (isinstance(margin, (int, float)) and margin >= 0 and np.isfinite(margin)):
        raise ValueError(f"margin: expected a finite number >= 0, got {margin!r}")
    shape = tf.shape(images)
    w, h = tf.cast(shape[2], tf.float32), tf.cast(shape[1], tf.float32)
    half_w, half_h = w / (2.0 * (1.0 + 2.0 * margin)), h / (2.0 * (1.0 + 2.0 * margin))
    row = tf.stack([w / 2.0 - half_w, h / 2.0 - half_h, w / 2.0 + half_w, h / 2.0 + half_h])
    return tf.tile(row[tf.newaxis], tf.stack([shape[0], 1]))


#: Box-free crops are sampled at this multiple of the network's side, then resized with
#: `tf.image.resize(antialias=True)`: the filter of ILSGAN's training photos.
BOX_FREE_OVERSAMPLE = 4


def network_crops(images, windows, resolution, box_free=False):
    """The network's input: each window of `images` `[N, H, W, 3]` at `resolution`, black outside.

    Box-level networks get `crop_to_window` (bilinear samples at twice the side, average-pooled),
    the crops of their box-level training data. A box-free network (ILSGAN's post-hoc UNet) learned
    from GAN samples of photos resized with `tf.image.resize(antialias=True)`
    (`indep_seg.data.image_stream.centre_square`), a wider (triangle) filter: its windows are
    sampled at `BOX_FREE_OVERSAMPLE` x `resolution` and resized the same way. With the 128-pixel
    evaluation crops and a 32-pixel network this is the protocol crop followed by the antialiased
    resize of the in-process evaluation.
    """
    resolution = int(resolution)
    if not box_free:
        return crop_to_window(images, windows, resolution)
    big = crop_to_window(images, windows, resolution * BOX_FREE_OVERSAMPLE)
    return tf.image.resize(big, [resolution, resolution], antialias=True)


def segment_in_boxes(network, images, boxes, resolution, margin=0.0, square=False, box_free=False):
    """Graph code of box-level inference: `[N, H, W, 3]`, `[N, 4]` -> masks `[N, H, W, 1]` in [0,
    1].

    Crops each image to its box's window (`box_window(box, margin, square)`, resized to
    `resolution` by `network_crops`), runs `network` (inference mode) and pastes the masks back at
    full size (zero outside the windows). `BoxSegmenter.call` and the exported serving signatures
    run this.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    windows = box_window(boxes, margin, square)
    crops = network_crops(images, windows, resolution, box_free)
    masks = network(crops, training=False)
    masks = tf.clip_by_value(tf.cast(masks, tf.float32), 0.0, 1.0)
    return paste_back(masks, windows, (shape[1], shape[2]))


@keras.saving.register_keras_serializable(package="indep_seg")
class BoxSegmenter(keras.Model):
    """Box-level segmentation as a `keras.Model`: photos and boxes in, full-size masks out.

    Inputs: a dict `{"image": [N, H, W, 3], "box": [N, 4]}` (images uint8, or float in [0, 1],
    one size per batch; boxes pixel `x0, y0, x1, y1`, x1 / y1 exclusive) or `{"image": ...}` /
    an image tensor alone (the whole image is the box; with `box_free`, the crop window).
    Output: masks `[N, H, W, 1]` float32 in [0, 1]. One graph call per batch (`predict`,
    `predict_on_batch`).

    Args:
        network: the mask network, `[N, R, R, 3]` crops in [0, 1] -> `[N, R, R, 1]` masks (a
            `UNet`, or the `segmenter` of a trained `ForegroundSegGAN`).
        resolution: R.
        margin, square: the crop rule the network was trained with
        (`indep_seg.box_crop.box_window`).
        box_free: the network was trained on whole scenes (ILSGAN's post-hoc UNet): without a box
            the crop window is the image itself (`image_box`), not the image grown by `margin`.

    Example:
        >>> gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny")     # doctest: +SKIP
        >>> gan.fit(batches, steps_per_epoch=10)                             # doctest: +SKIP
        >>> seg = indep_seg.BoxSegmenter.from_gan(gan)                       # doctest: +SKIP
        >>> masks = seg.predict({"image": photos, "box": boxes})            # doctest: +SKIP
        >>> indep_seg.serving.export.export_segmenter(seg, "models/horses")  # doctest: +SKIP

    Reference: Dai et al. 2019, "Learning Segmentation Masks with the Independence Prior".
    """

    def __init__(self, network, resolution, margin=0.0, square=False, box_free=False, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.resolution, self.margin, self.square = _crop_rule(resolution, margin, square)
        self.box_free = bool(box_free)

    @property
    def model(self):
        """The mask network (the name `Segmenter` and the serving export use)."""
        return self.network

    @classmethod
    def from_gan(cls, gan, square=False):
        """The segmenter of a (trained) `ForegroundSegGAN`: its segmentation network and crop
        rule."""
        net = gan.segmenter
        resolution = getattr(net, "resolution", None)
        if resolution is None:
            raise ValueError(
                "gan.segmenter: has no `resolution` attribute; build BoxSegmenter(network, "
                "resolution)"
            )
        if hasattr(net, "as_functional"):
            net = net.as_functional()
        return cls(
            net, int(resolution), margin=float(getattr(gan, "box_margin", 0.0)), square=square
        )

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            if "image" not in inputs:
                raise ValueError(
                    f"inputs: missing key 'image' (got keys {sorted(inputs)}); BoxSegmenter takes "
                    "{'image': [N, H, W, 3], 'box': [N, 4]} ('box' optional)"
                )
            image, box = inputs["image"], inputs.get("box")
        else:
            image, box = inputs, None
        image = tf.convert_to_tensor(image)
        if image.shape.rank != 4 or image.shape[-1] != 3:
            raise ValueError(f"inputs['image']: expected [N, H, W, 3], got shape {image.shape}")
        image = (
            tf.cast(image, tf.float32) / 255.0
            if image.dtype == tf.uint8
            else tf.cast(image, tf.float32)
        )
        if box is None:
            box = whole_image_boxes(image, whole_image_margin(self.margin, self.box_free))
        else:
            box = tf.cast(tf.convert_to_tensor(box), tf.float32)
            if box.shape.rank != 2 or box.shape[-1] != 4:
                raise ValueError(
                    f"inputs['box']: expected [N, 4] (one x0, y0, x1, y1 box per image), "
                    f"got shape {box.shape}"
                )
        return segment_in_boxes(
            self.network, image, box, self.resolution, self.margin, self.square, self.box_free
        )

    def to_segmenter(self, experiment: str = "", extra: dict | None = None) -> Segmenter:
        """The on-disk `Segmenter` artifact of this model (`.save(dir)` for `indep-seg segment
        --model dir`)."""
        extra = {**({"box_free": True} if self.box_free else {}), **(extra or {})}
        seg = Segmenter(self.network, self.resolution, self.margin, self.square, experiment, extra)
        seg._keras = self
        return seg

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "resolution": self.resolution,
            "margin": self.margin,
            "square": self.square,
            "box_free": self.box_free,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
