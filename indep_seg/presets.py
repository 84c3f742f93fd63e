"""Named presets of the library's models, and `from_preset` in keras-hub's manner.

The core owns this table; the training layer's experiments of the same names
(`indep_seg.training.experiments.box_seg` / `tiny`) build their configs from it and their networks
with the builders below (`tests/test_api_presets.py` checks that they agree), so a model
built here with `ForegroundSegGAN.from_preset("box_seg")` is the model that
`indep-seg train --experiment box_seg` trains.

Example (keras-hub's `Backbone.from_preset` / `Backbone.presets`):

    >>> import indep_seg
    >>> sorted(indep_seg.ForegroundSegGAN.presets)
    ['box_seg', 'box_seg_paper', 'box_seg_tiny']
    >>> gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", seed=1)   # doctest: +SKIP

Importing this module does not import TensorFlow (`indep-seg --help` stays fast).
"""

from __future__ import annotations

import copy

__all__ = [
    "BOX_SEG_PRESETS",
    "PRESETS",
    "PresetMixin",
    "UnknownPresetError",
    "preset_options",
    "build_box_seg_unet",
    "build_box_seg_discriminator",
    "effective_area_a",
]


class UnknownPresetError(ValueError):
    """`from_preset` was given a name that is not in the class's preset table."""


# Options of the box-level model (Dai et al. 2019, application 1). The keys are the field names of
# the training layer's `BoxSegConfig`; only the options that define the model, its losses, its
# optimizers and the batches it needs are here (the run's length, logging and data are the
# trainer's).
_BOX_SEG = dict(
    resolution=64,  # side R of the box crops the UNet sees
    margin=0.0,  # crop = box grown by margin x size on each side (paper: 0)
    unet="small",  # indep_seg.networks.unet.UNET_PRESETS name
    unet_filters="",  # "32,64,128,256,256" overrides the preset's widths
    upsampling="conv_bilinear",  # "transpose" (paper), "bilinear", "conv_bilinear"
    bn_momentum=0.9,
    bn_synchronized=False,  # UNet BatchNorm over the global batch under tf.distribute
    bias_before_bn=True,
    discriminator="small",  # SN_DISCRIMINATOR_PRESETS name
    d_head="dense",  # "conv" (Table 1) or "dense"
    d_downsample=2,  # D judges 2x average-pooled images (real and fake alike)
    area_lambda=1000.0,  # lambda of eq. (7), Table 3
    area_a=0.35,  # a of eq. (7) for a crop equal to the box
    area_mode="two_sided",
    box_prior_weight=0.5,  # box tightness prior (BoxInst), not in the paper
    pairwise_weight=1.0,  # colour-affinity prior (BoxInst), not in the paper
    adversarial_weight=1.0,
    prior="grabcut",  # per-image box prior: batches carry "prior" (and "area"); "none": the paper
    prior_weight=1.0,
    area_from_prior=True,  # batches carry "area", the per-image a of eq. (7)
    batch_size=32,
    d_learning_rate=6e-4,
    g_learning_rate=2e-4,
)

#: Presets of `ForegroundSegGAN`: name -> {"description", "options"}.
BOX_SEG_PRESETS = {
    "box_seg": dict(
        description="box-level foreground masks (Dai et al. 2019), small preset for 2 CPU cores: "
        "64 px crops, per-image GrabCut box prior (batches need 'prior' and 'area')",
        options=dict(_BOX_SEG),
    ),
    "box_seg_tiny": dict(
        description="box_seg at toy size (16 px crops, tiny networks): tests and examples, "
        "seconds on a CPU; no box prior",
        # synchronized BN and no bias before BN: N replicas train as one device
        # (training/experiments/
        # tiny.py); no box prior: its cross-entropy amplifies synchronized BN's float32
        # summation-order
        # differences past the two-devices-equal-one tolerance (6e-4 vs 1e-4 on 41 of 189 variables)
        options={
            **_BOX_SEG,
            **dict(
                resolution=16,
                unet="tiny",
                discriminator="tiny",
                d_downsample=1,
                batch_size=4,
                bn_synchronized=True,
                bias_before_bn=False,
                prior="none",
                area_from_prior=False,
            ),
        },
    ),
    "box_seg_paper": dict(
        description="Dai et al. 2019 exactly: Table 1 networks, Table 3 hyperparameters "
        "(128 px, lambda 1000, a 0.25, crop = box, Adam 2e-4 / 4e-4)",
        options={
            **_BOX_SEG,
            **dict(
                resolution=128,
                margin=0.0,
                unet="paper",
                upsampling="transpose",
                discriminator="paper",
                d_head="conv",
                d_downsample=1,
                area_a=0.25,
                box_prior_weight=0.0,
                pairwise_weight=0.0,
                prior="none",
                prior_weight=0.0,
                area_from_prior=False,
                d_learning_rate=2e-4,
                g_learning_rate=4e-4,
            ),
        },
    ),
}

#: Every class's presets: class name -> its table.
PRESETS = {"ForegroundSegGAN": BOX_SEG_PRESETS}


def _table_of(cls) -> dict:
    for klass in cls.__mro__:
        if klass.__name__ in PRESETS:
            return PRESETS[klass.__name__]
    raise TypeError(f"{cls.__name__}: no preset table (known: {', '.join(sorted(PRESETS))})")


def preset_options(name: str, table: dict | None = None) -> dict:
    """A copy of the options of preset `name` (in `table`, default: every table)."""
    tables = [table] if table is not None else list(PRESETS.values())
    for t in tables:
        if name in t:
            return copy.deepcopy(t[name]["options"])
    known = sorted(k for t in tables for k in t)
    raise UnknownPresetError(f"preset: unknown name {name!r}; known presets: {', '.join(known)}")


class _ClassProperty:
    """keras-hub's `classproperty`: `Model.presets` without an instance."""

    def __init__(self, fget):
        self.fget = fget

    def __get__(self, _, owner):
        return self.fget(owner)


class PresetMixin:
    """`from_preset(name, **overrides)` and `presets`, as keras-hub's `Backbone` / `Task` have them.

    A class using it has a table in `PRESETS` (under its name) and a `_from_preset_options(options,
    seed, **kwargs)` classmethod that builds (and compiles) the model from one preset's options.
    """

    @_ClassProperty
    def presets(cls) -> dict:
        """{preset name: {"description": ..., "options": {...}}} for this class (a copy)."""
        return copy.deepcopy(_table_of(cls))

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0, **kwargs):
        """The model of preset `preset`, compiled with the preset's optimizers.

        Args:
            preset: a name of `cls.presets`.
            seed: seed of the model's random draws.
            **kwargs: preset options to change (names as in `cls.presets[preset]["options"]`),
                e.g. `resolution=32` or `prior_weight=0.0`.

        Raises:
            UnknownPresetError (a ValueError): `preset` is not a known name; the message lists them.
            ValueError: an option name the preset does not have; the message lists them.
        """
        table = _table_of(cls)
        if not isinstance(preset, str) or preset not in table:
            raise UnknownPresetError(
                f"preset: unknown name {preset!r} for {cls.__name__}; known presets: "
                f"{', '.join(sorted(table))}"
            )
        options = preset_options(preset, table)
        unknown = sorted(set(kwargs) - set(options) - {"name"})
        if unknown:
            raise ValueError(
                f"{cls.__name__}.from_preset({preset!r}): unknown option(s) {', '.join(unknown)}; "
                f"the preset's options are {', '.join(sorted(options))}"
            )
        name = kwargs.pop("name", None)
        options.update(kwargs)
        model = cls._from_preset_options(options, seed=seed, **({"name": name} if name else {}))
        model.preset = preset
        model.preset_options = options
        return model


# ------------------------------------------------------------------------------- box_seg builders
def effective_area_a(options: dict) -> float:
    """a of eq. (7) for the crop: the box is 1 / (1 + 2 margin)^2 of its crop."""
    return float(options["area_a"]) / (1.0 + 2.0 * float(options["margin"])) ** 2


def build_box_seg_unet(options: dict, name: str = "unet"):
    """The segmentation network (`UNet`) of box_seg options (a preset's, or a `BoxSegConfig`'s)."""
    from indep_seg.networks.unet import UNET_PRESETS, UNet

    o = options
    kw = dict(UNET_PRESETS[o["unet"]])
    kw.update(
        resolution=int(o["resolution"]),
        upsampling=o["upsampling"],
        bn_momentum=float(o["bn_momentum"]),
    )
    if o["bn_synchronized"]:
        kw.update(bn_synchronized=True)
    if not o["bias_before_bn"]:
        kw.update(bias_before_bn=False)
    if o["unet_filters"]:
        filters = tuple(int(v) for v in str(o["unet_filters"]).split(","))
        kernels = tuple(kw["encoder_kernels"])
        kernels = (kernels + (kernels[-1],) * len(filters))[: len(filters)]
        kw.update(encoder_filters=filters, encoder_kernels=kernels)
    return UNet(name=name, **kw)


def build_box_seg_discriminator(options: dict):
    """The discriminator (`SNDiscriminator`) of box_seg options."""
    from indep_seg.networks.sn_discriminator import SN_DISCRIMINATOR_PRESETS, SNDiscriminator

    kw = dict(SN_DISCRIMINATOR_PRESETS[options["discriminator"]])
    kw.update(
        resolution=int(options["resolution"]) // int(options["d_downsample"]),
        head=options["d_head"],
    )
    return SNDiscriminator(**kw)
