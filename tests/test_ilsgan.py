"""ILSGAN model (indep_seg/models/ilsgan.py): perturbation geometry, losses and their gradients, lazy R1,
ILS warm-up, grids and checkpoint items, on tiny presets (train steps run eagerly: seconds)."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.models.ilsgan import (ILSGAN, binarization_loss, club_estimate, ils_l1_loss, ils_mi_loss,
                                     mask_hinge_loss, perturbed_composite, random_shift_perturbation)
from indep_seg.networks.stylegan2 import LayeredGenerator, StyleGAN2Discriminator

R = 16


def _shift_numpy(a, dx, dy):
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy, x - dx
            if 0 <= sy < h and 0 <= sx < w:
                out[y, x] = a[sy, sx]
    return out


# ----------------------------------------------------------------------------- eq. (3)
def test_random_shift_matches_numpy_and_bounds():
    f = np.random.rand(6, R, R, 3).astype(np.float32)
    m = np.random.rand(6, R, R, 1).astype(np.float32)
    tf_, tm, shifts = random_shift_perturbation(f, m, 0.125, seed=keras.random.SeedGenerator(3))
    shifts = shifts.numpy()
    assert np.abs(shifts).max() <= 2  # floor(0.125 * 16)
    for i, (dx, dy) in enumerate(shifts):
        np.testing.assert_array_equal(tf_.numpy()[i], _shift_numpy(f[i], dx, dy))
        np.testing.assert_array_equal(tm.numpy()[i], _shift_numpy(m[i], dx, dy))


def test_shifts_cover_the_range_and_are_not_all_zero():
    f = np.zeros((512, 32, 32, 3), np.float32)
    _, _, shifts = random_shift_perturbation(f, f[..., :1], 0.125, seed=keras.random.SeedGenerator(0))
    s = shifts.numpy()
    assert set(np.unique(s)) == set(range(-4, 5))


def test_perturbed_composite_leaves_background_in_place():
    f = np.ones((2, R, R, 3), np.float32)
    m = np.zeros((2, R, R, 1), np.float32)
    m[:, 6:10, 6:10] = 1.0
    b = np.random.rand(2, R, R, 3).astype(np.float32)
    x, shifts = perturbed_composite(f, m, b, 0.125, seed=keras.random.SeedGenerator(1))
    for i, (dx, dy) in enumerate(shifts.numpy()):
        tm = _shift_numpy(m[i], dx, dy)
        np.testing.assert_allclose(x.numpy()[i], tm * 1.0 + (1 - tm) * b[i], atol=1e-6)


# ----------------------------------------------------------------------------- losses, eq. (4), (12), (13)
def test_mask_hinge_and_binarization_values_and_gradients():
    m = tf.Variable(np.full((2, 4, 4, 1), 0.1, np.float32))
    with tf.GradientTape(persistent=True) as tape:
        hinge = tf.reduce_sum(mask_hinge_loss(m, 0.25))
        binar = tf.reduce_sum(binarization_loss(m))
    np.testing.assert_allclose(hinge.numpy(), 2 * 0.15, rtol=1e-5)
    np.testing.assert_allclose(binar.numpy(), 2 * 0.1, rtol=1e-5)
    assert (tape.gradient(hinge, m).numpy() < 0).all()  # descending raises the mask area
    assert (tape.gradient(binar, m).numpy() > 0).all()  # descending pushes 0.1 towards 0
    m.assign(np.full((2, 4, 4, 1), 0.3, np.float32))
    with tf.GradientTape() as tape:
        hinge = tf.reduce_sum(mask_hinge_loss(m, 0.25))
    assert hinge.numpy() == 0 and not tape.gradient(hinge, m).numpy().any()  # area above eta: no force


def test_mask_max_area_option():
    from indep_seg.models.ilsgan import mask_max_area_loss

    m = tf.Variable(np.full((2, 4, 4, 1), 0.9, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mask_max_area_loss(m, 0.5))
    np.testing.assert_allclose(loss.numpy(), 2 * 0.4, rtol=1e-5)
    assert (tape.gradient(loss, m).numpy() > 0).all()  # descending shrinks the mask
    np.testing.assert_allclose(mask_max_area_loss(np.full((1, 2, 2, 1), 0.3, np.float32), 0.5).numpy(), [0.0])


def _numpy_ils_mi(f, b, m, k):
    def club(bb, ff):
        return np.mean([-np.abs(bb[i] - ff[i]).mean() + np.abs(bb[k[i]] - ff[i]).mean()
                        for i in range(len(ff))])
    return club(b * m, f * m) + club(b * (1 - m), f * (1 - m))


def test_ils_mi_matches_eq12_by_hand():
    rng = np.random.default_rng(0)
    f, b = rng.random((4, 3, 3, 3)).astype(np.float32), rng.random((4, 3, 3, 3)).astype(np.float32)
    m = rng.random((4, 3, 3, 1)).astype(np.float32)
    k = np.array([2, 0, 3, 3], np.int32)
    got = tf.reduce_mean(ils_mi_loss(f, b, m, k)).numpy()
    np.testing.assert_allclose(got, _numpy_ils_mi(f, b, m, k), rtol=1e-5)
    # Table 3 row E (no separation) is the CLUB estimate on whole layers
    np.testing.assert_allclose(ils_mi_loss(f, b, m, k, separate=False).numpy(),
                               club_estimate(b, f, k).numpy(), rtol=1e-6)
    # identical pairing (k_i = i) gives exactly 0
    np.testing.assert_allclose(ils_mi_loss(f, b, m, np.arange(4, dtype=np.int32)).numpy(), 0.0, atol=1e-7)
    # Gaussian q (row F) is a different estimate
    assert not np.allclose(ils_mi_loss(f, b, m, k, distribution="gaussian").numpy(),
                           ils_mi_loss(f, b, m, k).numpy())


def test_ils_mi_gradient_switches():
    rng = np.random.default_rng(1)
    f = tf.Variable(rng.random((4, 3, 3, 3)).astype(np.float32))
    b = tf.Variable(rng.random((4, 3, 3, 3)).astype(np.float32))
    m = tf.Variable(rng.random((4, 3, 3, 1)).astype(np.float32))
    k = np.array([1, 2, 3, 0], np.int32)

    def grads(**kw):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(ils_mi_loss(f, b, m, k, **kw))
        return [g if g is None else g.numpy() for g in tape.gradient(loss, [f, b, m])]

    gf, gb, gm = grads()
    assert np.abs(gf).sum() > 0 and np.abs(gb).sum() > 0 and np.abs(gm).sum() > 0
    gm_off = grads(opt_mask=False)[2]
    assert gm_off is None or not np.any(gm_off)  # OptM off (Table 3 row D)
    # OptVis off (row C): with an all-one mask only f_vis and b_inv depend on f, b; f_vis is stopped
    m.assign(np.ones((4, 3, 3, 1), np.float32))
    gf_vis_off, gb_vis_off, _ = grads(opt_visible=False)
    assert gf_vis_off is None or not np.any(gf_vis_off)
    assert np.abs(gb_vis_off).sum() > 0  # b_inv = b m is not visible: still optimised


def test_ils_l1_eq13():
    f = np.full((1, 2, 2, 3), 0.8, np.float32)
    b = np.full((1, 2, 2, 3), 0.2, np.float32)
    m = np.ones((1, 2, 2, 1), np.float32)
    # b_inv = 0.2, f_vis = 0.8, b_vis = f_inv = 0
    np.testing.assert_allclose(ils_l1_loss(f, b, m).numpy(), [-0.6], rtol=1e-6)


# ----------------------------------------------------------------------------- the model
class _FixedLayers(keras.Model):
    """A generator stub: the same square object on a random background for every z."""

    z_dim = 4
    resolution = R

    def __init__(self):
        super().__init__()
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        f = np.zeros((1, R, R, 3), np.float32)
        f[..., 0] = 1.0
        m = np.zeros((1, R, R, 1), np.float32)
        m[:, 6:10, 5:11] = 1.0
        self.f, self.m = tf.constant(f), tf.constant(m)
        self.b = tf.constant(np.random.default_rng(0).random((1, R, R, 3)).astype(np.float32) * 0.5)

    def call(self, z, training=None):
        n = tf.shape(z)[0]
        tile = lambda t: tf.tile(t, [n, 1, 1, 1])  # noqa: E731
        return {"foreground": tile(self.f) * self.scale, "mask": tile(self.m), "background": tile(self.b)}


class _RecordingD(keras.Model):
    def __init__(self):
        super().__init__()
        self.w = self.add_weight(shape=(), initializer="ones", name="w")
        self.seen = []

    def call(self, x, training=None):
        self.seen.append(np.asarray(x))
        return tf.reduce_mean(x, axis=[1, 2, 3])[:, None] * self.w


def _compile(model):
    model.compile(d_optimizer=keras.optimizers.Adam(1e-3, 0.0, 0.99),
                  g_optimizer=keras.optimizers.Adam(1e-3, 0.0, 0.99))
    return model


def test_discriminator_sees_only_perturbed_composites():
    gen, disc = _FixedLayers(), _RecordingD()
    model = _compile(ILSGAN(gen, disc, ada=False, r1_interval=0, ils="none"))
    real = np.random.rand(8, R, R, 3).astype(np.float32)
    out = gen(tf.zeros([1, 4]))  # the layers before the step updates the generator
    f, m, b = out["foreground"].numpy()[0], out["mask"].numpy()[0], out["background"].numpy()[0]
    model.train_step(real)
    g_fake, d_fake, d_real = disc.seen[:3]
    np.testing.assert_array_equal(d_real, real)
    np.testing.assert_allclose(d_fake, g_fake, atol=1e-6)  # D step reuses the G step's fakes
    shifted = 0
    for x in g_fake:
        matches = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                   if np.allclose(x, _shift_numpy(m, dx, dy) * _shift_numpy(f, dx, dy)
                                  + (1 - _shift_numpy(m, dx, dy)) * b, atol=1e-5)]
        assert matches, "a fake is not a composite with a shift of at most 0.125 of the width"
        shifted += (0, 0) not in matches
    assert shifted >= 4  # with 25 possible shifts, most of 8 samples are displaced


def _tiny_model(**kw):
    gen = LayeredGenerator(8, z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=4)
    disc = StyleGAN2Discriminator(8, channel_base=32, channel_max=4)
    return _compile(ILSGAN(gen, disc, **kw))


def _step_values(model, real):
    for t in model.metrics:
        t.reset_state()
    return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in model.train_step(real).items()}


def test_r1_is_lazy_and_heuristic_gamma():
    model = _tiny_model(ada=False, r1_interval=3, ils="none")
    real = np.random.rand(4, 8, 8, 3).astype(np.float32)
    r1 = [_step_values(model, real)["r1"] for _ in range(5)]
    assert r1[0] > 0 and r1[3] > 0
    assert r1[1] == r1[2] == r1[4] == 0.0
    assert model.r1_gamma is None  # default: 0.0002 * res^2 / batch, computed in train_step


def test_ils_weight_warmup_then_full():
    model = _tiny_model(ada=False, r1_interval=0, ils="mi", ils_warmup_images=8)
    real = np.random.rand(4, 8, 8, 3).astype(np.float32)
    weights = [_step_values(model, real)["ils_weight"] for _ in range(3)]
    np.testing.assert_allclose(weights, [0.2, 0.2, 1.0], rtol=1e-6)
    assert int(model.images_seen.numpy()) == 12
    model_none = _tiny_model(ada=False, r1_interval=0, ils="none")
    assert _step_values(model_none, real)["ils_weight"] == 0.0


def test_ils_gradient_reaches_both_generators_and_not_the_discriminator():
    model = _tiny_model(ada=False, r1_interval=0)
    z = tf.random.normal([4, 4])
    k = tf.constant([1, 2, 3, 0])
    with tf.GradientTape(persistent=True) as tape:
        layers = model.generator(z)
        loss = tf.reduce_mean(model.ils_loss(layers, k))
    for sub in (model.generator.G_f, model.generator.G_b):
        g = tape.gradient(loss, sub.trainable_variables)
        assert sum(float(tf.reduce_sum(tf.abs(x))) for x in g if x is not None) > 0
    assert all(g is None for g in tape.gradient(loss, model.discriminator.trainable_variables))


def test_generator_step_updates_generator_and_ada_moves():
    model = _tiny_model(ada=True, ada_interval=1, ada_kimg=0.01, r1_interval=0)
    before = [v.numpy().copy() for v in model.generator.trainable_variables]
    real = np.random.rand(4, 8, 8, 3).astype(np.float32)
    vals = _step_values(model, real)
    after = [v.numpy() for v in model.generator.trainable_variables]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert np.isfinite(list(vals.values())).all()
    assert model.ada.p.numpy() == pytest.approx(min(max(0.0, np.sign(vals["r_t"] - 0.6) * 4 / 10.0), 1.0))


def test_image_grid_rows_and_checkpoint_items():
    model = _tiny_model(ada=False)
    grid = model.image_grid()
    assert grid.shape == (4 * 8, 8 * 8, 3) and grid.dtype == np.uint8
    mask_row = grid[3 * 8:]
    assert (mask_row[..., 0] == mask_row[..., 1]).all()  # the mask row is grey
    out = model.generate(model.grid_z)
    comp = np.clip(out["composite"].numpy(), 0, 1)
    np.testing.assert_allclose(grid[16:24, :8] / 255.0, comp[0], atol=1 / 255 + 1e-6)
    items = model.checkpoint_items()
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer", "ada_p", "seed_generator"} <= set(items)
    assert "step" not in items and "rng" not in items  # reserved by indep_seg.training.loop


def test_constructor_validation():
    gen = LayeredGenerator(8, z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=4)
    disc = StyleGAN2Discriminator(8, channel_base=32, channel_max=4)
    with pytest.raises(ValueError, match="ils"):
        ILSGAN(gen, disc, ils="mine")
    with pytest.raises(ValueError, match="ils_distribution"):
        ILSGAN(gen, disc, ils_distribution="cauchy")
    with pytest.raises(ValueError, match="shift_fraction"):
        ILSGAN(gen, disc, shift_fraction=1.5)


def test_paper_preset_is_the_paper():
    from indep_seg.training.experiments.ilsgan import ILSGANConfig, paper_config
    from indep_seg.training.registry import get_experiment

    p = paper_config()
    assert (p.resolution, p.z_dim, p.w_dim, p.mapping_layers, p.g_channel_max) == (64, 512, 512, 8, 512)
    assert (p.learning_rate, p.beta_1, p.beta_2) == (0.0025, 0.0, 0.99)
    assert (p.lambda_m, p.eta, p.lambda_b, p.lambda_ils, p.lambda_ils_warmup) == (2.0, 0.25, 2.0, 1.0, 0.2)
    assert (p.ils_warmup_images, p.ada_target, p.r1_interval, p.shift_fraction) == (400000, 0.6, 16, 0.125)
    assert p.r1_gamma < 0  # -> 0.0002 res^2 / batch
    assert p.eta_max < 0 and p.mask_bias == 0.0  # the small preset's extra area bound is off
    assert p.steps * p.batch_size == 8_000_000
    assert get_experiment("ilsgan_paper").default_config == p
    assert dataclasses.asdict(get_experiment("ilsgan").default_config) == dataclasses.asdict(ILSGANConfig())
