"""Data layer: readers of every source into one decoded element, and tf.data pipelines.

Readers (all return a `tf.data.Dataset` of the same element, see `indep_seg.data.decode`):
`read_image_folder`, `read_tfrecords`, `read_synthetic`, `read_tfds`, and the dispatcher
`read_dataset(spec)` behind every trainer's `--data` (folder, TFRecord glob, `tfds:NAME[:split]`,
`synthetic[:N]`). Pipelines: `box_crop_pipeline` (one element per box, cropped, augmented,
batched). The embedded default dataset lives in `indep_seg.data.synthetic`.
"""

from indep_seg.data.files import DataError, find_folder_layout, plan_folder
from indep_seg.data.pipeline import background_crop_pipeline, box_crop_pipeline, crop_boxes
from indep_seg.data.preview import save_preview
from indep_seg.data.readers import (
    read_dataset,
    read_image_folder,
    read_synthetic,
    read_tfds,
    read_tfrecords,
    resolve_tfrecord_files,
)
from indep_seg.data.synthetic import (
    generate_example,
    make_cluster_image,
    write_cluster_image,
    write_synthetic_dataset,
)

__all__ = [
    "DataError",
    "find_folder_layout",
    "plan_folder",
    "box_crop_pipeline",
    "background_crop_pipeline",
    "crop_boxes",
    "save_preview",
    "read_dataset",
    "read_image_folder",
    "read_synthetic",
    "read_tfds",
    "read_tfrecords",
    "resolve_tfrecord_files",
    "generate_example",
    "make_cluster_image",
    "write_cluster_image",
    "write_synthetic_dataset",
]
