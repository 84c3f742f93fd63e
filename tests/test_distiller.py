"""Distiller (Dai et al. 2019, appendix: data distillation, eq. 8)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.models.distiller import Distiller, smooth_l1
from indep_seg.networks.unet import unet_preset


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(size=(n, 16, 16, 3)).astype("float32"),
        "background": rng.uniform(size=(n, 16, 16, 3)).astype("float32"),
    }


def test_smooth_l1_is_eq_8():
    x = np.array([-1.0, -0.25, -0.2, 0.0, 0.1, 0.25, 0.5], "float32")
    expected = [1.0, 0.25, 4 * 0.04, 0.0, 4 * 0.01, 0.25, 0.5]
    np.testing.assert_allclose(smooth_l1(x), expected, rtol=1e-6)


def test_labels_are_teacher_predictions_on_the_same_composite():
    teacher, student = unet_preset("tiny"), unet_preset("tiny")
    d = Distiller(teacher, student)
    b = _batch()
    comp, labels = d.make_samples(b["image"], b["background"])
    np.testing.assert_allclose(labels, teacher(comp, training=False), atol=1e-6)
    # each input is the teacher-carved composite, flipped or not
    m = teacher(b["image"], training=False).numpy()
    plain = m * b["image"] + (1 - m) * b["background"]
    for i in range(len(comp)):
        c = comp[i].numpy()
        assert np.allclose(c, plain[i], atol=1e-5) or np.allclose(c, plain[i][:, ::-1], atol=1e-5)


def test_carve_labels_follow_the_flip():
    teacher = unet_preset("tiny")
    d = Distiller(teacher, unet_preset("tiny"), label="carve", seed=3)
    b = _batch()
    comp, labels = d.make_samples(b["image"], b["background"])
    m = teacher(b["image"], training=False).numpy()
    plain = m * b["image"] + (1 - m) * b["background"]
    flips = 0
    for i in range(len(comp)):
        flipped = not np.allclose(comp[i], plain[i], atol=1e-5)
        flips += flipped
        np.testing.assert_allclose(labels[i], m[i][:, ::-1] if flipped else m[i], atol=1e-6)
    assert 0 < flips < len(comp)


def test_training_lowers_the_loss_and_leaves_teacher_alone():
    teacher, student = unet_preset("tiny"), unet_preset("tiny")
    d = Distiller(teacher, student, label="carve")
    d.compile(keras.optimizers.Adam(3e-3))
    t_before = [w.numpy().copy() for w in teacher.weights]
    b = _batch()
    step = tf.function(d.train_step)
    first = float(step(b)["distill_loss"])
    for _ in range(40):
        d.loss_tracker.reset_state()
        last = float(step(b)["distill_loss"])
    assert last < 0.5 * first, (first, last)
    for a, w in zip(t_before, teacher.weights):
        np.testing.assert_array_equal(a, w.numpy())
    assert d.image_grid(b).shape[0] == 3 * 18 + 2
    with pytest.raises(ValueError, match="label"):
        Distiller(teacher, student, label="soft")
