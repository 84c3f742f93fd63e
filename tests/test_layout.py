"""Layout: ST warp (Dai eq. 4), pad + random crop (Dai, DSF-HOC), shift perturbation T (ILSGAN eq.
3)."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.layout import (
    integer_translate,
    pad_and_random_crop,
    perturbed_composite,
    random_shift_perturbation,
    spatial_transformer,
)


def _np_shift(img, dx, dy):
    """Independent reference: out[y, x] = img[y - dy, x - dx], zero outside."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy, x - dx
            if 0 <= sy < h and 0 <= sx < w:
                out[y, x] = img[sy, sx]
    return out


@pytest.fixture
def rgba():
    return np.random.default_rng(0).uniform(size=[3, 7, 9, 4]).astype(np.float32)


def test_zero_parameters_are_the_identity(rgba):
    np.testing.assert_array_equal(
        spatial_transformer(rgba, np.zeros([3, 6], np.float32)).numpy(), rgba
    )
    stack = np.stack([rgba, rgba[::-1]], axis=1)  # [3, 2, 7, 9, 4]
    np.testing.assert_array_equal(
        spatial_transformer(stack, np.zeros([3, 2, 2, 3], np.float32)).numpy(), stack
    )
    ident = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), [3, 1])
    np.testing.assert_array_equal(spatial_transformer(rgba, ident, absolute=True).numpy(), rgba)


def test_integer_translation_is_an_exact_shift_per_example_and_per_layer(rgba):
    shifts = [(2, 1), (-3, 0), (0, -2)]
    theta = np.array([[0, 0, dx, 0, 0, dy] for dx, dy in shifts], np.float32)
    out = spatial_transformer(rgba, theta).numpy()
    for n, (dx, dy) in enumerate(shifts):
        np.testing.assert_allclose(out[n], _np_shift(rgba[n], dx, dy), atol=1e-6)
    # RGB and alpha moved together: the warped alpha still sits under the warped colour.
    stack = np.stack([rgba, rgba], axis=1)
    theta5 = np.stack([theta, -theta], axis=1)  # layer 1 moves the opposite way
    out5 = spatial_transformer(stack, theta5).numpy()
    for n, (dx, dy) in enumerate(shifts):
        np.testing.assert_allclose(out5[n, 0], _np_shift(rgba[n], dx, dy), atol=1e-6)
        np.testing.assert_allclose(out5[n, 1], _np_shift(rgba[n], -dx, -dy), atol=1e-6)
    # translation_units="fraction": 2/9 of the width = 2 px
    frac = spatial_transformer(
        rgba[:1], np.array([[0, 0, 2 / 9, 0, 0, 0]], np.float32), translation_units="fraction"
    ).numpy()
    np.testing.assert_allclose(frac[0], _np_shift(rgba[0], 2, 0), atol=1e-5)


def test_rotation_about_the_centre_matches_rot90():
    img = np.random.default_rng(1).uniform(size=[1, 5, 5, 4]).astype(np.float32)
    a = np.pi / 2  # +90 degrees with y pointing down: clockwise on screen
    delta = np.array([[np.cos(a) - 1, -np.sin(a), 0, np.sin(a), np.cos(a) - 1, 0]], np.float32)
    out = spatial_transformer(img, delta).numpy()
    np.testing.assert_allclose(out, np.rot90(img, k=-1, axes=(1, 2)), atol=1e-5)


def test_scaling_about_the_centre_by_hand():
    # 3x3 image, scale 2 about the centre pixel (1, 1): output pixel (0, 0) samples
    # input (0.5, 0.5) = mean of the 4 top-left pixels (bilinear).
    img = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1) / 10
    out = spatial_transformer(img, np.array([[1, 0, 0, 0, 1, 0]], np.float32)).numpy()
    np.testing.assert_allclose(out[0, 0, 0, 0], (0 + 0.1 + 0.3 + 0.4) / 4, atol=1e-6)
    np.testing.assert_allclose(out[0, 1, 1, 0], 0.4, atol=1e-6)


def test_warp_gradient_wrt_layer_matches_numerical_jacobian():
    rng = np.random.default_rng(2)
    img = np.pad(rng.uniform(size=[1, 4, 4, 2]), ((0, 0), (2, 2), (2, 2), (0, 0)))
    theta = tf.constant([[0, 0, 0.3, 0, 0, -0.6]], tf.float32)  # sub-pixel translation
    fn = lambda t: tf.cast(spatial_transformer(tf.cast(t, tf.float32), theta), tf.float64)  # noqa: E731
    analytic, numeric = tf.test.compute_gradient(fn, [tf.constant(img)], delta=1e-2)
    np.testing.assert_allclose(analytic[0], numeric[0], atol=1e-4)
    assert np.abs(analytic[0]).sum() > 1.0


def test_integer_translate_gradient_is_exact():
    x = tf.constant(np.random.default_rng(3).uniform(size=[2, 4, 5, 1]), tf.float32)
    shifts = tf.constant([[1, 2], [-2, 0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = integer_translate(x, shifts)
        loss = tf.reduce_sum(y * tf.reshape(tf.range(40, dtype=tf.float32), [2, 4, 5, 1]))
    g = tape.gradient(loss, x).numpy()
    weights = np.arange(40, dtype=np.float32).reshape(2, 4, 5, 1)
    # d loss / d x[y, x] = weight at the destination (y + dy, x + dx) or 0 if it left the image
    for n, (dx, dy) in enumerate([(1, 2), (-2, 0)]):
        np.testing.assert_allclose(g[n], _np_shift(weights[n], -dx, -dy), atol=1e-6)


def test_pad_and_random_crop_equals_numpy_pad_then_crop():
    rng = np.random.default_rng(4)
    layers = rng.uniform(size=[4, 3, 6, 6, 4]).astype(np.float32)
    pad = 3
    out, shifts = pad_and_random_crop(layers, pad, seed=5, return_shifts=True)
    out, shifts = out.numpy(), shifts.numpy()
    assert out.shape == layers.shape and shifts.shape == (4, 3, 2)
    assert np.abs(shifts).max() <= pad
    for b in range(4):
        for i in range(3):
            dx, dy = shifts[b, i]
            padded = np.pad(layers[b, i], ((pad, pad), (pad, pad), (0, 0)))
            oy, ox = pad - dy, pad - dx  # crop offset in the padded layer
            np.testing.assert_array_equal(out[b, i], padded[oy : oy + 6, ox : ox + 6])
    # independent per layer: not all layers of an example share one shift
    assert len({tuple(s) for s in shifts.reshape(-1, 2)}) > 3
    # same seed, same draw; every offset of [-pad, pad] occurs over many draws
    np.testing.assert_array_equal(pad_and_random_crop(layers, pad, seed=5).numpy(), out)
    _, many = pad_and_random_crop(
        np.zeros([400, 4, 4, 1], np.float32), 2, seed=7, return_shifts=True
    )
    assert set(np.unique(many.numpy())) == {-2, -1, 0, 1, 2}
    # pad = 0 keeps the content; 4-D input works
    np.testing.assert_array_equal(
        pad_and_random_crop(layers[:, 0], 0, seed=1).numpy(), layers[:, 0]
    )


def test_shift_perturbation_moves_fg_and_mask_together():
    rng = np.random.default_rng(6)
    fg = rng.uniform(size=[16, 16, 16, 3]).astype(np.float32)
    mask = (rng.uniform(size=[16, 16, 16, 1]) > 0.5).astype(np.float32)
    fg_t, m_t, shifts = random_shift_perturbation(
        fg, mask, max_fraction=0.125, seed=3, return_shifts=True
    )
    shifts = shifts.numpy()
    assert np.abs(shifts).max() <= 2  # round(0.125 * 16)
    assert len({tuple(s) for s in shifts}) > 1  # per-example shifts
    for n, (dx, dy) in enumerate(shifts):
        np.testing.assert_array_equal(fg_t.numpy()[n], _np_shift(fg[n], dx, dy))
        np.testing.assert_array_equal(m_t.numpy()[n], _np_shift(mask[n], dx, dy))
    # explicit shifts
    f2, m2 = random_shift_perturbation(fg[:1], mask[:1], shifts=np.array([[1, -1]], np.int32))
    np.testing.assert_array_equal(m2.numpy()[0], _np_shift(mask[0], 1, -1))


def test_perturbed_composite_leaves_background_untouched():
    rng = np.random.default_rng(7)
    fg = rng.uniform(size=[8, 12, 12, 3]).astype(np.float32)
    bg = rng.uniform(size=[8, 12, 12, 3]).astype(np.float32)
    mask = np.zeros([8, 12, 12, 1], np.float32)
    mask[:, 3:9, 3:9] = 1.0
    x, fg_t, m_t = perturbed_composite(fg, mask, bg, max_fraction=0.25, seed=1, return_layers=True)
    x, fg_t, m_t = x.numpy(), fg_t.numpy(), m_t.numpy()
    outside = np.broadcast_to(m_t == 0, x.shape)
    inside = np.broadcast_to(m_t == 1, x.shape)
    np.testing.assert_array_equal(x[outside], bg[outside])  # b itself, never moved
    np.testing.assert_array_equal(x[inside], fg_t[inside])
    assert outside.any() and inside.any()


def test_works_in_tf_function_with_seed_generator():
    import keras

    gen = keras.random.SeedGenerator(0)

    @tf.function
    def step(f, m):
        return random_shift_perturbation(f, m, seed=gen, return_shifts=True)[2]

    f = tf.zeros([4, 8, 8, 3])
    m = tf.zeros([4, 8, 8, 1])
    s1, s2 = step(f, m).numpy(), step(f, m).numpy()
    assert not np.array_equal(s1, s2)  # the generator advances between calls


def test_bad_inputs_name_the_argument(rgba):
    with pytest.raises(ValueError, match=r"theta: expected \[B, 6\] or \[B, 2, 3\]"):
        spatial_transformer(rgba, np.zeros([3], np.float32))
    with pytest.raises(ValueError, match="theta: expected 6 affine parameters"):
        spatial_transformer(rgba, np.zeros([3, 5], np.float32))
    with pytest.raises(ValueError, match="theta: expected dimension 0 to match layers"):
        spatial_transformer(rgba, np.zeros([2, 6], np.float32))
    with pytest.raises(ValueError, match="theta: expected invertible"):
        spatial_transformer(rgba, np.tile([[-1, 0, 0, 0, 0, 0]], [3, 1]).astype(np.float32))
    with pytest.raises(ValueError, match="interpolation: expected one of"):
        spatial_transformer(rgba, np.zeros([3, 6], np.float32), interpolation="cubic")
    with pytest.raises(ValueError, match="layers: expected"):
        spatial_transformer(rgba[0], np.zeros([3, 6], np.float32))
    with pytest.raises(ValueError, match="pad: expected an integer >= 0"):
        pad_and_random_crop(rgba, -1)
    with pytest.raises(TypeError, match="pad: expected an integer"):
        pad_and_random_crop(rgba, 2.5)
    with pytest.raises(ValueError, match="max_fraction: expected a number in"):
        random_shift_perturbation(rgba[..., :3], rgba[..., 3:], max_fraction=2.0)
    with pytest.raises(ValueError, match="mask: expected 1 channel"):
        random_shift_perturbation(rgba[..., :3], rgba[..., 2:])
    with pytest.raises(TypeError, match="seed:"):
        pad_and_random_crop(rgba, 1, seed="abc")
    with pytest.raises(TypeError, match="shifts: expected an integer tensor"):
        integer_translate(rgba, np.zeros([3, 2], np.float32))
