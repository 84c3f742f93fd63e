"""A tfds `GeneratorBasedBuilder` for image + mask folders read from `manual_dir`.

    import tensorflow_datasets as tfds
    from indep_seg.data.tfds_builder import ImageMaskFolder

    builder = ImageMaskFolder(data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="../shared/datasets/weizmann_horse"))
    ds = builder.as_dataset(split="train")

or, through the common reader, `read_tfds("image_mask_folder", manual_dir=...)`, or
`read_dataset("tfds:image_mask_folder", tfds_manual_dir=...)`.

`manual_dir` uses the folder layout of `indep_seg.data.files.find_folder_layout`
(`images/` or `rgb/`, `masks/` or `figure_ground/`, optional `boxes.csv`); sub-folders named
`train`, `validation` or `test` holding that layout become splits of those names, otherwise
everything is the `train` split. Photos are decoded (and resized to their mask's size, as
`read_image_folder` does) with the same functions as every other reader, and stored as PNG.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = ["ImageMaskFolder"]

_SPLIT_NAMES = ("train", "validation", "test")


class ImageMaskFolder(tfds.core.GeneratorBasedBuilder):
    """Images with foreground masks (and optional boxes) from a local folder (no download).

    Features: `image` uint8 `[H, W, 3]`, `mask` uint8 0/1 `[H, W, 1]`, `objects/bbox` (tfds
    BBox, normalised ymin, xmin, ymax, xmax; from `boxes.csv` rows, else the mask's tight box),
    `source_id` (the image file name).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Image + mask folders, boxes from boxes.csv or the masks."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Point manual_dir at a folder with images/ (or rgb/) and masks/ (or figure_ground/), masks
    matched to images by file stem, and an optional boxes.csv (filename,x0,y0,x1,y1 in pixels of
    the photo). Optional train/, validation/, test/ sub-folders with that layout become splits.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Images with binary foreground masks and boxes from a local folder.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                    "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature()}),
                    "source_id": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "mask"),
            homepage="https://github.com/indep-seg/indep_seg",
        )

    def _split_generators(self, dl_manager):
        root = tf.io.gfile.join(str(dl_manager.manual_dir))
        splits = {
            name: tf.io.gfile.join(root, name)
            for name in _SPLIT_NAMES
            if tf.io.gfile.isdir(tf.io.gfile.join(root, name))
        }
        if not splits:
            splits = {"train": root}
        return {name: self._generate_examples(path) for name, path in splits.items()}

    def _generate_examples(self, path):
        from indep_seg.data.decode import load_folder_item
        from indep_seg.data.files import DataError, find_folder_layout, plan_folder

        images_dir, masks_dir, boxes_csv = find_folder_layout(path)
        if masks_dir is None:
            raise DataError(
                f"{path}: no masks folder (expected masks/ or figure_ground/ next to the images)"
            )
        plan = plan_folder(images_dir, masks_dir, boxes_csv)
        plan.raise_if_problems()
        for item in plan.items:
            image, mask, boxes, _, _ = load_folder_item(item)
            h, w = image.shape[:2]
            bboxes = [
                tfds.features.BBox(
                    ymin=float(np.clip(y0 / h, 0, 1)),
                    xmin=float(np.clip(x0 / w, 0, 1)),
                    ymax=float(np.clip(y1 / h, 0, 1)),
                    xmax=float(np.clip(x1 / w, 0, 1)),
                )
                for x0, y0, x1, y1 in boxes
            ]
            yield (
                item.source_id,
                {
                    "image": image,
                    "mask": mask,
                    "objects": {"bbox": bboxes},
                    "source_id": item.source_id,
                },
            )
