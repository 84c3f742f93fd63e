"""Scaling of hand-written losses under `tf.distribute` (DESIGN.md 4): the one helper.

Why. Under `MirroredStrategy` / `MultiWorkerMirroredStrategy` every replica runs the train
step on its local slice of the global batch, and the optimizer *sums* the replicas'
gradients (all-reduce SUM). A loss averaged over the local batch therefore yields
``num_replicas`` times the single-device gradient unless it is scaled. `keras.losses`
objects scale themselves; the hand-written losses of this package do not, so every train
step passes each of them through `scale_loss` exactly once, and logs the *unscaled* value.

Rules (exactly what `scale_loss` computes):
- **Per-example losses** (rank >= 1, first axis = the local batch, e.g. any loss of
  `indep_seg.losses` with ``reduction="none"``): each example's value is first averaged over
  its remaining axes, then ``sum(per_example) / global_batch_size`` — the same as
  `tf.nn.compute_average_loss`. Summed over replicas this is the mean over the global batch
  even when the last global batch is split unevenly.
- **Scalars that are already a mean over the local batch** (e.g. the default
  ``reduction="mean"`` outputs, or a batch estimator such as `ils_mi_loss`): multiplied by
  ``local_batch_size / global_batch_size`` when both are given, otherwise divided by
  ``num_replicas_in_sync`` (equal split; exact whenever the global batch divides evenly).
- With no strategy (or one replica) the scalar rule leaves the loss unchanged and the
  per-example rule is the plain mean when ``global_batch_size`` is the batch size.

Which to use: prefer ``reduction="none"`` + `scale_loss(..., global_batch_size)` for
per-example losses (GAN losses, area penalty, hinge, binarisation, R1, ILS-L1, the InfoGAN
term, smooth-L1); batch-level estimators (ILS-MI: its negatives come from the local batch)
can only be scaled as scalars.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from indep_seg import checks

__all__ = [
    "scale_loss",
    "step_outputs",
    "num_replicas_in_sync",
    "global_batch_draw",
    "replica_position",
]


def num_replicas_in_sync() -> int:
    """The number of replicas of the current `tf.distribute` strategy (1 without one)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def _check_batch_size(value, name):
    if value is None:
        return None
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        return checks.check_int(value, name, minimum=1)
    if isinstance(value, (tf.Tensor, tf.Variable)):
        if not value.dtype.is_integer and not value.dtype.is_floating:
            raise TypeError(f"{name}: expected an integer batch size, got dtype {value.dtype.name}")
        if value.shape.rank not in (None, 0):
            raise ValueError(f"{name}: expected a scalar batch size, got shape {value.shape}")
        if checks.is_eager(value) and float(value.numpy()) < 1:
            raise ValueError(f"{name}: expected a batch size >= 1, got {value.numpy()}")
        return value
    raise TypeError(f"{name}: expected an integer batch size, got {type(value).__name__} {value!r}")


def scale_loss(loss, global_batch_size=None, local_batch_size=None):
    """Scale one hand-written loss for gradient summation across replicas.

    Args:
        loss: a scalar already averaged over the local batch, or per-example values
            ``[B_local, ...]`` (averaged over the non-batch axes first).
        global_batch_size: the batch size summed over all replicas (int or scalar tensor).
            Required for per-example losses.
        local_batch_size: the size of this replica's batch; with `global_batch_size` it makes
            the scalar rule exact for uneven splits.

    Returns:
        A scalar tensor to add to the total loss that is differentiated. Summed over the
        replicas, its gradient equals the gradient of the loss averaged over the global batch.

    Example:
        >>> per_example = losses.area_penalty(masks, 0.25, reduction="none")
        >>> total = distribute.scale_loss(per_example, global_batch_size)  # differentiate this
        >>> tracker.update_state(tf.reduce_mean(per_example))              # log the unscaled one
    """
    global_batch_size = _check_batch_size(global_batch_size, "global_batch_size")
    local_batch_size = _check_batch_size(local_batch_size, "local_batch_size")
    loss = checks.to_float_tensor(loss, "loss")
    rank = loss.shape.rank
    if rank is None:
        raise ValueError("loss: expected a scalar or per-example values [B, ...] with a known rank")
    if rank == 0:
        if global_batch_size is not None and local_batch_size is not None:
            return loss * (
                tf.cast(local_batch_size, loss.dtype) / tf.cast(global_batch_size, loss.dtype)
            )
        replicas = num_replicas_in_sync()
        return loss / tf.cast(replicas, loss.dtype) if replicas != 1 else loss
    if global_batch_size is None:
        raise ValueError(
            "global_batch_size: expected the global batch size for per-example losses "
            f"(loss has shape {loss.shape}), got None"
        )
    per_example = loss
    if rank > 1:
        per_example = tf.reduce_mean(tf.reshape(loss, tf.stack([tf.shape(loss)[0], -1])), axis=1)
    return tf.reduce_sum(per_example) / tf.cast(global_batch_size, loss.dtype)


def replica_position():
    """(replica index, number of replicas) of the current replica context; (0, 1) outside one."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def global_batch_draw(draw, local_batch_size):
    """Random values for the *global* batch, of which this replica keeps its own slice.

    `draw(n)` makes `n` rows of random values (e.g. latent codes from the model's SeedGenerator).
    Every replica draws all `local_batch_size * num_replicas` rows from the same (mirrored) RNG
    state
    and keeps rows `[i * local, (i + 1) * local)`, so a run on N replicas uses exactly the numbers a
    single device uses for the same global batch, and the RNG state advances identically. Needs
    equal local batches (global batch divisible by the replicas, `drop_remainder=True`).
    """
    i, n = replica_position()
    values = draw(local_batch_size * n)
    if isinstance(n, int) and n == 1:
        return values
    start = tf.cast(i, tf.int32) * tf.cast(local_batch_size, tf.int32)
    return values[start : start + tf.cast(local_batch_size, tf.int32)]


def step_outputs(logs: dict) -> dict:
    """A train_step's dict of scalars as `fit` needs it (the helper every trainer returns through).

    Under MultiWorkerMirroredStrategy each value is reshaped to `[1]`: `fit` there fails to reduce
    scalars ("Invalid reduction dimension 0"), and shape-[1] values are averaged over the replicas
    like scalars would be. Elsewhere the values stay scalars: Keras' TensorBoard callback cannot
    write a shape-[1] batch summary with NumPy 2. Integers become float32.
    """
    if not isinstance(logs, dict):
        raise TypeError(f"logs: expected a dict of scalars, got {type(logs).__name__}")
    shape = (
        [1]
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)
        else []
    )
    out = {}
    for k, v in logs.items():
        v = tf.convert_to_tensor(v)
        if v.shape.rank is not None and v.shape.num_elements() not in (None, 1):
            raise ValueError(f"logs[{k!r}]: expected a scalar, got shape {v.shape}")
        out[k] = tf.reshape(tf.cast(v, tf.float32) if not v.dtype.is_floating else v, shape)
    return out
