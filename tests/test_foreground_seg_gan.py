"""ForegroundSegGAN (Dai et al. 2019, eq. 6-7) on tiny networks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.losses import area_penalty, discriminator_loss, generator_loss_ns
from indep_seg.models.foreground_seg_gan import ForegroundSegGAN
from indep_seg.networks.sn_discriminator import sn_discriminator_preset
from indep_seg.networks.unet import unet_preset


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(size=(n, 16, 16, 3)).astype("float32"),
        "background": rng.uniform(size=(n, 16, 16, 3)).astype("float32"),
    }


def _gan(**kw):
    gan = ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), **kw)
    gan.compile()
    return gan


def test_losses_match_hand_computation():
    m = np.zeros((2, 2, 2, 1), "float32")
    m[0] = 1.0  # areas 1.0 and 0.0
    # eq. 7: mean over masks of (area - a)^2
    assert area_penalty(m, 0.25).numpy() == pytest.approx(((0.75**2) + (0.25**2)) / 2)
    assert area_penalty(m, 0.25, mode="above").numpy() == pytest.approx((0.75**2) / 2)
    real, fake = np.array([[0.0]], "float32"), np.array([[0.0]], "float32")
    assert discriminator_loss(real, fake).numpy() == pytest.approx(2 * np.log(2), rel=1e-5)
    assert generator_loss_ns(np.array([[2.0]], "float32")).numpy() == pytest.approx(
        np.log1p(np.exp(-2)), rel=1e-5
    )


def test_default_optimizers_are_the_papers():
    gan = _gan()
    assert float(gan.d_optimizer.learning_rate) == pytest.approx(2e-4)
    assert float(gan.g_optimizer.learning_rate) == pytest.approx(4e-4)
    assert float(gan.g_optimizer.beta_1) == 0.5 and float(gan.g_optimizer.beta_2) == 0.999
    assert gan.built and set(gan.checkpoint_items()) >= {
        "segmenter",
        "discriminator",
        "d_optimizer",
        "g_optimizer",
        "seed_generator",
    }


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
    assert any(
        np.abs(a - w.numpy()).max() > 0
        for a, w in zip(d_before, gan.discriminator.trainable_weights)
    )
    assert any(
        np.abs(a - w.numpy()).max() > 0 for a, w in zip(g_before, gan.segmenter.trainable_weights)
    )
    assert (
        np.abs(u.numpy() - u0).max() > 0
    )  # the power iteration ran: D was called with training=True


def test_discriminator_loss_falls_on_a_fixed_batch():
    gan = ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"))
    gan.compile(d_optimizer=keras.optimizers.Adam(2e-3, 0.5), g_optimizer=keras.optimizers.SGD(0.0))
    b = _batch()
    b["background"] = np.zeros_like(b["background"])  # fakes are darker than reals
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
    band = 6 * len("background") + 8  # the row titles' band (gallery.tile_rows)
    assert grid.dtype == np.uint8 and grid.shape == (4 * 18 + 2, band + 3 * 18 + 2, 3)
    with pytest.raises(ValueError, match="area_a"):
        ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), area_a=1.5)
    with pytest.raises(ValueError, match="area_mode"):
        ForegroundSegGAN(unet_preset("tiny"), sn_discriminator_preset("tiny"), area_mode="below")


def test_box_priors_hand_computed():
    from indep_seg.models.foreground_seg_gan import box_projection_loss, pairwise_colour_loss

    m = np.zeros((1, 4, 4, 1), "float32")
    m[0, 1, :, 0] = 1.0  # one full row: every column has a 1, rows 0, 2, 3 have none
    assert box_projection_loss(m).numpy() == pytest.approx(0.0 + 3 / 4)
    m = np.full((1, 4, 4, 1), 1.0, "float32")
    # margin 0.5: the box is the middle half of the crop, so the outer two positions should be 0
    assert box_projection_loss(m, margin=0.5).numpy() == pytest.approx(0.5 + 0.5)
    img = np.zeros((1, 4, 4, 3), "float32")
    img[:, :, 2:] = 1.0  # two flat colour regions, left and right
    labels = np.zeros((1, 4, 4, 1), "float32")
    labels[:, :, 2:] = 1.0
    assert pairwise_colour_loss(labels, img).numpy() == pytest.approx(-np.log(1 + 1e-5), abs=1e-6)
    half = np.full((1, 4, 4, 1), 0.5, "float32")
    assert pairwise_colour_loss(half, img).numpy() == pytest.approx(-np.log(0.5 + 1e-5), rel=1e-5)


# The trainer's losses are indep_seg.losses' (one home per equation, issue #20). Its former local
# versions, kept here verbatim as the reference they must still equal:
def _old_area_penalty(mask, a, mode="two_sided"):
    diff = tf.reduce_mean(mask, axis=[1, 2, 3]) - a
    if mode == "above":
        diff = tf.nn.relu(diff)
    return tf.reduce_mean(tf.square(diff))


def _old_discriminator_loss(real_logits, fake_logits):
    return tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(
        tf.nn.softplus(fake_logits)
    )


def _old_generator_loss_ns(fake_logits):
    return tf.reduce_mean(tf.nn.softplus(-fake_logits))


@pytest.mark.parametrize("seed", range(4))
def test_losses_equal_the_trainers_former_local_versions(seed):
    rng = np.random.default_rng(seed)
    mask = tf.constant(rng.uniform(size=(6, 8, 8, 1)), tf.float32)
    per_image = tf.constant(rng.uniform(0.05, 0.6, size=6), tf.float32)
    for a in (0.25, 0.0, 1.0, per_image):
        for mode in ("two_sided", "above"):
            np.testing.assert_allclose(
                area_penalty(mask, a, mode=mode),
                _old_area_penalty(mask, a, mode),
                rtol=1e-6,
                atol=1e-9,
            )
    for shape in ((6, 1), (6,), (6, 3, 3, 1)):  # a logit per image, or patch logits (d_downsample)
        real = tf.constant(rng.normal(scale=3, size=shape), tf.float32)
        fake = tf.constant(rng.normal(scale=3, size=shape), tf.float32)
        np.testing.assert_allclose(
            discriminator_loss(real, fake), _old_discriminator_loss(real, fake), rtol=1e-6
        )
        np.testing.assert_allclose(generator_loss_ns(fake), _old_generator_loss_ns(fake), rtol=1e-6)


# Logged by two `train_step`s of the trainer with its former local losses (the same seed, networks
# and batch as below); the shared losses must give the same numbers.
_LOGS_BEFORE = {
    "paper": [
        {
            "d_loss": 1.3837177753448486,
            "g_adv": 0.6790034770965576,
            "area_loss": 0.15342706441879272,
            "mask_mean": 0.6388625502586365,
            "d_real": 0.5096604824066162,
            "d_fake": 0.5080015063285828,
        },
        {
            "d_loss": 1.3836467266082764,
            "g_adv": 0.6797584295272827,
            "area_loss": 0.15214671194553375,
            "mask_mean": 0.6373000144958496,
            "d_real": 0.5089945793151855,
            "d_fake": 0.5073540806770325,
        },
    ],
    "above_area": [
        {
            "d_loss": 1.3837177753448486,
            "g_adv": 0.6790034770965576,
            "area_loss": 0.11238431185483932,
            "mask_mean": 0.6388625502586365,
            "d_real": 0.5096604824066162,
            "d_fake": 0.5080015063285828,
        },
        {
            "d_loss": 1.3836573362350464,
            "g_adv": 0.6797432899475098,
            "area_loss": 0.11095188558101654,
            "mask_mean": 0.6376297473907471,
            "d_real": 0.5089945793151855,
            "d_fake": 0.5073592066764832,
        },
    ],
}


@pytest.mark.parametrize(
    "name, kwargs",
    [("paper", {}), ("above_area", {"area_mode": "above", "area_a": 0.3, "area_lambda": 10.0})],
)
def test_trainer_losses_unchanged_on_fixed_inputs(name, kwargs):
    keras.utils.set_random_seed(0)
    gan = _gan(**kwargs)
    batch = _batch(8, seed=0)
    if name == "above_area":
        batch["area"] = np.linspace(0.1, 0.6, 8).astype("float32")  # one target per image
    for want in _LOGS_BEFORE[name]:
        got = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in gan.train_step(batch).items()}
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=2e-5, abs=1e-6), (k, got[k], want[k])
