"""Instance providers of Dai et al. 2019, Fig. 4."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.providers import GeneratorProvider, NaturalPatchSampler, SegmentationNetworkProvider


def _tiny_segnet():
    inp = keras.Input([8, 8, 3])
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    return keras.Model(inp, out)


def _tiny_generator(latent_dim, rank4_input=False, size=4):
    inp = keras.Input([1, 1, latent_dim] if rank4_input else [latent_dim])
    h = keras.layers.Flatten()(inp) if rank4_input else inp
    h = keras.layers.Dense(size * size * 4, activation="sigmoid")(h)
    return keras.Model(inp, keras.layers.Reshape([size, size, 4])(h))


def test_segmentation_network_provider_concatenates_image_and_predicted_mask():
    net = _tiny_segnet()
    provider = SegmentationNetworkProvider(net)
    images = np.random.default_rng(0).uniform(size=[2, 8, 8, 3]).astype(np.float32)
    rgba = provider(images, training=False).numpy()
    assert rgba.shape == (2, 8, 8, 4)
    np.testing.assert_array_equal(rgba[..., :3], images)
    np.testing.assert_allclose(rgba[..., 3:], net(images).numpy(), atol=1e-6)
    clone = SegmentationNetworkProvider.from_config(provider.get_config())
    clone(images)
    clone.segmentation_net.set_weights(net.get_weights())
    np.testing.assert_allclose(clone(images).numpy(), rgba, atol=1e-6)


def test_segmentation_network_provider_gradients_reach_the_network():
    net = _tiny_segnet()
    provider = SegmentationNetworkProvider(net)
    images = tf.random.uniform([2, 8, 8, 3], seed=1)
    with tf.GradientTape() as tape:
        alpha = provider(images, training=True)[..., 3]
        loss = tf.reduce_mean(alpha)
    grads = tape.gradient(loss, net.trainable_weights)
    assert all(g is not None for g in grads) and float(tf.reduce_sum(tf.abs(grads[0]))) > 0


def test_generator_provider_draws_independent_z_per_layer():
    gen = _tiny_generator(3)
    provider = GeneratorProvider(gen, latent_dim=3, num_layers=5, seed=0)
    layers, z = provider.generate(4)
    layers, z = layers.numpy(), z.numpy()
    assert layers.shape == (4, 5, 4, 4, 4) and z.shape == (4, 5, 3)
    assert z.min() >= -1 and z.max() <= 1
    assert len({tuple(v) for v in z.reshape(-1, 3).round(6)}) == 20  # every layer its own z
    for i in range(5):  # the same shared generator for every layer
        np.testing.assert_allclose(layers[:, i], gen(z[:, i]).numpy(), atol=1e-6)
    _, z2 = provider.generate(4)
    assert not np.allclose(z, z2.numpy())  # a new draw each call
    # same seed -> same stream
    _, z_again = GeneratorProvider(gen, latent_dim=3, num_layers=5, seed=0).generate(4)
    np.testing.assert_allclose(z, z_again.numpy())


def test_generator_provider_normal_latents_and_rank4_generator_input():
    gen = _tiny_generator(6, rank4_input=True)
    provider = GeneratorProvider(
        gen, latent_dim=6, num_layers=2, latent_distribution="normal", seed=1
    )
    layers, z = provider.generate(64)
    assert layers.shape == (64, 2, 4, 4, 4)
    zz = z.numpy()
    assert zz.min() < -1.5 and zz.max() > 1.5  # not U(-1, 1)
    assert abs(zz.mean()) < 0.15 and abs(zz.std() - 1) < 0.15
    single = provider(z[:, 0]).numpy()  # [B, latent_dim] -> [B, H, W, 4]
    np.testing.assert_allclose(single, layers.numpy()[:, 0], atol=1e-6)


def test_generator_provider_sigmoid_option_and_config():
    inp = keras.Input([2])
    gen = keras.Model(inp, keras.layers.Reshape([1, 1, 4])(keras.layers.Dense(4)(inp)))
    provider = GeneratorProvider(gen, latent_dim=2, output_activation="sigmoid")
    z = np.zeros([1, 2], np.float32)
    np.testing.assert_allclose(provider(z).numpy(), tf.sigmoid(gen(z)).numpy(), atol=1e-6)
    cfg = provider.get_config()
    assert cfg["latent_dim"] == 2 and cfg["output_activation"] == "sigmoid"
    assert isinstance(GeneratorProvider.from_config(cfg), GeneratorProvider)


def test_natural_patch_sampler_returns_true_crops_with_opaque_alpha():
    # Encode (image, row, column) in the pixel values so that every crop can be traced back.
    n, h, w = 3, 10, 12
    ii, yy, xx = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    bank = np.stack([(ii + 1) / 10, (yy + 1) / 20, (xx + 1) / 20], axis=-1).astype(np.float32)
    sampler = NaturalPatchSampler(bank, patch_size=(4, 5), seed=0)
    patches = sampler(200).numpy()
    assert patches.shape == (200, 4, 5, 4)
    np.testing.assert_array_equal(patches[..., 3], 1.0)
    images_seen, offsets_seen = set(), set()
    for p in patches:
        i = int(round(p[0, 0, 0] * 10)) - 1
        y0 = int(round(p[0, 0, 1] * 20)) - 1
        x0 = int(round(p[0, 0, 2] * 20)) - 1
        np.testing.assert_array_equal(p[..., :3], bank[i, y0 : y0 + 4, x0 : x0 + 5])
        images_seen.add(i)
        offsets_seen.add((y0, x0))
    assert images_seen == {0, 1, 2}
    assert len(offsets_seen) > 20  # offsets cover the valid range (7 x 8 possibilities)
    assert max(o[0] for o in offsets_seen) == h - 4 and max(o[1] for o in offsets_seen) == w - 5


def test_natural_patch_sampler_list_of_sizes_uint8_and_resize():
    rng = np.random.default_rng(0)
    small = rng.integers(1, 256, size=[6, 6, 3], dtype=np.uint8)  # no zeros: padding would show
    large = rng.integers(1, 256, size=[20, 9, 3], dtype=np.uint8)
    sampler = NaturalPatchSampler([small, large], patch_size=5, seed=2)
    p = sampler(300).numpy()
    assert p.min() > 0 and p.max() <= 1.0  # never reads the zero padding of the smaller image
    sampler2 = NaturalPatchSampler([small, large], patch_size=6, seed=2, output_size=3)
    assert sampler2.sample(2).shape == (2, 3, 3, 4)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"images\[1\]: expected at least patch_size 8x8"):
        NaturalPatchSampler([np.zeros([9, 9, 3], np.float32), np.zeros([7, 9, 3], np.float32)], 8)
    with pytest.raises(ValueError, match=r"images\[0\]: expected values in \[0, 1\], got max 2"):
        NaturalPatchSampler(np.full([1, 9, 9, 3], 2.0, np.float32), 8)
    with pytest.raises(TypeError, match="patch_size: expected an int or"):
        NaturalPatchSampler(np.zeros([1, 9, 9, 3], np.float32), "big")
    with pytest.raises(ValueError, match="latent_distribution: expected one of"):
        GeneratorProvider(_tiny_generator(2), latent_dim=2, latent_distribution="cauchy")
    with pytest.raises(ValueError, match="z: expected latent_dim = 2"):
        GeneratorProvider(_tiny_generator(2), latent_dim=2)(np.zeros([1, 3], np.float32))
    with pytest.raises(ValueError, match="images: expected"):
        SegmentationNetworkProvider(_tiny_segnet())(np.zeros([8, 8, 3], np.float32))
    with pytest.raises(TypeError, match="segmentation_net: expected a Keras model"):
        SegmentationNetworkProvider(3)
