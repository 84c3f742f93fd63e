"""`scale_loss`: the rule by hand, and under a real MirroredStrategy on two logical CPUs
(in a subprocess, so that splitting the CPU does not leak into other tests)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from indep_seg.distribute import num_replicas_in_sync, scale_loss


def test_rules_without_a_strategy():
    assert num_replicas_in_sync() == 1
    per_example = np.array([1.0, 2.0, 3.0, 6.0], np.float32)
    # per-example: sum / global batch
    assert float(scale_loss(per_example, global_batch_size=8)) == pytest.approx(12 / 8)
    # extra axes are averaged per example first: [[1, 3], [2, 2]] -> [2, 2] -> 4 / 2
    assert float(scale_loss(np.array([[1, 3], [2, 2]], np.float32), 2)) == pytest.approx(2.0)
    # scalar means: unchanged on one replica, local / global when both are given
    assert float(scale_loss(np.float32(5.0))) == pytest.approx(5.0)
    assert float(
        scale_loss(np.float32(5.0), global_batch_size=8, local_batch_size=2)
    ) == pytest.approx(1.25)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="global_batch_size: expected the global batch size"):
        scale_loss(np.ones([3], np.float32))
    with pytest.raises(ValueError, match="global_batch_size: expected an integer >= 1"):
        scale_loss(np.ones([3], np.float32), 0)
    with pytest.raises(TypeError, match="global_batch_size: expected an integer batch size"):
        scale_loss(np.ones([3], np.float32), 2.5)
    with pytest.raises(TypeError, match="loss: expected a floating-point"):
        scale_loss(np.ones([3], np.int32), 3)


SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from indep_seg import losses
    from indep_seg.distribute import num_replicas_in_sync, scale_loss

    rng = np.random.default_rng(0)
    x = rng.uniform(size=[8, 4, 4, 1]).astype(np.float32)   # soft "masks" scaled by a weight
    w0 = np.float32(0.7)

    def unscaled(loss, *a):
        return tf.reduce_mean(loss)

    SCALE = scale_loss if "--no-scaling" not in sys.argv else unscaled

    def loss_terms(w, xs, global_batch, local_batch, hinge=True):
        masks = tf.clip_by_value(xs * w, 0.0, 1.0)
        per_example = losses.area_penalty(masks, 0.25, reduction="none")          # per-example rule
        scalar = losses.binarization_loss(masks)  # scalar, local/global
        total = SCALE(per_example, global_batch) + SCALE(scalar, global_batch, local_batch)
        if hinge:  # scalar, divided by num_replicas_in_sync (exact for an even split)
            total += 0.5 * SCALE(losses.mask_hinge_loss(masks, 0.6))
        return total

    def reference(xs, hinge=True):
        w = tf.Variable(w0)
        with tf.GradientTape() as tape:
            masks = tf.clip_by_value(xs * w, 0.0, 1.0)
            loss = losses.area_penalty(masks, 0.25) + losses.binarization_loss(masks)
            if hinge:
                loss += 0.5 * losses.mask_hinge_loss(masks, 0.6)
        return float(tape.gradient(loss, w))

    out = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out["replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        w = tf.Variable(w0)
        opt = keras.optimizers.SGD(learning_rate=1.0)
        opt.build([w])

    splits = [(0, 4), (4, 8)]
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[slice(*splits[ctx.replica_id_in_sync_group])]))

    @tf.function
    def grad_step(xs):
        def replica_fn(xs):
            with tf.GradientTape() as tape:
                loss = loss_terms(w, xs, 8, tf.shape(xs)[0])
            return tape.gradient(loss, w), num_replicas_in_sync()
        g, n = strategy.run(replica_fn, args=(xs,))
        return strategy.reduce("SUM", g, axis=None), strategy.experimental_local_results(n)[0]

    g, n = grad_step(values)
    out["in_replica_num_replicas"] = int(n)
    out["grad_mirrored"] = float(g)
    out["grad_single"] = reference(tf.constant(x))

    # an uneven split (5 + 3): the per-example rule and local/global stay exact
    uneven = [(0, 5), (5, 8)]
    values_uneven = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[slice(*uneven[ctx.replica_id_in_sync_group])]))

    @tf.function
    def grad_step_uneven(xs):
        def replica_fn(xs):
            with tf.GradientTape() as tape:
                loss = loss_terms(w, xs, 8, tf.shape(xs)[0], hinge=False)
            return tape.gradient(loss, w)
        return strategy.reduce("SUM", strategy.run(replica_fn, args=(xs,)), axis=None)

    out["grad_mirrored_uneven"] = float(grad_step_uneven(values_uneven))
    out["grad_single_no_hinge"] = reference(tf.constant(x), hinge=False)

    # the real optimizer path: apply_gradients inside the replica step all-reduces (sums)
    @tf.function
    def train_step(xs):
        def replica_fn(xs):
            with tf.GradientTape() as tape:
                loss = loss_terms(w, xs, 8, tf.shape(xs)[0])
            opt.apply_gradients([(tape.gradient(loss, w), w)])
        strategy.run(replica_fn, args=(xs,))

    train_step(values)
    out["w_after_mirrored"] = float(w.numpy())
    out["w_after_single"] = float(w0 - 1.0 * out["grad_single"])
    print("RESULT" + json.dumps(out))
""")


def _run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=root,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT") :])


@pytest.mark.slow
def test_gradients_under_mirrored_strategy_equal_single_device():
    out = _run_script()
    assert out["replicas"] == 2 and out["in_replica_num_replicas"] == 2
    assert abs(out["grad_single"]) > 1e-3  # a real gradient
    np.testing.assert_allclose(out["grad_mirrored"], out["grad_single"], rtol=1e-5)
    np.testing.assert_allclose(out["w_after_mirrored"], out["w_after_single"], rtol=1e-5)
    np.testing.assert_allclose(out["grad_mirrored_uneven"], out["grad_single_no_hinge"], rtol=1e-5)
