"""ForegroundSegGAN (Dai et al. 2019, eq. 6-7) on tiny networks."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.models.foreground_seg_gan import (ForegroundSegGAN, area_penalty, discriminator_loss,
                                                 generator_loss_ns)
from indep_seg.networks.sn_discriminator import sn_discriminator_preset
from indep_seg.networks.unet import unet_preset


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(size=(n, 16, 16, 3)).astype("float32"),
            "background": rng.uniform(size=(n, 16, 16, 3)).astype("float32")}


def _gan(**kw):
    gan = ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), **kw)
    gan.compile()
    return gan


def test_losses_match_hand_computation():
    m = np.zeros((2, 2, 2, 1), "float32")
    m[0] = 1.0                     # areas 1.0 and 0.0
    # eq. 7: mean over masks of (area - a)^2
    assert area_penalty(m, 0.25).numpy() == pytest.approx(((0.75 ** 2) + (0.25 ** 2)) / 2)
    assert area_penalty(m, 0.25, mode="above").numpy() == pytest.approx((0.75 ** 2) / 2)
    real, fake = np.array([[0.0]], "float32"), np.array([[0.0]], "float32")
    assert discriminator_loss(real, fake).numpy() == pytest.approx(2 * np.log(2), rel=1e-5)
    assert generator_loss_ns(np.array([[2.0]], "float32")).numpy() == pytest.approx(np.log1p(np.exp(-2)), rel=1e-5)


def test_default_optimizers_are_the_papers():
    gan = _gan()
    assert float(gan.d_optimizer.learning_rate) == pytest.approx(2e-4)
    assert float(gan.g_optimizer.learning_rate) == pytest.approx(4e-4)
    assert float(gan.g_optimizer.beta_1) == 0.5 and float(gan.g_optimizer.beta_2) == 0.999
    assert gan.built and set(gan.checkpoint_items()) >= {"segmenter", "discriminator", "d_optimizer",
                                                         "g_optimizer", "seed_generator"}


def test_composite_is_mask_blend():
    gan = _gan()
    b = _batch(2)
    m, x = gan.compose(b["image"], b["background"])
    np.testing.assert_allclose(x, m * b["image"] + (1 - m) * b["background"], atol=1e-6)


def test_train_step_changes_both_networks_and_uses_sn_in_training():
    gan = _gan()
    b = _batch()
    d_before = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    g_before = [w.numpy().copy() for w in gan.segmenter.trainable_weights]
    u = [w for w in gan.discriminator.non_trainable_weights if "vector_u" in w.path][0]
    u0 = u.numpy().copy()
    logs = gan.train_step(b)
    assert set(logs) >= {"d_loss", "g_adv", "area_loss", "mask_mean"}
    assert any(np.abs(a - w.numpy()).max() > 0 for a, w in zip(d_before, gan.discriminator.trainable_weights))
    assert any(np.abs(a - w.numpy()).max() > 0 for a, w in zip(g_before, gan.segmenter.trainable_weights))
    assert np.abs(u.numpy() - u0).max() > 0   # the power iteration ran: D was called with training=True


def test_discriminator_loss_falls_on_a_fixed_batch():
    gan = ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"))
    gan.compile(d_optimizer=keras.optimizers.Adam(2e-3, 0.5), g_optimizer=keras.optimizers.SGD(0.0))
    b = _batch()
    b["background"] = np.zeros_like(b["background"])   # fakes are darker than reals
    step = tf.function(gan.train_step)
    first = float(np.asarray(step(b)["d_loss"]).reshape(-1)[0])
    for _ in range(40):
        last = step(b)
    gan.d_loss_tracker.reset_state()
    last = float(np.asarray(step(b)["d_loss"]).reshape(-1)[0])
    assert last < first - 0.2, (first, last)


def test_area_penalty_pulls_mask_mean_to_a():
    gan = ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), area_a=0.1)
    gan.compile(g_optimizer=keras.optimizers.Adam(5e-3, 0.5))
    b = _batch()
    start = float(np.mean(gan.segmenter(b["image"], training=True)))
    step = tf.function(gan.train_step)
    for _ in range(40):
        step(b)
    end = float(np.mean(gan.segmenter(b["image"], training=True)))
    assert abs(start - 0.1) > 0.2 and abs(end - 0.1) < 0.05, (start, end)


def test_image_grid_rows_and_bad_args():
    gan = _gan()
    grid = gan.image_grid(_batch(3))
    assert grid.dtype == np.uint8 and grid.shape == (4 * 18 + 2, 3 * 18 + 2, 3)
    with pytest.raises(ValueError, match="area_a"):
        ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), area_a=1.5)
    with pytest.raises(ValueError, match="area_mode"):
        ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), area_mode="below")


def test_box_priors_hand_computed():
    from indep_seg.models.foreground_seg_gan import box_projection_loss, pairwise_colour_loss
    m = np.zeros((1, 4, 4, 1), "float32")
    m[0, 1, :, 0] = 1.0            # one full row: every column has a 1, rows 0, 2, 3 have none
    assert box_projection_loss(m).numpy() == pytest.approx(0.0 + 3 / 4)
    m = np.full((1, 4, 4, 1), 1.0, "float32")
    # margin 0.5: the box is the middle half of the crop, so the outer two positions should be 0
    assert box_projection_loss(m, margin=0.5).numpy() == pytest.approx(0.5 + 0.5)
    img = np.zeros((1, 4, 4, 3), "float32")
    img[:, :, 2:] = 1.0            # two flat colour regions, left and right
    labels = np.zeros((1, 4, 4, 1), "float32")
    labels[:, :, 2:] = 1.0
    assert pairwise_colour_loss(labels, img).numpy() == pytest.approx(-np.log(1 + 1e-5), abs=1e-6)
    half = np.full((1, 4, 4, 1), 0.5, "float32")
    assert pairwise_colour_loss(half, img).numpy() == pytest.approx(-np.log(0.5 + 1e-5), rel=1e-5)
