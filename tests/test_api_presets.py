"""The core's preset table (`indep_seg.presets`) and the training experiments of the same names
agree:
`ForegroundSegGAN.from_preset(name)` is the model `indep-seg train --experiment name` trains."""

import dataclasses

import pytest

from indep_seg.presets import BOX_SEG_PRESETS, PRESETS, UnknownPresetError, preset_options


@pytest.mark.parametrize("name", sorted(BOX_SEG_PRESETS))
def test_training_experiment_has_the_core_presets_options(name):
    from indep_seg.training.registry import get_experiment

    cfg = get_experiment(name).default_config
    fields = {f.name for f in dataclasses.fields(cfg)}
    options = preset_options(name)
    missing = sorted(set(options) - fields)
    assert not missing, f"{type(cfg).__name__} has no field(s) {missing}"
    differ = {k: (v, getattr(cfg, k)) for k, v in options.items() if getattr(cfg, k) != v}
    assert not differ, f"{name}: core preset vs training config (core, training): {differ}"


def test_preset_options_are_copies_and_unknown_names_list_the_known():
    a = preset_options("box_seg")
    a["resolution"] = 1
    assert preset_options("box_seg")["resolution"] == 64
    with pytest.raises(
        UnknownPresetError, match="box_seg_huge.*box_seg, box_seg_paper, box_seg_tiny"
    ):
        preset_options("box_seg_huge")
    assert set(PRESETS) == {"ForegroundSegGAN"}


@pytest.mark.parametrize("name", sorted(BOX_SEG_PRESETS))
def test_trainer_and_from_preset_build_the_same_networks(name):
    from indep_seg.models.foreground_seg_gan import ForegroundSegGAN
    from indep_seg.training.experiments.box_seg import build_discriminator, build_unet, effective_a
    from indep_seg.training.registry import get_experiment

    cfg = get_experiment(name).default_config
    gan = ForegroundSegGAN.from_preset(name)
    assert build_unet(cfg).get_config() == gan.segmenter.get_config()
    assert build_discriminator(cfg).get_config() == gan.discriminator.get_config()
    assert effective_a(cfg) == gan.area_a
