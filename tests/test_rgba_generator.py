"""RGBAGenerator (Dai et al. 2019, Table 2) and the InfoGAN Q head."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg import losses
from indep_seg.networks.rgba_generator import InfoGANQHead, RGBAGenerator


def test_paper_preset_is_table_2():
    g = RGBAGenerator.paper(latent_dim=6)
    out = g(tf.random.uniform((2, 6), -1, 1), training=True)
    assert out.shape == (2, 64, 64, 4)
    assert float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 1
    assert g.project.units == 8 * 8 * 256
    kinds = [(type(c).__name__, c.filters, c.kernel_size, c.strides) for c, _ in g.blocks]
    assert kinds == [
        ("UnfusedBiasConv2D", 256, (4, 4), (1, 1)),
        ("UnfusedBiasConv2D", 256, (4, 4), (1, 1)),
        ("GemmConv2DTranspose", 128, (4, 4), (2, 2)),
        ("GemmConv2DTranspose", 64, (4, 4), (2, 2)),
    ]
    assert (g.to_rgba.filters, g.to_rgba.kernel_size, g.to_rgba.strides) == (4, (4, 4), (2, 2))


def test_small_upsample_variant_and_alpha_bias():
    a = 0.1
    g = RGBAGenerator(
        latent_dim=3,
        resolution=16,
        initial_size=4,
        widths=(16, 16, 8),
        upsample="upsample",
        alpha_bias=float(np.log(a / (1 - a))),
    )
    out = g(tf.zeros((4, 3)))
    assert out.shape == (4, 16, 16, 4)
    # the alpha bias sets the starting mask level near a (all other weights are small at init)
    assert abs(float(tf.reduce_mean(out[..., 3])) - a) < 0.08


def test_resolution_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="resolution: expected initial_size"):
        RGBAGenerator(resolution=32, initial_size=8, widths=(16, 16, 8, 8))
    with pytest.raises(ValueError, match="upsample"):
        RGBAGenerator(resolution=16, initial_size=4, widths=(8, 8, 8), upsample="bicubic")


def test_get_config_round_trip():
    g = RGBAGenerator(latent_dim=2, resolution=16, initial_size=8, widths=(8, 8), upsample="deconv")
    g2 = RGBAGenerator.from_config(g.get_config())
    assert g2.get_config()["widths"] == [8, 8] and g2.latent_dim == 2
    q = InfoGANQHead(3, widths=(4, 8))
    assert InfoGANQHead.from_config(q.get_config()).widths == (4, 8)


def test_information_term_decreases_when_q_can_recover_z():
    """Dai's beta term: trained jointly, G and Q make z recoverable, so the term falls well below
    its chance level var(z) = 1/3 (z uniform in [-1, 1]); with a generator that ignores z it
    cannot."""
    keras.utils.set_random_seed(1)
    d = 2
    g = RGBAGenerator(
        latent_dim=d, resolution=8, initial_size=4, widths=(16, 8), upsample="upsample"
    )
    q = InfoGANQHead(d, widths=(8, 16))
    opt = keras.optimizers.Adam(3e-3)
    g(tf.zeros((1, d)))
    q(tf.zeros((1, 8, 8, 4)))
    variables = g.trainable_variables + q.trainable_variables

    @tf.function
    def step(z):
        with tf.GradientTape() as tape:
            loss = losses.infogan_information_loss(z, q(g(z, training=True), training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    z_eval = tf.random.stateless_uniform((256, d), [0, 1], -1, 1)
    before = float(losses.infogan_information_loss(z_eval, q(g(z_eval, training=False))))
    for i in range(60):
        step(tf.random.stateless_uniform((32, d), [i, 2], -1, 1))
    after = float(losses.infogan_information_loss(z_eval, q(g(z_eval, training=True))))
    assert after < 0.5 * before and after < 0.1

    # Q alone facing a generator whose output does not depend on z: stays near var(z) = 1/3.
    q2 = InfoGANQHead(d, widths=(8, 16))
    const = tf.zeros((32, 8, 8, 4))
    q2(const)
    opt2 = keras.optimizers.Adam(3e-3)

    @tf.function
    def step2(z):
        with tf.GradientTape() as tape:
            loss = losses.infogan_information_loss(z, q2(const))
        opt2.apply_gradients(
            zip(tape.gradient(loss, q2.trainable_variables), q2.trainable_variables)
        )

    for i in range(60):
        step2(tf.random.stateless_uniform((32, d), [i, 3], -1, 1))
    z = tf.random.stateless_uniform((1024, d), [9, 9], -1, 1)
    chance = float(losses.infogan_information_loss(z, q2(tf.zeros((1024, 8, 8, 4)))))
    assert chance == pytest.approx(1 / 3, abs=0.06)


def test_border_taper_zeroes_the_canvas_border_only_in_alpha():
    g = RGBAGenerator(
        latent_dim=2,
        resolution=16,
        initial_size=4,
        widths=(8, 8, 8),
        upsample="upsample",
        border_taper=3,
        alpha_bias=5.0,
    )
    out = g(tf.random.uniform((3, 2), -1, 1)).numpy()
    alpha = out[..., 3]
    assert np.all(alpha[:, 0, :] == 0) and np.all(alpha[:, :, -1] == 0)
    # one pixel in: at most 1/3 of the untapered alpha; 3 pixels in: untouched (alpha ~ sigmoid(5))
    assert alpha[:, 1, 8].max() <= 1 / 3 + 1e-6
    assert alpha[:, 8, 8].min() > 0.9
    assert out[..., :3].min() > 0  # RGB is not tapered
    assert RGBAGenerator.from_config(g.get_config()).border_taper == 3
