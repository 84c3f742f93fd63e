"""HocDiscriminator (Dai et al. 2019, Table 2): shapes, heads, spectral normalisation."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.hoc_discriminator import HocDiscriminator


def test_paper_preset_table_2():
    d = HocDiscriminator.paper()
    y = d(tf.random.uniform((2, 64, 64, 3)), training=True)
    assert y.shape == (2, 1)
    convs = [c.layer for c in d.convs]
    assert [c.filters for c in convs] == [64, 128, 256, 512, 1024]
    assert [c.strides for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert d.head == "conv1x1" and d.out.layer.kernel_size == (1, 1)


def test_dense_head_and_config():
    d = HocDiscriminator(widths=(8, 16), final_width=0, head="dense")
    assert d(tf.zeros((3, 16, 16, 3)), training=True).shape == (3, 1)
    assert HocDiscriminator.from_config(d.get_config()).head == "dense"
    with pytest.raises(ValueError, match="head"):
        HocDiscriminator(head="mean")


def test_spectral_norm_applied_in_training_mode():
    d = HocDiscriminator(widths=(8,), final_width=0, head="dense")
    x = tf.random.uniform((1, 8, 8, 3))
    for _ in range(20):  # power iterations converge while training=True
        d(x, training=True)
    sn = d.convs[0]
    w = sn.layer.kernel.numpy().reshape(-1, 8)
    assert np.linalg.svd(w, compute_uv=False)[0] == pytest.approx(1.0, rel=0.05)
