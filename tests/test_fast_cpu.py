"""The fast CPU layers are chosen by device (indep_seg.fast_cpu, issue #20 item 3): their own
kernels on a CPU, Keras' own computation on a GPU / TPU, and one checkpoint loads into either."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg import fast_cpu
from indep_seg.fast_cpu import ENV_VAR, fast_cpu_layers, fast_cpu_layers_mode, use_fast_cpu_kernels
from indep_seg.networks.fused_batch_norm import FusedBatchNormalization
from indep_seg.networks.gemm_conv import GemmConv2D
from indep_seg.networks.gemm_conv_transpose import GemmConv2DTranspose
from indep_seg.networks.sn_discriminator import SNDiscriminator
from indep_seg.networks.unet import UNet
from indep_seg.networks.unfused_bias_conv import UnfusedBiasConv2D
from indep_seg.optimizers import FusedAdam


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    fast_cpu.set_fast_cpu_layers(None)
    yield
    fast_cpu.set_fast_cpu_layers(None)


# ----------------------------------------------------------------------------- the choice


def test_auto_takes_the_fast_kernels_on_this_cpu_only_machine():
    assert tf.config.list_logical_devices("GPU") == []  # (this test's premise)
    assert fast_cpu_layers_mode() == "auto" and use_fast_cpu_kernels()


def test_auto_takes_keras_layers_where_an_accelerator_is_visible(monkeypatch):
    monkeypatch.setattr(fast_cpu, "accelerator_visible", lambda: True)
    assert not use_fast_cpu_kernels()
    with fast_cpu_layers("on"):
        assert use_fast_cpu_kernels()


@pytest.mark.parametrize(
    "value, mode",
    [
        ("on", "on"),
        ("1", "on"),
        ("TRUE", "on"),
        ("off", "off"),
        ("0", "off"),
        (" auto ", "auto"),
        ("", "auto"),
    ],
)
def test_environment_variable(monkeypatch, value, mode):
    monkeypatch.setenv(ENV_VAR, value)
    assert fast_cpu_layers_mode() == mode


def test_bad_values_name_the_variable_or_argument(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(
        ValueError, match=r"\$INDEP_SEG_FAST_CPU_LAYERS: expected one of auto, on.*'fast'"
    ):
        use_fast_cpu_kernels()
    with pytest.raises(ValueError, match=r"mode: expected one of auto"):
        fast_cpu.set_fast_cpu_layers("gpu")


def test_code_setting_wins_over_the_environment_and_context_restores(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    assert not use_fast_cpu_kernels()
    with fast_cpu_layers("on"):
        assert use_fast_cpu_kernels()
        with fast_cpu_layers("off"):
            assert not use_fast_cpu_kernels()
        assert use_fast_cpu_kernels()
    assert not use_fast_cpu_kernels()


def _op_types(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(
    "layer, shape, fast_op, keras_op",
    [
        (lambda: GemmConv2D(1, 3, padding="same"), (2, 8, 8, 4), "MatMul", "Conv2D"),
        (
            lambda: GemmConv2DTranspose(2, 4, strides=2, padding="same"),
            (2, 4, 4, 4),
            "MatMul",
            "Conv2DBackpropInput",
        ),
    ],
)
def test_gemm_layers_are_keras_convolutions_when_off(layer, shape, fast_op, keras_op):
    x = tf.random.stateless_uniform(shape, (1, 2))
    for mode, present, absent in (("on", fast_op, keras_op), ("off", keras_op, fast_op)):
        with fast_cpu_layers(mode):
            lay = layer()
            ops = _op_types(lambda t: lay(t), x)
        assert present in ops and absent not in ops, (mode, sorted(ops))


def test_unfused_bias_is_keras_bias_add_when_off():
    x = tf.random.stateless_uniform((2, 8, 8, 3), (1, 2))
    with fast_cpu_layers("on"):
        conv = UnfusedBiasConv2D(4, 3, padding="same")
        on = _op_types(lambda t: conv(t), x)
    with fast_cpu_layers("off"):
        off = _op_types(lambda t: conv(t), x)
    # Keras adds the bias after reshaping it to (1, 1, 1, F); the rank-1 form adds it directly
    assert "Reshape" in off and "Reshape" not in on


def test_batch_norm_and_adam_take_the_fused_kernels_only_when_on():
    x = tf.random.stateless_uniform((4, 6, 6, 3), (1, 2))
    for mode in ("on", "off"):
        with fast_cpu_layers(mode):
            bn = FusedBatchNormalization()
            bn.build(x.shape)
            ops = _op_types(lambda t: bn(t, training=True), x)
            assert ("FusedBatchNormV3" in ops) == (mode == "on"), (mode, sorted(ops))
            var = tf.Variable(tf.ones([3]))
            opt = FusedAdam(0.1)
            opt.build([var])
            ops = _op_types(lambda g: opt.apply_gradients([(g, var)]), tf.ones([3]))
            assert ("ResourceApplyAdam" in ops) == (mode == "on"), (mode, sorted(ops))


# ------------------------------------------------------------------ one checkpoint, either build


def _build(seed):
    keras.utils.set_random_seed(seed)
    unet = UNet(resolution=16, encoder_filters=(4, 8, 8), encoder_kernels=(4, 4, 4), name="unet")
    disc = SNDiscriminator(resolution=16, filters=(4, 8), last_filters=8, head="conv")
    opt = FusedAdam(1e-2, beta_1=0.5, name="adam")
    variables = unet.trainable_variables + disc.trainable_variables
    opt.build(variables)
    return unet, disc, opt


def _train_step(unet, disc, opt, x):
    with tf.GradientTape() as tape:
        m = unet(x, training=True)
        loss = tf.reduce_mean(disc(m * x, training=True)) + tf.reduce_mean(m)
    variables = unet.trainable_variables + disc.trainable_variables
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))


def _outputs(unet, disc, x):
    m = unet(x, training=False)
    return m.numpy(), disc(m * x, training=False).numpy()


@pytest.mark.parametrize("write_mode, read_mode", [("on", "off"), ("off", "on")])
def test_a_checkpoint_loads_into_the_other_build_and_gives_the_same_outputs(
    tmp_path, write_mode, read_mode
):
    x = tf.random.stateless_uniform((4, 16, 16, 3), (3, 4))
    with fast_cpu_layers(write_mode):
        unet, disc, opt = _build(0)
        for _ in range(
            2
        ):  # weights, BN statistics, SN vectors and Adam slots all move off their init
            _train_step(unet, disc, opt, x)
        written = _outputs(unet, disc, x)
        path = tf.train.Checkpoint(unet=unet, disc=disc, opt=opt).write(str(tmp_path / "ckpt"))
        saved = {v.path: v.numpy() for v in unet.variables + disc.variables + opt.variables}
    with fast_cpu_layers(read_mode):
        unet2, disc2, opt2 = _build(1)  # other initial values, so a restore that misses shows
        loaded_vars = unet2.variables + disc2.variables + opt2.variables
        assert sorted((v.path, tuple(v.shape)) for v in loaded_vars) == sorted(
            (p, a.shape) for p, a in saved.items()
        )
        tf.train.Checkpoint(unet=unet2, disc=disc2, opt=opt2).read(path).assert_consumed()
        for v in loaded_vars:
            np.testing.assert_array_equal(v.numpy(), saved[v.path], err_msg=v.path)
        read = _outputs(unet2, disc2, x)
        for a, b in zip(written, read):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        # and the next training step agrees as well (the other kernels, the same update)
        _train_step(unet2, disc2, opt2, x)
    with fast_cpu_layers(write_mode):
        _train_step(unet, disc, opt, x)
    for a, b in zip(unet.variables + disc.variables, unet2.variables + disc2.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4, err_msg=a.path)
