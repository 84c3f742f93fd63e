"""Converters of images, masks, boxes and large images into sharded TFRecords (+ inspection).

`indep-seg tfrecords folder|masks|patches|inspect ...` (see `indep_seg.commands.tfrecords`).
Records use the tensorflow/models keys (`indep_seg.data.example`); shards are named
`PREFIX-00000-of-000NN.tfrecord` and written atomically (`indep_seg.tfrecords_tools.writer`).
"""

from indep_seg.tfrecords_tools.converters import (
    convert_folder,
    convert_masks,
    convert_patches,
    patch_windows,
)
from indep_seg.tfrecords_tools.inspect import format_report, inspect_tfrecords
from indep_seg.tfrecords_tools.writer import (
    ConversionSummary,
    existing_shards,
    shard_names,
    write_sharded,
)

__all__ = [
    "convert_folder",
    "convert_masks",
    "convert_patches",
    "patch_windows",
    "inspect_tfrecords",
    "format_report",
    "ConversionSummary",
    "existing_shards",
    "shard_names",
    "write_sharded",
]
