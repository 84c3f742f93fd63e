"""Every network's variables reach tf.train.Checkpoint (resume after a crash needs all of them).

With Keras 3 on TensorFlow, `tf.train.Checkpoint` does not follow layers kept in Python lists,
although `model.weights` lists them; BatchNorm statistics and untrained heads were silently
missing from hoc checkpoints before `track_for_checkpoint` was used.
"""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.networks.hoc_discriminator import HocDiscriminator
from indep_seg.networks.rgba_generator import InfoGANQHead, RGBAGenerator
from indep_seg.networks.sn_discriminator import SN_DISCRIMINATOR_PRESETS, SNDiscriminator
from indep_seg.networks.unet import UNET_PRESETS, UNet

CASES = {
    "rgba_generator": (
        lambda: RGBAGenerator(latent_dim=4, resolution=32, initial_size=8, widths=(16, 16, 8)),
        lambda: np.zeros((2, 4), "float32"),
    ),
    "infogan_q_head": (
        lambda: InfoGANQHead(latent_dim=4, widths=(8, 8)),
        lambda: np.zeros((2, 32, 32, 3), "float32"),
    ),
    "hoc_discriminator": (lambda: HocDiscriminator(), lambda: np.zeros((1, 64, 64, 3), "float32")),
    "unet_tiny": (
        lambda: UNet(**UNET_PRESETS["tiny"]),
        lambda: np.zeros((1, 16, 16, 3), "float32"),
    ),
    "sn_discriminator_tiny": (
        lambda: SNDiscriminator(**SN_DISCRIMINATOR_PRESETS["tiny"]),
        lambda: np.zeros((1, 16, 16, 3), "float32"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_holds_every_weight(name, tmp_path):
    build, inputs = CASES[name]
    model = build()
    model(inputs(), training=True)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    saved = [
        n for n, _ in tf.train.list_variables(path) if n.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    assert len(saved) == len(model.weights), (name, len(saved), len(model.weights))
    # and restoring gives back the values (BN moving statistics included)
    clone = build()
    clone(inputs(), training=False)
    tf.train.Checkpoint(model=clone).read(path).assert_existing_objects_matched()
    for a, b in zip(model.weights, clone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
