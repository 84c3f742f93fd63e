"""StyleGAN2 layers and networks (indep_seg/networks/stylegan2*.py) on tiny configs."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.stylegan2 import (
    LayeredGenerator,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    channels_per_resolution,
)
from indep_seg.networks.stylegan2_layers import (
    EqualizedDense,
    MappingNetwork,
    MinibatchStdDev,
    ModulatedConv2D,
    NoiseInjection,
    modulated_conv_reference,
)


def _modconv(demodulate, k=3):
    layer = ModulatedConv2D(5, k, demodulate=demodulate)
    x = tf.random.normal([3, 6, 6, 4])
    w = tf.random.normal([3, 7])
    y = layer([x, w])
    s = layer.styles(w)
    ref = modulated_conv_reference(x, s, layer.kernel * layer.weight_gain, demodulate)
    return layer, x, w, y, ref


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_per_sample_weights(demodulate):
    """StyleGAN2 eq. 1-3 with explicit per-sample weights == the fused scale-conv-scale form."""
    _, _, _, y, ref = _modconv(demodulate)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_demodulation_is_invariant_to_style_scale():
    """Eq. 3 removes the style's overall scale: s and 3 s give the same output."""
    layer = ModulatedConv2D(4, 3, demodulate=True)
    x = tf.random.normal([2, 5, 5, 3])
    w = tf.random.normal([2, 6])
    layer([x, w])
    s = layer.styles(w)
    k = layer.kernel * layer.weight_gain
    a = modulated_conv_reference(x, s, k, True)
    b = modulated_conv_reference(x, 3.0 * s, k, True)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    # and the demodulated per-sample weights have unit L2 norm per output channel
    w1 = k * s[0][None, None, :, None]
    w2 = w1 / tf.sqrt(tf.reduce_sum(w1**2, axis=[0, 1, 2], keepdims=True) + 1e-8)
    np.testing.assert_allclose(tf.reduce_sum(w2**2, axis=[0, 1, 2]).numpy(), 1.0, rtol=1e-5)


def test_modulated_conv_up_doubles_size_and_config():
    layer = ModulatedConv2D(2, 3, up=True)
    y = layer([tf.zeros([1, 4, 4, 3]), tf.zeros([1, 5])])
    assert y.shape == (1, 8, 8, 2)
    cfg = layer.get_config()
    assert cfg["up"] and cfg["filters"] == 2 and ModulatedConv2D.from_config(cfg).kernel_size == 3


def test_equalized_dense_runtime_scale():
    """Equalised lr: y = x @ (W * lr_mul / sqrt(fan_in)) + b * lr_mul."""
    layer = EqualizedDense(3, lr_multiplier=0.01, bias_init=1.0)
    x = tf.random.normal([2, 4])
    y = layer(x)
    ref = x.numpy() @ (layer.kernel.numpy() * 0.01 / 2.0) + layer.bias.numpy() * 0.01
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy() * 0.01, 1.0)  # bias_init is the effective bias


def test_mapping_network_normalises_z():
    m = MappingNetwork(w_dim=6, num_layers=2)
    z = tf.random.normal([3, 5])
    np.testing.assert_allclose(m(z).numpy(), m(10.0 * z).numpy(), rtol=1e-4, atol=1e-5)


def test_noise_injection_starts_at_zero_strength():
    layer = NoiseInjection()
    x = tf.ones([2, 3, 3, 4])
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    layer.strength.assign(2.0)
    n = tf.random.normal([2, 3, 3, 1])
    np.testing.assert_allclose(layer(x, noise=n).numpy(), (x + 2.0 * n).numpy())


def test_minibatch_stddev_matches_numpy():
    x = np.random.randn(8, 4, 4, 6).astype(np.float32)
    y = MinibatchStdDev(group_size=4)(tf.constant(x)).numpy()
    assert y.shape == (8, 4, 4, 7)
    np.testing.assert_array_equal(y[..., :6], x)
    g = x.reshape(4, 2, 4, 4, 6)  # sample i = group_index * 2 + m
    std = np.sqrt(((g - g.mean(0)) ** 2).mean(0) + 1e-8).mean(axis=(1, 2, 3))  # [2]
    for i in range(8):
        np.testing.assert_allclose(y[i, ..., 6], std[i % 2], rtol=1e-5)


def test_channels_per_resolution_rule_and_errors():
    assert channels_per_resolution(64, 32768, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512}
    assert channels_per_resolution(32, 1024, 64) == {4: 64, 8: 64, 16: 64, 32: 32}
    with pytest.raises(ValueError, match="resolution"):
        channels_per_resolution(48, 1024, 64)


def test_generator_and_discriminator_shapes():
    g = StyleGAN2Generator(
        16, z_dim=8, w_dim=8, out_channels=4, mapping_layers=1, channel_base=64, channel_max=8
    )
    assert g(tf.random.normal([2, 8])).shape == (2, 16, 16, 4)
    d = StyleGAN2Discriminator(16, channel_base=64, channel_max=8)
    assert d(tf.random.uniform([3, 16, 16, 3])).shape == (3, 1)  # 3 not divisible by group 4
    assert d(tf.random.uniform([8, 16, 16, 3])).shape == (8, 1)


def test_layered_generator_layers_and_separate_mappings():
    lg = LayeredGenerator(8, z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=8)
    out = lg(tf.random.normal([2, 4]))
    assert out["foreground"].shape == (2, 8, 8, 3)
    assert out["background"].shape == (2, 8, 8, 3)
    assert out["mask"].shape == (2, 8, 8, 1)
    m = out["mask"].numpy()
    assert m.min() > 0.0 and m.max() < 1.0  # sigmoid
    # each generator has its own mapping network (different variables)
    fv = {id(v) for v in lg.G_f.mapping.weights}
    bv = {id(v) for v in lg.G_b.mapping.weights}
    assert fv and bv and not (fv & bv)
    z = tf.random.normal([1, 4])
    with tf.GradientTape() as tape:
        mask_sum = tf.reduce_sum(lg(z)["mask"])
    grads = tape.gradient(mask_sum, lg.G_b.trainable_variables)
    assert all(gr is None for gr in grads)  # G_b has no influence on the mask


def test_mask_center_prior_option():
    lg = LayeredGenerator(
        16,
        z_dim=4,
        w_dim=4,
        mapping_layers=1,
        channel_base=32,
        channel_max=4,
        mask_center_prior=2.0,
    )
    prior = lg.mask_prior.numpy()[0, ..., 0]
    assert prior[8, 8] > 1.9 and prior[0, 0] < -5  # centre vs corner
    assert abs((prior > 0).mean() - 0.30) < 0.05  # a centred disc of ~30 % of the image
    plain = LayeredGenerator(16, z_dim=4, w_dim=4, mapping_layers=1, channel_base=32, channel_max=4)
    assert not plain.mask_prior.numpy().any()  # off by default (the paper)
    assert lg.get_config()["mask_center_prior"] == 2.0


def test_checkpoints_hold_every_variable(tmp_path):
    """Keras 3 layers kept in Python lists are invisible to tf.train.Checkpoint unless tracked by
    name
    (`track_for_checkpoint`): a checkpoint must hold as many variables as the model has weights."""
    g = LayeredGenerator(8, z_dim=4, w_dim=4, mapping_layers=2, channel_base=32, channel_max=4)
    d = StyleGAN2Discriminator(8, channel_base=32, channel_max=4)
    for name, model in (("g", g), ("d", d)):
        path = tf.train.Checkpoint(model=model).write(str(tmp_path / name / "ckpt"))
        saved = [n for n, _ in tf.train.list_variables(path) if n.endswith("VARIABLE_VALUE")]
        assert len(saved) == len(model.weights)
    g2 = LayeredGenerator(8, z_dim=4, w_dim=4, mapping_layers=2, channel_base=32, channel_max=4)
    tf.train.Checkpoint(model=g2).read(str(tmp_path / "g" / "ckpt")).assert_consumed()
    for a, b in zip(g.weights, g2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
