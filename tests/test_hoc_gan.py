"""HocGAN (Dai et al. 2019, application 2): layout keeps shapes, composition, one train step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.gallery import tile_rows
from indep_seg.models.hoc_gan import HocGAN
from indep_seg.networks.hoc_discriminator import HocDiscriminator
from indep_seg.networks.rgba_generator import InfoGANQHead, RGBAGenerator

R = 16


class BlobGenerator(keras.Model):
    """Always the same RGBA instance: a 3x4 opaque block of colour (0.2, 0.6, 1.0) at rows 6-8, cols
    5-8."""

    def __init__(self, latent_dim=2, **kwargs):
        super().__init__(**kwargs)
        self.resolution = R
        self.latent_dim = latent_dim
        rgba = np.zeros((R, R, 4), np.float32)
        rgba[6:9, 5:9] = [0.2, 0.6, 1.0, 1.0]
        self.rgba = tf.constant(rgba)

    def call(self, z, training=False):
        return tf.tile(self.rgba[None], [tf.shape(z)[0], 1, 1, 1]) + 0.0 * tf.reduce_sum(z)


def _shift(img, dx, dy):
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy, x - dx
            if 0 <= sy < h and 0 <= sx < w:
                out[y, x] = img[sy, sx]
    return out


def test_layout_keeps_shapes_and_composition_is_eq5():
    gan = HocGAN(
        BlobGenerator(),
        HocDiscriminator(widths=(4,), final_width=0, head="dense"),
        None,
        latent_dim=2,
        num_layers=3,
        padding=3,
        a=0.05,
        info_weight=0.0,
        seed=3,
    )
    out = gan.generate(4, training=False, return_all=True)
    assert out["layers"].shape == (4, 3, R, R, 4) and out["warped"].shape == (4, 3, R, R, 4)
    layers, warped, shifts = (np.asarray(out[k]) for k in ("layers", "warped", "shifts"))
    assert np.abs(shifts).max() <= 3
    for b in range(4):
        for i in range(3):
            dx, dy = shifts[b, i]
            np.testing.assert_array_equal(warped[b, i], _shift(layers[b, i], dx, dy))
            # padding 3 keeps the whole block inside: same shape, same area (12 px)
            assert warped[b, i, ..., 3].sum() == pytest.approx(12.0)
    # eq. (5) over a black x_0: the top layer's colour wins where it is opaque
    comp = np.asarray(out["composite"])
    top = warped[:, -1, ..., 3] > 0.5
    np.testing.assert_allclose(comp[top], np.tile([0.2, 0.6, 1.0], (top.sum(), 1)), atol=1e-6)
    assert np.all(comp[(warped[..., 3].max(axis=1) == 0)] == 0)


def _tiny_gan(info_weight=50.0, grayscale=False):
    g = RGBAGenerator(
        latent_dim=2,
        resolution=R,
        initial_size=4,
        widths=(8, 8, 4),
        upsample="upsample",
        alpha_bias=-2.0,
    )
    d = HocDiscriminator(widths=(8, 16), final_width=0, head="dense")
    q = InfoGANQHead(2, widths=(4, 8)) if info_weight else None
    gan = HocGAN(
        g,
        d,
        q,
        latent_dim=2,
        num_layers=2,
        padding=6,
        a=0.1,
        info_weight=info_weight,
        binarization_weight=1.0,
        grayscale=grayscale,
        seed=0,
    )
    gan.build_networks(R)
    gan.compile()
    return gan


def test_train_step_updates_both_networks_and_logs_finite_values():
    gan = _tiny_gan()
    batch = {"real": tf.random.uniform((4, R, R, 3)), "background": tf.zeros((4, R, R, 3))}
    g0 = [v.numpy().copy() for v in gan.generator.trainable_variables]
    d0 = [v.numpy().copy() for v in gan.discriminator.trainable_variables]
    logs = gan.train_step(batch)
    for k in ("d_loss", "g_loss", "g_adv", "area", "info", "binarization", "mask_mean"):
        assert np.all(np.isfinite(np.asarray(logs[k]))), k
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(g0, gan.generator.trainable_variables))
    assert any(
        not np.allclose(a, v.numpy()) for a, v in zip(d0, gan.discriminator.trainable_variables)
    )
    items = gan.checkpoint_items()
    assert {"generator", "discriminator", "q_head", "d_optimizer", "g_optimizer"} <= set(items)
    grid = gan.image_grid(batch)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3


def test_q_head_required_with_beta():
    with pytest.raises(ValueError, match="q_head"):
        HocGAN(
            BlobGenerator(), HocDiscriminator(widths=(4,), final_width=0), None, info_weight=50.0
        )


def test_tile_rows_enlarges_small_cells():
    g = tile_rows([np.zeros((3, 16, 16, 3)), np.ones((3, 16, 16, 3))], gap=2, min_cell=32)
    assert g.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    assert g[2 + 34 + 5, 2 + 5, 0] == 255 and g[2 + 5, 2 + 5, 0] == 0


def test_grayscale_layers_are_luminance_and_colour_layers_are_not():
    bg = tf.fill((3, R, R, 3), 0.2)
    colour = _tiny_gan().generate(3, background=bg, return_all=True)
    gray = _tiny_gan(grayscale=True).generate(3, background=bg, return_all=True)
    rgb = colour["layers"][..., :3]
    assert float(tf.reduce_max(tf.abs(rgb - tf.reduce_mean(rgb, -1, keepdims=True)))) > 1e-3
    for key in ("layers", "warped"):
        x = gray[key][..., :3]
        np.testing.assert_allclose(x[..., 0], x[..., 1], atol=1e-6)
        np.testing.assert_allclose(x[..., 0], x[..., 2], atol=1e-6)
    c = gray["composite"]
    np.testing.assert_allclose(c[..., 0], c[..., 2], atol=1e-6)
