"""indep_seg: segmentation masks learned by composing independent layers.

Dai et al. 2019, "Learning Segmentation Masks with the Independence Prior" and
Zou et al. 2023, "ILSGAN: Independent Layer Synthesis for Unsupervised
Foreground-Background Segmentation", in TensorFlow 2.21 / Keras 3.

The public Python API (README, "Python API"):

- `ForegroundSegGAN` (box-level masks, Dai et al. 2019): `ForegroundSegGAN.presets`,
  `ForegroundSegGAN.from_preset("box_seg" | "box_seg_tiny" | "box_seg_paper")`, then keras `fit`
  on a `tf.data.Dataset` of dict batches (keys: `indep_seg.box_batches`).
- `BoxSegmenter`: a `keras.Model`, photos + boxes -> full-size masks in one graph call;
  `BoxSegmenter.from_gan(gan)`; export with `indep_seg.serving.export.export_segmenter`.
- `Segmenter`: the on-disk artifact `indep-seg segment / evaluate / export` read.
- `ILSGAN` (Zou et al. 2023): `ILSGAN.from_preset("ilsgan" | "ilsgan_tiny" | "ilsgan_paper")`,
  then `fit` on image batches; `HocGAN` (Dai et al. 2019, app. 2):
  `HocGAN.from_preset("hoc" | "hoc_tiny" | "hoc_paper")`, then `fit` on {"real", "background"}.
- `Distiller`, `UNet`, `SNDiscriminator`: the other models and networks.

Names are imported on first use, so `import indep_seg` (and `indep-seg --help`) does not import
TensorFlow.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ForegroundSegGAN": "indep_seg.models.foreground_seg_gan",
    "ILSGAN": "indep_seg.models.ilsgan",
    "HocGAN": "indep_seg.models.hoc_gan",
    "Distiller": "indep_seg.models.distiller",
    "UNet": "indep_seg.networks.unet",
    "SNDiscriminator": "indep_seg.networks.sn_discriminator",
    "BoxSegmenter": "indep_seg.segmenter",
    "Segmenter": "indep_seg.segmenter",
    "prepare_box_seg_batch": "indep_seg.box_batches",
    "PRESETS": "indep_seg.presets",
    "UnknownPresetError": "indep_seg.presets",
}

# Core subpackages and modules reachable as attributes (`indep_seg.data.read_tfrecords`). The
# training, serving and TFRecord-tool layers import the core, not the other way round: import
# them by name (`import indep_seg.serving.export`).
_SUBMODULES = (
    "data",
    "box_crop",
    "box_batches",
    "box_prior",
    "presets",
    "models",
    "networks",
    "losses",
    "metrics",
    "composition",
    "layout",
    "providers",
    "segmenter",
    "hoc",
    "posthoc",
)

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
