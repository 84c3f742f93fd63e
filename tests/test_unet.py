"""UNet (Dai et al. 2019, Table 1): structure of the paper preset, options, serialisation."""

import keras
import numpy as np
import pytest

from indep_seg.networks.unet import UNet, unet_preset


def _layers(net, cls):
    return [layer for layer in net.layers if isinstance(layer, cls)]


def test_paper_preset_is_table_1():
    net = unet_preset("paper")
    assert net.input_shape == (None, 128, 128, 3) and net.output_shape == (None, 128, 128, 1)
    convs = _layers(net, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [64, 128, 256, 512, 512, 512]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 5 + [(2, 2)]
    assert all(c.strides == (2, 2) for c in convs)
    deconvs = _layers(net, keras.layers.Conv2DTranspose)
    assert [d.filters for d in deconvs] == [512, 512, 256, 128, 64, 1]
    assert [d.kernel_size for d in deconvs] == [(2, 2)] + [(4, 4)] * 5
    assert all(d.strides == (2, 2) for d in deconvs)
    # BN after every conv / deconv except the last; sigmoid mask; skip connections.
    assert len(_layers(net, keras.layers.BatchNormalization)) == 11
    # Keras' layers with the faster training kernels (fused_batch_norm / gemm_conv_transpose /
    # unfused_bias_conv)
    assert all(
        type(b).__name__ == "FusedBatchNormalization"
        for b in _layers(net, keras.layers.BatchNormalization)
    )
    assert all(type(d).__name__ == "GemmConv2DTranspose" for d in deconvs)
    assert all(type(c).__name__ == "UnfusedBiasConv2D" for c in _layers(net, keras.layers.Conv2D))
    assert len(_layers(net, keras.layers.Concatenate)) == 5
    assert net.get_layer("mask").activation is keras.activations.sigmoid


def test_bilinear_decoder_and_range():
    net = unet_preset("tiny", upsampling="bilinear", bn_momentum=0.8)
    assert not _layers(net, keras.layers.Conv2DTranspose)
    assert all(b.momentum == 0.8 for b in _layers(net, keras.layers.BatchNormalization))
    x = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype("float32")
    m = net(x, training=False).numpy()
    assert m.shape == (3, 16, 16, 1) and m.min() >= 0 and m.max() <= 1


def test_conv_bilinear_decoder_convolves_before_upsampling():
    net = unet_preset("tiny", upsampling="conv_bilinear")
    assert not _layers(net, keras.layers.Conv2DTranspose)
    # every decoder conv but the mask's runs at the lower size; the mask conv at full size
    assert net.get_layer("dec0_conv").output.shape[1] == 4
    assert net.get_layer("dec0_conv_up").output.shape[1] == 8
    assert net.get_layer("mask_conv").output.shape[1:] == (16, 16, 1)
    assert net(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 16, 16, 1)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="resolution"):
        UNet(resolution=20, encoder_filters=(4, 8, 8), encoder_kernels=(4, 4, 4))
    with pytest.raises(ValueError, match="encoder_kernels"):
        UNet(resolution=16, encoder_filters=(4, 8), encoder_kernels=(4,))
    with pytest.raises(ValueError, match="upsampling"):
        unet_preset("tiny", upsampling="nearest")
    with pytest.raises(ValueError, match="name"):
        unet_preset("huge")


def test_config_round_trip_and_functional_save(tmp_path):
    net = unet_preset("tiny")
    clone = UNet.from_config(net.get_config())
    assert clone.get_config() == net.get_config()
    x = np.random.default_rng(1).uniform(size=(2, 16, 16, 3)).astype("float32")
    path = tmp_path / "m.keras"
    net.as_functional().save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(x, training=False), net(x, training=False), atol=1e-6)


def test_extra_input_planes():
    """in_channels=4 (RGB and a box plane): the first convolution reads all four planes, and the
    fourth plane changes the mask; the option survives the config round trip."""
    net = unet_preset("tiny", in_channels=4)
    assert net.inputs[0].shape[-1] == 4
    assert net.get_layer("enc0_conv").kernel.shape[2] == 4
    x = np.random.default_rng(2).uniform(size=(2, 16, 16, 4)).astype("float32")
    y = x.copy()
    y[..., 3] = 1.0 - y[..., 3]
    assert not np.allclose(net(x, training=False), net(y, training=False))
    assert UNet.from_config(net.get_config()).inputs[0].shape[-1] == 4
    with pytest.raises(ValueError, match="in_channels"):
        unet_preset("tiny", in_channels=0)
