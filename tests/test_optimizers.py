"""`FusedAdam` updates exactly as Keras' Adam (by hand, against Keras, and under a real
MirroredStrategy on two logical CPUs in a subprocess)."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from indep_seg.optimizers import FusedAdam


def _model(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(2)(x))


def _train(opt, steps=5, seed=0):
    model = _model(seed)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(6, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.normal(size=(6, 2)), tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        opt.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )

    for _ in range(steps):
        step()
    return model, opt


def test_one_step_by_hand():
    """w - lr sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps) with m = (1 - b1) g, v = (1 - b2)
    g^2."""
    w = keras.Variable(np.array([1.0, -2.0, 0.5], np.float32))
    g = np.array([0.3, -0.1, 2.0], np.float32)
    lr, b1, b2, eps = 0.01, 0.5, 0.9, 1e-7
    opt = FusedAdam(lr, beta_1=b1, beta_2=b2, epsilon=eps)
    opt.apply_gradients([(tf.constant(g), w)])
    m, v = (1 - b1) * g, (1 - b2) * g * g
    expected = np.array([1.0, -2.0, 0.5]) - lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(opt._momentums[0].numpy(), m, rtol=1e-6)
    np.testing.assert_allclose(opt._velocities[0].numpy(), v, rtol=1e-6)


def test_matches_keras_adam_over_steps():
    ref, ref_opt = _train(keras.optimizers.Adam(3e-3, beta_1=0.5, beta_2=0.99))
    got, got_opt = _train(FusedAdam(3e-3, beta_1=0.5, beta_2=0.99))
    assert int(got_opt.iterations) == int(ref_opt.iterations) == 5
    for a, b in zip(got.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_opt.variables, ref_opt.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "options", [dict(amsgrad=True), dict(clipnorm=0.1), dict(weight_decay=0.05)]
)
def test_amsgrad_clipping_and_weight_decay_as_in_keras(options):
    """AMSGrad is Keras' own update; clipping and weight decay act around the fused update."""
    ref, _ = _train(keras.optimizers.Adam(1e-2, **options))
    got, _ = _train(FusedAdam(1e-2, **options))
    for a, b in zip(got.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_serialises_with_its_config():
    opt = FusedAdam(2e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
    back = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(back, FusedAdam)
    assert back.get_config() == opt.get_config()


_MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from indep_seg.optimizers import FusedAdam

    def run(make_opt):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            keras.utils.set_random_seed(0)
            layers = [keras.Input((5,)), keras.layers.Dense(3), keras.layers.Dense(1)]
            model = keras.Sequential(layers)
            model.compile(optimizer=make_opt(), loss="mse")
        start = [w.copy() for w in model.get_weights()]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 5)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        moved = max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), start))
        return [w.tolist() for w in model.get_weights()], moved

    print(json.dumps({"keras": run(lambda: keras.optimizers.Adam(1e-2)),
                      "fused": run(lambda: FusedAdam(1e-2))}))
""")


def test_same_training_under_mirrored_strategy():
    out = subprocess.run(
        [sys.executable, "-c", _MIRRORED], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    (fused, fused_moved), (ref, _) = res["fused"], res["keras"]
    for a, b in zip(fused, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert fused_moved > 1e-3  # 6 steps of lr 1e-2 moved the weights
