"""The core's preset tables (`indep_seg.presets`) and the training experiments of the same names
agree: `ForegroundSegGAN.from_preset(name)`, `ILSGAN.from_preset(name)` and
`HocGAN.from_preset(name)` build the model `indep-seg train --experiment name` trains."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.presets import (
    BOX_SEG_PRESETS,
    HOC_PRESETS,
    ILSGAN_PRESETS,
    PRESETS,
    UnknownPresetError,
    preset_options,
)

ALL_PRESETS = sorted(name for table in PRESETS.values() for name in table)


def _config(name):
    from indep_seg.training.registry import get_experiment

    return get_experiment(name).default_config


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_training_experiment_has_the_core_presets_options(name):
    cfg = _config(name)
    fields = {f.name for f in dataclasses.fields(cfg)}
    options = preset_options(name)
    missing = sorted(set(options) - fields)
    assert not missing, f"{type(cfg).__name__} has no field(s) {missing}"
    differ = {k: (v, getattr(cfg, k)) for k, v in options.items() if getattr(cfg, k) != v}
    assert not differ, f"{name}: core preset vs training config (core, training): {differ}"


@pytest.mark.parametrize("name", ["ilsgan", "hoc"])
def test_config_class_defaults_repeat_the_small_preset(name):
    """`ILSGANConfig()` / `HocConfig()` (the benchmarks build them) are the small preset too."""
    cls = type(_config(name))
    default = cls()
    differ = {k: (v, getattr(default, k)) for k, v in preset_options(name).items()}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    assert not differ, f"{cls.__name__}() vs preset {name!r} (core, class default): {differ}"


def test_preset_options_are_copies_and_unknown_names_list_the_known():
    a = preset_options("box_seg")
    a["resolution"] = 1
    assert preset_options("box_seg")["resolution"] == 64
    with pytest.raises(
        UnknownPresetError, match="box_seg_huge.*box_seg, box_seg_paper, box_seg_tiny"
    ):
        preset_options("box_seg_huge")
    assert set(PRESETS) == {"ForegroundSegGAN", "ILSGAN", "HocGAN"}


def test_each_class_lists_its_presets_and_unknown_names_list_them():
    import indep_seg

    for cls, table, known in (
        (indep_seg.ILSGAN, ILSGAN_PRESETS, "ilsgan, ilsgan_paper, ilsgan_tiny"),
        (indep_seg.HocGAN, HOC_PRESETS, "hoc, hoc_paper, hoc_tiny"),
    ):
        assert cls.presets == table and cls.presets is not table
        assert all(p["description"] for p in cls.presets.values())
        with pytest.raises(UnknownPresetError, match=f"'box_seg' for {cls.__name__}.*{known}$"):
            cls.from_preset("box_seg")
        with pytest.raises(ValueError, match="resolutoin"):
            cls.from_preset(sorted(table)[0], resolutoin=8)


@pytest.mark.parametrize("name", sorted(BOX_SEG_PRESETS))
def test_trainer_and_from_preset_build_the_same_networks(name):
    from indep_seg.models.foreground_seg_gan import ForegroundSegGAN
    from indep_seg.training.experiments.box_seg import build_discriminator, build_unet, effective_a

    cfg = _config(name)
    gan = ForegroundSegGAN.from_preset(name)
    assert build_unet(cfg).get_config() == gan.segmenter.get_config()
    assert build_discriminator(cfg).get_config() == gan.discriminator.get_config()
    assert effective_a(cfg) == gan.area_a


def _same_networks(a, b, networks):
    for net in networks:
        x, y = getattr(a, net), getattr(b, net)
        assert (x is None) == (y is None), net
        if x is None:
            continue
        assert x.get_config() == y.get_config(), net
        assert [tuple(v.shape) for v in x.weights] == [tuple(v.shape) for v in y.weights], net
        assert x.count_params() == y.count_params() > 0, net
    for opt in ("d_optimizer", "g_optimizer"):
        x, y = getattr(a, opt), getattr(b, opt)
        for k in ("learning_rate", "beta_1", "beta_2", "epsilon"):
            assert float(getattr(x, k)) == float(getattr(y, k)), (opt, k)


# the paper preset (StyleGAN2 at 128 px, 512 channels, twice) is too big to build in a test; its
# options are checked above, and the builder is the one these two presets use
@pytest.mark.parametrize("name", ["ilsgan", "ilsgan_tiny"])
def test_ilsgan_trainer_and_from_preset_build_the_same_model(name):
    from indep_seg.models.ilsgan import ILSGAN
    from indep_seg.training.experiments.ilsgan import build_model

    cfg = _config(name)
    trained = build_model(cfg)
    api = ILSGAN.from_preset(name, seed=cfg.seed)
    _same_networks(trained, api, ("generator", "discriminator"))
    keys = (
        "shift_fraction eta eta_max lambda_m lambda_b mask_losses_on ils lambda_ils "
        "lambda_ils_warmup ils_warmup_images ils_separate ils_opt_visible ils_opt_mask "
        "ils_distribution r1_gamma r1_interval use_ada ema_kimg ema_rampup style_mixing_prob "
        "pl_weight pl_interval"
    )
    for k in keys.split():
        assert getattr(trained, k) == getattr(api, k), k
    assert (trained.generator_ema is None) == (api.generator_ema is None)
    # the trainer fixes the global batch of the loss scaling; the API scales by the batch it sees
    assert (trained.global_batch_size, api.global_batch_size) == (cfg.batch_size, None)
    assert api.preset == name and api.preset_options == preset_options(name)


def _cluster_image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    img = np.full((96, 96), 0.05, np.float32)
    for _ in range(14):
        x, y = rng.integers(5, 91, 2)
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 25] = 0.7
    return np.repeat(img[..., None], 3, -1)


@pytest.mark.parametrize("name", sorted(HOC_PRESETS))
def test_hoc_trainer_and_from_preset_build_the_same_model(name):
    from indep_seg.models.hoc_gan import HocGAN
    from indep_seg.training.experiments.hoc import build_model, resolve

    r = resolve(_config(name), _cluster_image())  # what the trainer builds from
    trained = build_model(r, seed=0)
    # the image decides grayscale, and (setting "auto") the layers, the padding and a
    given = {"grayscale": r["grayscale"]}
    if preset_options(name)["setting"] == "auto" and preset_options(name)["a"] is None:
        with pytest.raises(ValueError, match="num_layers, padding, a are estimated from the image"):
            HocGAN.from_preset(name)
        given.update({k: r[k] for k in ("num_layers", "padding", "a")})
    api = HocGAN.from_preset(name, **given)
    _same_networks(trained, api, ("generator", "discriminator", "q_head"))
    keys = "latent_dim num_layers padding a area_weight info_weight binarization_weight grayscale"
    for k in keys.split():
        assert getattr(trained, k) == getattr(api, k), k
        assert api.preset_options[k] == r[k], k


def test_ilsgan_tiny_preset_fits_a_step_on_a_synthetic_batch():
    import indep_seg

    gan = indep_seg.ILSGAN.from_preset("ilsgan_tiny", seed=1)
    gan.run_eagerly = True  # one step: tracing the train step would take most of the test
    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    before = [v.numpy().copy() for v in gan.generator.trainable_weights]
    history = gan.fit(tf.data.Dataset.from_tensors(images).repeat(), steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["g_loss"][-1]) and np.isfinite(history.history["d_loss"][-1])
    after = gan.generator.trainable_weights
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, after))


def test_hoc_tiny_preset_fits_a_step_on_a_synthetic_batch():
    import indep_seg

    gan = indep_seg.HocGAN.from_preset("hoc_tiny", seed=1)
    gan.run_eagerly = True
    rng = np.random.default_rng(0)
    batch = {
        "real": rng.random((4, 16, 16, 3)).astype(np.float32),
        "background": np.zeros((4, 16, 16, 3), np.float32),
    }
    before = [v.numpy().copy() for v in gan.generator.trainable_weights]
    history = gan.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["g_loss"][-1]) and np.isfinite(history.history["d_loss"][-1])
    after = gan.generator.trainable_weights
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, after))
