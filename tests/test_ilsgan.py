"""ILSGAN model (indep_seg/models/ilsgan.py): perturbation geometry, losses and their gradients,
lazy R1,
ILS warm-up, grids and checkpoint items, on tiny presets (train steps run eagerly: seconds)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg import layout, losses
from indep_seg.models.ilsgan import ILSGAN
from indep_seg.networks.stylegan2 import LayeredGenerator, StyleGAN2Discriminator

R = 16


# the model's calls of the shared functions (indep_seg.layout / indep_seg.losses), per example
def random_shift_perturbation(f, m, frac, seed):
    return layout.random_shift_perturbation(f, m, frac, seed=seed, return_shifts=True)


def mask_hinge_loss(m, eta):
    return losses.mask_hinge_loss(m, eta, reduction="none")


def binarization_loss(m):
    return losses.binarization_loss(m, reduction="none")


def ils_mi_loss(f, b, m, k, separate=True, opt_visible=True, opt_mask=True, distribution="laplace"):
    return losses.ils_mi_loss(
        f,
        b,
        m,
        separate=separate,
        optimize_visible=opt_visible,
        optimize_mask=opt_mask,
        distribution=distribution,
        permutation=k,
        reduction="none",
    )


def club_estimate(b, f, k):
    return losses.ils_mi_loss(
        f, b, np.ones_like(np.asarray(f)[..., :1]), separate=False, permutation=k, reduction="none"
    )


def ils_l1_loss(f, b, m):
    return losses.ils_l1_loss(f, b, m, reduction="none")


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
    _, _, shifts = random_shift_perturbation(
        f, f[..., :1], 0.125, seed=keras.random.SeedGenerator(0)
    )
    s = shifts.numpy()
    assert set(np.unique(s)) == set(range(-4, 5))


def test_perturbed_composite_leaves_background_in_place():
    f = np.ones((2, R, R, 3), np.float32)
    m = np.zeros((2, R, R, 1), np.float32)
    m[:, 6:10, 6:10] = 1.0
    b = np.random.rand(2, R, R, 3).astype(np.float32)
    shifts = np.array([[2, -1], [-2, 2]], np.int32)
    x = layout.perturbed_composite(f, m, b, 0.125, shifts=shifts)
    for i, (dx, dy) in enumerate(shifts):
        tm = _shift_numpy(m[i], dx, dy)
        np.testing.assert_allclose(x.numpy()[i], tm * 1.0 + (1 - tm) * b[i], atol=1e-6)


# ----------------------------------------------------------------------------- losses, eq. (4),
# (12), (13)
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
    assert (
        hinge.numpy() == 0 and not tape.gradient(hinge, m).numpy().any()
    )  # area above eta: no force


def test_mask_max_area_option():
    from indep_seg.models.ilsgan import mask_max_area_loss

    m = tf.Variable(np.full((2, 4, 4, 1), 0.9, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mask_max_area_loss(m, 0.5))
    np.testing.assert_allclose(loss.numpy(), 2 * 0.4, rtol=1e-5)
    assert (tape.gradient(loss, m).numpy() > 0).all()  # descending shrinks the mask
    np.testing.assert_allclose(
        mask_max_area_loss(np.full((1, 2, 2, 1), 0.3, np.float32), 0.5).numpy(), [0.0]
    )


def _numpy_ils_mi(f, b, m, k):
    def club(bb, ff):
        return np.mean(
            [
                -np.abs(bb[i] - ff[i]).mean() + np.abs(bb[k[i]] - ff[i]).mean()
                for i in range(len(ff))
            ]
        )

    return club(b * m, f * m) + club(b * (1 - m), f * (1 - m))


def test_ils_mi_matches_eq12_by_hand():
    rng = np.random.default_rng(0)
    f, b = rng.random((4, 3, 3, 3)).astype(np.float32), rng.random((4, 3, 3, 3)).astype(np.float32)
    m = rng.random((4, 3, 3, 1)).astype(np.float32)
    k = np.array([2, 0, 3, 3], np.int32)
    got = tf.reduce_mean(ils_mi_loss(f, b, m, k)).numpy()
    np.testing.assert_allclose(got, _numpy_ils_mi(f, b, m, k), rtol=1e-5)
    # Table 3 row E (no separation) is the CLUB estimate on whole layers
    np.testing.assert_allclose(
        ils_mi_loss(f, b, m, k, separate=False).numpy(), club_estimate(b, f, k).numpy(), rtol=1e-6
    )
    # identical pairing (k_i = i) gives exactly 0
    np.testing.assert_allclose(
        ils_mi_loss(f, b, m, np.arange(4, dtype=np.int32)).numpy(), 0.0, atol=1e-7
    )
    # Gaussian q (row F) is a different estimate
    assert not np.allclose(
        ils_mi_loss(f, b, m, k, distribution="gaussian").numpy(), ils_mi_loss(f, b, m, k).numpy()
    )


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
        return {
            "foreground": tile(self.f) * self.scale,
            "mask": tile(self.m),
            "background": tile(self.b),
        }


class _RecordingD(keras.Model):
    def __init__(self):
        super().__init__()
        self.w = self.add_weight(shape=(), initializer="ones", name="w")
        self.seen = []

    def call(self, x, training=None):
        self.seen.append(np.asarray(x))
        return tf.reduce_mean(x, axis=[1, 2, 3])[:, None] * self.w


def _compile(model):
    model.compile(
        d_optimizer=keras.optimizers.Adam(1e-3, 0.0, 0.99),
        g_optimizer=keras.optimizers.Adam(1e-3, 0.0, 0.99),
    )
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
        matches = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if np.allclose(
                x,
                _shift_numpy(m, dx, dy) * _shift_numpy(f, dx, dy)
                + (1 - _shift_numpy(m, dx, dy)) * b,
                atol=1e-5,
            )
        ]
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
    assert model.ada.p.numpy() == pytest.approx(
        min(max(0.0, np.sign(vals["r_t"] - 0.6) * 4 / 10.0), 1.0)
    )


def test_keras_fit_with_the_tensorboard_callback(tmp_path):
    """Step logs are scalars outside MultiWorkerMirroredStrategy: Keras' TensorBoard callback
    writes them (shape-[1] logs failed there with NumPy 2)."""
    import keras

    model = _tiny_model(ada=False, r1_interval=0)
    real = np.random.rand(8, 8, 8, 3).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(real).batch(4).repeat()
    hist = model.fit(
        ds,
        epochs=1,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "logs"), update_freq=1)],
    )
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))
    assert np.isfinite(hist.history["d_loss"]).all()


def test_image_grid_rows_and_checkpoint_items():
    model = _tiny_model(ada=False)
    grid = model.image_grid()
    # 8-px tiles shown 8x enlarged (64 px cells), 2-px gutters, a title band at the left
    cell, gap = 64, 2
    assert grid.shape[0] == 2 * gap + 4 * (cell + gap) - gap and grid.dtype == np.uint8
    band = grid.shape[1] - (2 * gap + 8 * (cell + gap) - gap)
    assert band > 0 and (grid[:, :band] < 128).any()  # the row titles are written in the band
    row = lambda i: grid[gap + i * (cell + gap) : gap + i * (cell + gap) + cell]  # noqa: E731
    mask_row = row(3)[:, band + gap :]
    assert (mask_row[..., 0] == mask_row[..., 1]).all()  # the mask row is grey
    out = model.generate(model.grid_z)
    comp = np.clip(out["composite"].numpy(), 0, 1)
    first = row(2)[:, band + gap : band + gap + cell : 8][::8]  # composite 0, one pixel per cell
    np.testing.assert_allclose(first / 255.0, comp[0], atol=1 / 255 + 1e-6)
    items = model.checkpoint_items()
    assert {
        "generator",
        "discriminator",
        "g_optimizer",
        "d_optimizer",
        "ada_p",
        "seed_generator",
    } <= set(items)
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
    assert (p.resolution, p.z_dim, p.w_dim, p.mapping_layers, p.g_channel_max) == (
        128,
        512,
        512,
        8,
        512,
    )
    assert (p.ema_kimg, p.ema_rampup, p.style_mixing_prob, p.pl_weight) == (10.0, 0.05, 0.9, 0.0)
    assert (p.learning_rate, p.beta_1, p.beta_2) == (0.0025, 0.0, 0.99)
    assert (p.lambda_m, p.eta, p.lambda_b, p.lambda_ils, p.lambda_ils_warmup) == (
        2.0,
        0.25,
        2.0,
        1.0,
        0.2,
    )
    assert (p.ils_warmup_images, p.ada_target, p.r1_interval, p.shift_fraction) == (
        400000,
        0.6,
        16,
        0.125,
    )
    assert p.r1_gamma < 0  # -> 0.0002 res^2 / batch
    assert p.eta_max < 0 and p.mask_bias == 0.0  # the small preset's extra area bound is off
    assert p.steps * p.batch_size == 8_000_000
    assert get_experiment("ilsgan_paper").default_config == p
    assert dataclasses.asdict(get_experiment("ilsgan").default_config) == dataclasses.asdict(
        ILSGANConfig()
    )


# ----------------------------------------------------------------------------- one home per concept
# (issue #20)
# The model-local twins the model used before it called indep_seg.layout / indep_seg.losses
# (verbatim maths of
# indep_seg/models/ilsgan.py at d38663f): the trainer's losses must be unchanged on fixed inputs.
def _old_shifts_from_uniform(u, width, max_fraction):
    s = int(np.floor(max_fraction * width))
    shifts = tf.cast(tf.floor(u * tf.cast(2 * s + 1, tf.float32)), tf.int32) - s
    return tf.clip_by_value(shifts, -s, s)


def _old_shift(x, shifts, s):
    padded = tf.pad(x, [[0, 0], [s, s], [s, s], [0, 0]])
    h, w = x.shape[1], x.shape[2]
    rows = tf.range(h)[tf.newaxis] + s - shifts[:, 1:2]
    cols = tf.range(w)[tf.newaxis] + s - shifts[:, 0:1]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def _old_generator_terms(
    f,
    m,
    b,
    shifts,
    k,
    fake_logits,
    eta,
    eta_max,
    lambda_m,
    lambda_b,
    w_ils,
    ils,
    separate,
    opt_visible,
    opt_mask,
    distribution,
):
    def neg_log_q(bb, ff):
        d = bb - ff
        e = tf.abs(d) if distribution == "laplace" else 0.5 * tf.square(d)
        return tf.reduce_mean(e, axis=[1, 2, 3])

    def club(bb, ff):
        return -neg_log_q(bb, ff) + neg_log_q(tf.gather(bb, k), ff)

    mm = m if opt_mask else tf.stop_gradient(m)
    f_vis, f_inv, b_vis, b_inv = f * mm, f * (1.0 - mm), b * (1.0 - mm), b * mm
    if not opt_visible:
        f_vis, b_vis = tf.stop_gradient(f_vis), tf.stop_gradient(b_vis)
    if ils == "mi":
        l_ils = club(b, f) if not separate else club(b_inv, f_vis) + club(b_vis, f_inv)
    elif ils == "l1":
        l_ils = -(
            tf.reduce_mean(tf.abs(b_inv - f_vis), axis=[1, 2, 3])
            + tf.reduce_mean(tf.abs(b_vis - f_inv), axis=[1, 2, 3])
        )
    else:
        l_ils = tf.zeros([f.shape[0]])
    l_m = tf.nn.relu(eta - tf.reduce_mean(m, axis=[1, 2, 3]))
    if eta_max is not None:
        l_m = l_m + tf.nn.relu(tf.reduce_mean(m, axis=[1, 2, 3]) - eta_max)
    l_b = tf.reduce_mean(tf.minimum(m, 1.0 - m), axis=[1, 2, 3])
    adv = tf.nn.softplus(-fake_logits[:, 0])
    return adv + lambda_m * l_m + lambda_b * l_b + w_ils * l_ils


class _ScoreD(keras.Model):
    """A deterministic discriminator with a non-trivial input gradient (for R1)."""

    def __init__(self):
        super().__init__()
        self.w = self.add_weight(
            shape=(R, R, 3), initializer=keras.initializers.RandomNormal(seed=5), name="w"
        )

    def call(self, x, training=None):
        return tf.reduce_sum(tf.square(x) * self.w, axis=[1, 2, 3])[:, None]


@pytest.mark.parametrize(
    "kw",
    [
        dict(ils="mi"),
        dict(ils="mi", ils_separate=False, ils_distribution="gaussian"),
        dict(ils="mi", ils_opt_visible=False, ils_opt_mask=False),
        dict(ils="l1", eta_max=0.5),
        dict(ils="none", eta=0.4),
    ],
)
def test_trainer_losses_unchanged_by_the_single_homes(kw):
    rng = np.random.default_rng(7)
    f = tf.constant(
        rng.random((6, R, R, 3)).astype(np.float32) * 1.4 - 0.2
    )  # linear RGB leaves [0, 1]
    b = tf.constant(rng.random((6, R, R, 3)).astype(np.float32))
    m = tf.constant(rng.random((6, R, R, 1)).astype(np.float32))
    u = tf.constant(rng.random((6, 2)).astype(np.float32))
    k = tf.constant([3, 0, 5, 5, 1, 2], tf.int32)
    model = _compile(ILSGAN(_FixedLayers(), _ScoreD(), ada=False, **kw))
    shifts_new = layout.shifts_from_uniform(u, R, R, model.shift_fraction)
    shifts_old = _old_shifts_from_uniform(u, R, model.shift_fraction)
    np.testing.assert_array_equal(shifts_new.numpy(), shifts_old.numpy())
    layers = {"foreground": f, "mask": m, "background": b}
    x_new, terms = model.generator_losses(layers, shifts_new, k, 0.7)
    s = int(np.floor(model.shift_fraction * R))
    tft, tmt = _old_shift(f, shifts_old, s), _old_shift(m, shifts_old, s)
    x_old = tmt * tft + (1.0 - tmt) * b
    np.testing.assert_allclose(x_new.numpy(), x_old.numpy(), atol=1e-6)
    old = _old_generator_terms(
        f,
        m,
        b,
        shifts_old,
        k,
        model.discriminator(x_old),
        model.eta,
        model.eta_max,
        model.lambda_m,
        model.lambda_b,
        0.7,
        model.ils,
        model.ils_separate,
        model.ils_opt_visible,
        model.ils_opt_mask,
        model.ils_distribution,
    )
    np.testing.assert_allclose(terms["total"].numpy(), old.numpy(), rtol=1e-5, atol=1e-6)
    # discriminator step and R1 (the old r1_penalty_per_example: |grad_x D(x)|^2 summed over pixels)
    real = tf.constant(rng.random((6, R, R, 3)).astype(np.float32))
    d_new, _, _ = model.discriminator_losses(real, x_old)
    d_old = tf.nn.softplus(model.discriminator(x_old)[:, 0]) + tf.nn.softplus(
        -model.discriminator(real)[:, 0]
    )
    np.testing.assert_allclose(d_new.numpy(), d_old.numpy(), rtol=1e-6)
    w = model.discriminator.w.numpy()
    r1_by_hand = np.sum(
        np.square(2.0 * real.numpy() * w), axis=(1, 2, 3)
    )  # d/dx sum(w x^2) = 2 w x
    np.testing.assert_allclose(model.r1_per_example(real).numpy(), r1_by_hand, rtol=1e-5)


def test_mask_losses_on_the_shifted_mask_as_the_authors_code():
    """`mask_losses_on="shifted"`: L_m and L_b of the mask that is composited, T(m) (the authors'
    training/loss.py); the default takes them on m (eq. 4 as printed). Hand-computed references."""
    rng = np.random.default_rng(3)
    f = tf.constant(rng.random((4, R, R, 3)).astype(np.float32))
    b = tf.constant(rng.random((4, R, R, 3)).astype(np.float32))
    m = np.zeros((4, R, R, 1), np.float32)
    m[:, :, :6] = 0.9  # a mask along the left edge: a shift to the left moves part of it out
    m = tf.constant(m)
    shifts = tf.constant([[-2, 0], [0, 0], [-1, 1], [2, -2]], tf.int32)
    k = tf.constant([1, 0, 3, 2], tf.int32)
    layers = {"foreground": f, "mask": m, "background": b}
    terms = {}
    for where in ("mask", "shifted"):
        model = _compile(
            ILSGAN(_FixedLayers(), _ScoreD(), ada=False, ils="none", eta=0.4, mask_losses_on=where)
        )
        _, terms[where] = model.generator_losses(layers, shifts, k, 0.0)
    s = int(np.floor(0.125 * R))
    tm = _old_shift(m, shifts, s).numpy()
    for where, mm in (("mask", m.numpy()), ("shifted", tm)):
        area = mm.mean(axis=(1, 2, 3))
        np.testing.assert_allclose(terms[where]["l_m"], np.maximum(0.4 - area, 0.0), atol=1e-6)
        np.testing.assert_allclose(
            terms[where]["l_b"], np.minimum(mm, 1 - mm).mean(axis=(1, 2, 3)), atol=1e-6
        )
    # example 0 lost two of its six columns to the shift: a larger hinge than on m
    assert terms["shifted"]["l_m"][0] > terms["mask"]["l_m"][0] + 0.05
    with pytest.raises(ValueError, match="mask_losses_on"):
        ILSGAN(_FixedLayers(), _ScoreD(), mask_losses_on="visible")


def test_model_draws_the_old_shifts_from_the_same_seed():
    model = _compile(ILSGAN(_FixedLayers(), _ScoreD(), ada=False, seed=11))
    new = model.draw_shifts(64, R, R).numpy()
    u = keras.random.uniform([64, 2], seed=keras.random.SeedGenerator(11))
    np.testing.assert_array_equal(new, _old_shifts_from_uniform(u, R, 0.125).numpy())


# ----------------------------------------------------------------------------- StyleGAN2 parts
# (issue #21)
def test_ema_beta_by_hand():
    from indep_seg.models.ilsgan import ema_beta

    assert float(ema_beta(4, 0, 0.004)) == pytest.approx(0.5)  # half-life 4 images, batch 4
    assert float(ema_beta(32, 10**6, 10.0)) == pytest.approx(0.5 ** (32 / 10000))
    assert float(ema_beta(4, 80, 10.0, 0.05)) == pytest.approx(
        0.5
    )  # ramp-up: min(10000, 80 * 0.05) = 4
    assert float(ema_beta(4, 0, 10.0, 0.05)) == 0.0  # first step: the copy is G itself


def test_ema_weights_follow_the_documented_decay_in_a_train_step():
    gen = LayeredGenerator(
        8, z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=4, use_noise=False
    )
    disc = StyleGAN2Discriminator(8, channel_base=32, channel_max=4)
    model = _compile(
        ILSGAN(gen, disc, ada=False, r1_interval=0, ema_kimg=0.008, ema_rampup=None)
    )  # beta 0.5**0.5
    g, e = model.generator, model.generator_ema
    assert [v.name for v in g.weights] == [v.name for v in e.weights]
    for v in e.trainable_variables:  # an EMA copy that differs from G, set by hand
        v.assign(tf.fill(v.shape, 0.25))
    before = [v.numpy().copy() for v in e.trainable_variables]
    real = np.random.rand(4, 8, 8, 3).astype(np.float32)
    model.train_step(real)
    beta = 0.5 ** (4 / 8.0)
    for v_e, v_g, old in zip(e.trainable_variables, g.trainable_variables, before):
        np.testing.assert_allclose(
            v_e.numpy(), v_g.numpy() + (old - v_g.numpy()) * beta, rtol=1e-5, atol=1e-6
        )
    assert model.sampling_generator is e and "generator_ema" in model.checkpoint_items()
    # generate() samples with the EMA copy
    z = tf.random.normal([2, 4])
    np.testing.assert_allclose(model.generate(z)["mask"].numpy(), e(z)["mask"].numpy(), rtol=1e-6)
    assert not np.allclose(model.generate(z)["mask"].numpy(), g(z)["mask"].numpy())


def test_ema_off_samples_with_the_trained_generator():
    model = _tiny_model(ada=False)
    assert model.generator_ema is None and model.sampling_generator is model.generator


def test_per_layer_latents_index_the_layers():
    gen = LayeredGenerator(
        8, z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=4, use_noise=False
    )
    z = tf.random.normal([3, 4])
    ws = gen.mapping(z)
    assert (
        ws["fg"].shape == (3, gen.G_f.num_ws, 4) and gen.G_f.num_ws == 4
    )  # 4x4: 1 conv, 8x8: 2, + the last toRGB
    same = gen.synthesis(ws)
    direct = gen(z)
    for k in direct:
        np.testing.assert_allclose(same[k].numpy(), direct[k].numpy(), rtol=1e-5, atol=1e-6)
    # every per-layer latent is used: changing any one of them changes the image
    for i in range(gen.G_b.num_ws):
        w2 = ws["bg"].numpy().copy()
        w2[:, i] += 1.0
        out = gen.synthesis({"fg": ws["fg"], "bg": tf.constant(w2)})
        assert not np.allclose(out["background"].numpy(), same["background"].numpy()), i
        np.testing.assert_array_equal(out["foreground"].numpy(), same["foreground"].numpy())


def test_style_mixing_switches_the_latent_at_the_crossover_layer():
    from indep_seg.models.ilsgan import mix_at_cutoff

    a = np.zeros((2, 5, 3), np.float32)
    b = np.ones((2, 5, 3), np.float32)
    got = mix_at_cutoff(a, b, 2).numpy()
    assert (got[:, :2] == 0).all() and (got[:, 2:] == 1).all()
    assert (mix_at_cutoff(a, b, 5).numpy() == 0).all()  # cutoff = L: no mixing
    model = _tiny_model(ada=False, style_mixing_prob=1.0)
    z, z2 = tf.random.normal([3, 4]), tf.random.normal([3, 4])
    w1, w2 = model.generator.mapping(z), model.generator.mapping(z2)
    cutoffs = {"fg": set(), "bg": set()}
    for _ in range(40):
        mixed = model.mixed_latents(z, z2)
        for key in ("fg", "bg"):
            m = mixed[key].numpy()
            from_1 = np.all(np.isclose(m, w1[key].numpy()), axis=(0, 2))
            from_2 = np.all(np.isclose(m, w2[key].numpy()), axis=(0, 2))
            cut = int(np.argmax(~from_1))
            assert from_1[:cut].all() and from_2[cut:].all() and 1 <= cut <= m.shape[1] - 1
            cutoffs[key].add(cut)
    assert (
        cutoffs["fg"] == cutoffs["bg"] == set(range(1, 4))
    )  # U{1 .. num_ws - 1}, drawn per generator
    off = _tiny_model(ada=False, style_mixing_prob=0.0)
    never, own = off.mixed_latents(z, z2), off.generator.mapping(z)
    for key in ("fg", "bg"):
        np.testing.assert_array_equal(never[key].numpy(), own[key].numpy())


def test_path_length_penalty_against_a_hand_computed_linear_synthesis():
    from indep_seg.models.ilsgan import path_length_penalty

    rng = np.random.default_rng(3)
    n, L, d, h = 4, 3, 5, 2
    A = rng.standard_normal((d, h * h * 3)).astype(np.float32)
    ws = {
        "fg": tf.constant(rng.standard_normal((n, L, d)).astype(np.float32)),
        "bg": tf.constant(rng.standard_normal((n, 2, d)).astype(np.float32)),
    }

    def synthesis(
        w,
    ):  # image = sum over layers of w_l A (fg) + 2 * the same of bg: J^T y = A y per layer
        x = tf.reduce_sum(w["fg"], axis=1) @ A + 2.0 * tf.reduce_sum(w["bg"], axis=1) @ A
        return tf.reshape(x, [-1, h, h, 3])

    noise = rng.standard_normal((n, h, h, 3)).astype(np.float32) / h
    pen, lengths, new_mean = path_length_penalty(synthesis, ws, noise, tf.constant(0.7), 0.01)
    g = A @ noise.reshape(n, -1).T  # [d, n]
    sq = np.sum(g.T**2, axis=1)  # |A y|^2 per example; bg layers: 4 |A y|^2
    want_len = np.sqrt((3 * sq + 2 * 4 * sq) / 5.0)
    np.testing.assert_allclose(lengths.numpy(), want_len, rtol=1e-5)
    want_mean = 0.7 + 0.01 * (want_len.mean() - 0.7)
    np.testing.assert_allclose(float(new_mean), want_mean, rtol=1e-6)
    np.testing.assert_allclose(pen.numpy(), (want_len - want_mean) ** 2, rtol=1e-4)


def test_path_length_regularisation_is_lazy_in_training():
    model = _tiny_model(ada=False, r1_interval=0, pl_weight=2.0, pl_interval=2)
    real = np.random.rand(4, 8, 8, 3).astype(np.float32)
    vals = [_step_values(model, real) for _ in range(3)]
    assert vals[0]["pl_penalty"] > 0 and vals[1]["pl_penalty"] == 0.0 and vals[2]["pl_penalty"] > 0
    assert float(model.pl_mean.numpy()) > 0 and "pl_mean" in model.checkpoint_items()
