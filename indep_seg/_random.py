"""Seeded random draws shared by layout, providers and losses (private).

`seed` may be
- ``None``: TF's stateful global generator (works eagerly and inside `tf.function`),
- a Python int: a fixed stateless draw (the same numbers on every call),
- a shape-[2] integer tensor: a stateless TF seed (e.g. from `tf.random.split`),
- a `keras.random.SeedGenerator`: advances its state on every call (use this in models).
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf


def _stateless_seed(seed):
    if isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
        return tf.constant([int(seed), 0], dtype=tf.int64)
    if isinstance(seed, (tf.Tensor, np.ndarray, list, tuple)):
        s = tf.convert_to_tensor(seed)
        if (
            s.dtype not in (tf.int32, tf.int64)
            or s.shape.rank != 1
            or (s.shape[0] not in (None, 2))
        ):
            raise ValueError(
                f"seed: expected an int, a SeedGenerator or a shape-[2] integer tensor, "
                f"got {s.dtype.name} of shape {s.shape}"
            )
        return tf.cast(s, tf.int64)
    return None


def check_seed(seed):
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    if _stateless_seed(seed) is None:
        raise TypeError(
            f"seed: expected None, an int, a shape-[2] integer tensor or a "
            f"keras.random.SeedGenerator, got {type(seed).__name__}"
        )
    return seed


def uniform(shape, seed=None, minval=0.0, maxval=1.0, dtype=tf.float32):
    check_seed(seed)
    if seed is None:
        return tf.random.uniform(shape, minval, maxval, dtype=dtype)
    if isinstance(seed, keras.random.SeedGenerator):
        return tf.cast(keras.random.uniform(shape, minval, maxval, seed=seed), dtype)
    return tf.random.stateless_uniform(shape, _stateless_seed(seed), minval, maxval, dtype=dtype)


def normal(shape, seed=None, dtype=tf.float32):
    check_seed(seed)
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    if isinstance(seed, keras.random.SeedGenerator):
        return tf.cast(keras.random.normal(shape, seed=seed), dtype)
    return tf.random.stateless_normal(shape, _stateless_seed(seed), dtype=dtype)


def randint(shape, minval, maxval, seed=None):
    """Integers uniform in [minval, maxval] (both inclusive), int32."""
    u = uniform(shape, seed=seed)
    span = tf.cast(maxval, tf.float32) - tf.cast(minval, tf.float32) + 1.0
    v = tf.floor(u * span)
    v = tf.minimum(v, span - 1.0)  # u < 1, but guard against rounding
    return tf.cast(v, tf.int32) + tf.cast(minval, tf.int32)


def permutation(n, seed=None):
    """A uniformly random permutation of range(n) (argsort of uniform draws)."""
    return tf.cast(tf.argsort(uniform(tf.reshape(n, [1]), seed=seed)), tf.int32)
