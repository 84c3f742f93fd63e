"""Named presets of the library's models, and `from_preset` in keras-hub's manner.

The core owns these tables; the training layer's experiments of the same names
(`indep_seg.training.experiments.box_seg` / `ilsgan` / `hoc` / `tiny`) build their configs from
them and their models with the builders here and in the model classes (`ILSGAN.from_options`,
`HocGAN.from_options`; `tests/test_api_presets.py` checks that they agree), so a model built here
with `ForegroundSegGAN.from_preset("box_seg")`, `ILSGAN.from_preset("ilsgan")` or
`HocGAN.from_preset("hoc_paper")` is the model that `indep-seg train --experiment <the same name>`
trains.

Example (keras-hub's `Backbone.from_preset` / `Backbone.presets`):

    >>> import indep_seg
    >>> sorted(indep_seg.ForegroundSegGAN.presets)
    ['box_seg', 'box_seg_paper', 'box_seg_tiny']
    >>> gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", seed=1)   # doctest: +SKIP
    >>> sorted(indep_seg.ILSGAN.presets), sorted(indep_seg.HocGAN.presets)
    (['ilsgan', 'ilsgan_paper', 'ilsgan_tiny'], ['hoc', 'hoc_paper', 'hoc_tiny'])

Importing this module does not import TensorFlow (`indep-seg --help` stays fast).
"""

from __future__ import annotations

import copy

__all__ = [
    "BOX_SEG_PRESETS",
    "HOC_ESTIMATED",
    "HOC_PAPER_SETTINGS",
    "HOC_PRESETS",
    "ILSGAN_PRESETS",
    "PRESETS",
    "PresetMixin",
    "UnknownPresetError",
    "preset_options",
    "build_box_seg_unet",
    "build_box_seg_discriminator",
    "effective_area_a",
    "hoc_model_options",
    "hoc_setting_options",
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

# Options of ILSGAN (Zou et al. 2023): the field names of the training layer's `ILSGANConfig`
# that define the networks, the losses, the optimizers and the batch (the run's length,
# evaluation, checkpoint selection and post-hoc UNet are the trainer's). The `ilsgan` preset: small
# StyleGAN2-style networks at 32 px for 2 CPU cores.
_ILSGAN = dict(
    resolution=32,
    z_dim=64,
    w_dim=64,
    mapping_layers=2,
    g_channel_base=1024,
    g_channel_max=64,
    d_channel_base=1024,
    d_channel_max=64,
    use_noise=True,
    mbstd_group_size=4,  # minibatch-std group (StyleGAN2: 4)
    mask_bias=0.0,  # mask-logit offset
    # small preset only (paper: 0): fixed centred logit map (LayeredGenerator); without it masks
    # went translucent / all-0 / all-1 within the CPU budget on the horse photos
    mask_center_prior=2.0,
    batch_size=32,
    learning_rate=0.0025,  # Adam (0, 0.99); D's lr and betas adjusted for lazy R1 (StyleGAN2)
    beta_1=0.0,
    beta_2=0.99,
    r1_gamma=-1.0,  # < 0: 0.0002 * res^2 / batch (StyleGAN2-ADA heuristic)
    r1_interval=16,
    ada=True,
    ada_target=0.6,
    ada_interval=4,
    ada_kimg=100.0,
    ema_kimg=10.0,  # EMA of G, half-life in kimg; 0: no EMA copy
    ema_rampup=0.05,  # < 0: no ramp-up
    style_mixing_prob=0.0,  # StyleGAN2 / the authors' code: 0.9 (not measured on CPU yet)
    pl_weight=0.0,  # path length: StyleGAN2 2; the authors' code has it off
    pl_interval=4,
    shift_fraction=0.125,  # T of eq. (3)
    eta=0.25,  # L_m hinge, eq. (4)
    # small preset only (paper: -1 = off): upper area hinge; on the horse photos, without it masks
    # went all-0 (mask_bias 0) or all-1 (mask_bias 1) within the CPU budget
    eta_max=0.5,
    lambda_m=2.0,
    lambda_b=2.0,
    # L_m and L_b on m (eq. 4 as printed) or on T(m) ("shifted", the authors' loss.py)
    mask_losses_on="mask",
    ils="mi",  # "mi" (eq. 12), "l1" (eq. 13), "none"
    lambda_ils=1.0,
    lambda_ils_warmup=0.2,
    ils_warmup_images=20000,
    ils_separate=True,
    ils_opt_visible=True,
    ils_opt_mask=True,
    ils_distribution="laplace",
)

#: Presets of `ILSGAN`: name -> {"description", "options"}.
ILSGAN_PRESETS = {
    "ilsgan": dict(
        description="ILSGAN (Zou et al. 2023), small preset for 2 CPU cores: 32 px, narrow "
        "StyleGAN2-style networks, ILS-MI, ADA, EMA; batches of images in [0, 1]",
        options=dict(_ILSGAN),
    ),
    "ilsgan_tiny": dict(
        description="ilsgan at toy size (16 px, 16 channels): tests and examples, seconds on a "
        "CPU; ILS-L1, no ADA, no noise, minibatch-std group 1 (N replicas train as one device)",
        # what makes N replicas train as one device: training/experiments/tiny.py
        options={
            **_ILSGAN,
            **dict(
                resolution=16,
                z_dim=8,
                w_dim=8,
                mapping_layers=1,
                g_channel_base=64,
                g_channel_max=16,
                d_channel_base=64,
                d_channel_max=16,
                use_noise=False,
                mbstd_group_size=1,
                mask_center_prior=0.0,
                batch_size=4,
                ada=False,
                ils="l1",
                r1_interval=2,
            ),
        },
    ),
    "ilsgan_paper": dict(
        description="Zou et al. 2023 exactly: StyleGAN2 at 128 px, z and w 512, 8-layer mapping, "
        "512 channels, Adam 0.0025 (0, 0.99), ADA, EMA, style mixing 0.9, no upper area hinge",
        options={
            **_ILSGAN,
            **dict(
                resolution=128,
                z_dim=512,
                w_dim=512,
                mapping_layers=8,
                g_channel_base=32768,
                g_channel_max=512,
                d_channel_base=32768,
                d_channel_max=512,
                eta_max=-1.0,
                mask_center_prior=0.0,
                ada_kimg=500.0,
                style_mixing_prob=0.9,
                ils_warmup_images=400000,
            ),
        },
    ),
}

# Dai et al. 2019, Table 4 (+ the padding, at 64 px, of "Layout Details" and the flips of "Data
# Preparation"): the HoC settings of the paper.
HOC_PAPER_SETTINGS = {
    "crowd": dict(num_layers=8, latent_dim=6, a=0.1, info_weight=50.0, padding=30, flips=False),
    "fruit": dict(num_layers=10, latent_dim=5, a=0.25, info_weight=50.0, padding=32, flips=True),
    "seed": dict(num_layers=12, latent_dim=2, a=0.25, info_weight=50.0, padding=26, flips=True),
}

#: HoC options that are `None` in a preset: from the Table-4 `setting`, else estimated from the
#: image by the trainer (`indep_seg.training.experiments.hoc.resolve`), else these fallbacks
#: (None: no fallback; `HocGAN.from_preset` then needs the value).
HOC_ESTIMATED = dict(
    num_layers=None, padding=None, a=None, latent_dim=4, info_weight=50.0, grayscale=False
)

# Options of HocGAN (Dai et al. 2019, application 2): the field names of the training layer's
# `HocConfig` that define the networks, the losses, the optimizers and the batch (the window, the
# background provider, the flips and the counter are the trainer's). The `hoc` preset: 32 px
# patches, narrow networks, upsample+conv generator, dense discriminator head (DESIGN.md sec. 7).
_HOC = dict(
    setting="auto",  # "auto" or a Table-4 setting: "crowd", "fruit", "seed" (HOC_PAPER_SETTINGS)
    resolution=32,
    num_layers=None,  # N layers (HOC_ESTIMATED)
    padding=None,  # layout padding, px at `resolution`
    a=None,  # area target of eq. (7)
    latent_dim=None,
    area_weight=1000.0,  # lambda
    info_weight=None,  # beta (InfoGAN term)
    binarization_weight=1.0,  # ILSGAN's L_b on the layer masks; 0 in hoc_paper (the paper)
    grayscale=None,  # gray image: layers' RGB -> its mean (None: True when the image is gray)
    g_initial_size=8,
    g_widths=(128, 64, 32),
    g_upsample="upsample",
    g_bn_momentum=0.9,
    g_bn_synchronized=False,  # BN over the global batch under tf.distribute
    g_bias_before_bn=True,
    g_border_taper=3,  # alpha ramps to 0 on the canvas border (0 = paper)
    d_widths=(32, 64, 128),
    d_final_width=0,
    d_head="dense",
    q_widths=(16, 32, 64),
    batch_size=32,
    d_lr=2e-4,
    g_lr=2e-4,
    jit_compile=False,
)

#: Presets of `HocGAN`: name -> {"description", "options"}.
HOC_PRESETS = {
    "hoc": dict(
        description="instances and masks from one image of a dense cluster (Dai et al. 2019, "
        "app. 2), small preset for 2 CPU cores: 32 px; layers, padding and a estimated from the "
        "image by the trainer (pass them to from_preset)",
        options=dict(_HOC),
    ),
    "hoc_tiny": dict(
        description="hoc at toy size (16 px, 2 layers, narrow networks): tests and examples, "
        "seconds on a CPU; synchronized BN, no bias before BN (N replicas train as one device)",
        options={
            **_HOC,
            **dict(
                resolution=16,
                num_layers=2,
                padding=4,
                a=0.15,
                latent_dim=3,
                g_initial_size=4,
                g_widths=(16, 8, 8),
                g_bn_synchronized=True,
                g_bias_before_bn=False,
                d_widths=(8, 16),
                q_widths=(8, 8),
                batch_size=4,
            ),
        },
    ),
    "hoc_paper": dict(
        description="Dai et al. 2019 app. 2 exactly: Table 2 networks at 64 px, Table 4 setting "
        "'crowd' (8 layers, dim z 6, a 0.1, beta 50, padding 30; setting='fruit' | 'seed')",
        options={
            **_HOC,
            **dict(
                setting="crowd",
                resolution=64,
                g_initial_size=8,
                g_widths=(256, 256, 128, 64),
                g_upsample="deconv",
                d_widths=(64, 128, 256, 512),
                d_final_width=1024,
                d_head="conv1x1",
                q_widths=(64, 128, 256),
                d_lr=2e-4,
                g_lr=4e-4,
                batch_size=32,
                binarization_weight=0.0,
                g_border_taper=0,
            ),
        },
    ),
}

#: Every class's presets: class name -> its table.
PRESETS = {
    "ForegroundSegGAN": BOX_SEG_PRESETS,
    "ILSGAN": ILSGAN_PRESETS,
    "HocGAN": HOC_PRESETS,
}


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


# ------------------------------------------------------------------------------------ hoc options
def hoc_setting_options(setting: str, resolution: int) -> dict | None:
    """Table 4's values of `setting` with the padding scaled from 64 px to `resolution` (None for
    "auto"). Raises ValueError naming the settings for any other name."""
    if setting == "auto":
        return None
    if setting not in HOC_PAPER_SETTINGS:
        raise ValueError(
            f"setting: expected 'auto', {', '.join(repr(k) for k in HOC_PAPER_SETTINGS)}, "
            f"got {setting!r}"
        )
    out = dict(HOC_PAPER_SETTINGS[setting])
    out["padding"] = int(round(out["padding"] * int(resolution) / 64))
    return out


def hoc_model_options(options: dict) -> dict:
    """`options` with every `None` of `HOC_ESTIMATED` filled: from the Table-4 `setting`, else the
    fallback. Raises ValueError naming the options that only the image can give (`hoc` with
    setting "auto": num_layers, padding, a; the trainer estimates them and writes them to
    MODEL_DIR/hoc.json)."""
    out = dict(options)
    paper = hoc_setting_options(out["setting"], out["resolution"])
    for key, fallback in HOC_ESTIMATED.items():
        if out[key] is None:
            out[key] = paper[key] if paper is not None and key in paper else fallback
    missing = [k for k in HOC_ESTIMATED if out[k] is None]
    if missing:
        raise ValueError(
            f"HocGAN options: {', '.join(missing)} are estimated from the image by the trainer "
            f"(setting {out['setting']!r}); give them (e.g. from_preset('hoc', num_layers=8, "
            "padding=8, a=0.2), the values MODEL_DIR/hoc.json of `indep-seg train --experiment "
            "hoc` holds) or a Table-4 setting ('crowd', 'fruit', 'seed')"
        )
    return out
