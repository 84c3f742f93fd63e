"""SN discriminator (Dai et al. 2019, Table 1): structure and active spectral normalisation."""

import keras
import numpy as np
import pytest

from indep_seg.networks.sn_discriminator import SNDiscriminator, sn_discriminator_preset


def _sn_layers(d):
    return [layer for layer in d.layers if isinstance(layer, keras.layers.SpectralNormalization)]


def test_paper_preset_is_table_1():
    d = sn_discriminator_preset("paper")
    sn = _sn_layers(d)
    inner = [wrapped.layer for wrapped in sn]
    assert [c.filters for c in inner] == [64, 128, 256, 512, 256, 1]
    assert [c.kernel_size for c in inner] == [(3, 3)] * 5 + [(1, 1)]
    assert [c.strides for c in inner] == [(2, 2)] * 4 + [(1, 1)] * 2
    assert d.input_shape == (None, 128, 128, 3) and d.output_shape == (None, 1)
    # every weight layer is spectrally normalised
    weighted = [
        layer
        for layer in d.layers
        if layer.weights and not isinstance(layer, keras.layers.SpectralNormalization)
    ]
    assert weighted == []


def test_spectral_norm_is_active_only_in_training():
    d = sn_discriminator_preset("tiny")
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    d(x, training=True)
    conv = _sn_layers(d)[1]
    conv.layer.kernel.assign(conv.layer.kernel.numpy() * 50.0)
    before = conv.layer.kernel.numpy().copy()
    d(x, training=False)
    np.testing.assert_array_equal(conv.layer.kernel.numpy(), before)  # inference: untouched
    for _ in range(30):  # power iteration converges
        d(x, training=True)
    w = conv.layer.kernel.numpy().reshape(-1, conv.layer.kernel.shape[-1])
    sigma = np.linalg.svd(w, compute_uv=False)[0]
    assert abs(sigma - 1.0) < 0.05, sigma
    assert np.linalg.svd(before.reshape(w.shape), compute_uv=False)[0] > 5


def test_dense_head_and_errors():
    d = SNDiscriminator(resolution=16, filters=(4, 8), last_filters=8, head="dense")
    assert isinstance(d.layers[-1], keras.layers.SpectralNormalization)
    assert isinstance(d.layers[-1].layer, keras.layers.Dense)
    assert d(np.zeros((3, 16, 16, 3), "float32"), training=True).shape == (3, 1)
    assert SNDiscriminator.from_config(d.get_config()).get_config() == d.get_config()
    with pytest.raises(ValueError, match="head"):
        SNDiscriminator(resolution=16, filters=(4,), head="mean")
    with pytest.raises(ValueError, match="filters"):
        SNDiscriminator(resolution=16, filters=())
