"""Argument validation shared by the public functions of `indep_seg`.

Every helper takes the *argument name* as seen by the caller of the public function,
so that errors read like ``mask: expected values in [0, 1], got max 3.2``.

Rules
-----
- Shapes (rank, channels, equal sizes) are checked from the *static* shape, so they also
  work on symbolic tensors inside `tf.function` / Keras `train_step`; unknown dimensions
  (``None``) pass.
- Values (ranges, finiteness) are checked only for *eager* inputs (NumPy arrays, Python
  lists, eager tensors); inside a traced graph they are skipped, never turned into
  assertions that would slow training down or break export.
- Wrong shapes / ranges raise `ValueError`; wrong dtypes / types raise `TypeError`.
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "is_eager",
    "to_float_tensor",
    "to_numpy",
    "check_dtype_float",
    "check_rank",
    "check_channels",
    "check_range",
    "check_finite",
    "check_same_shape",
    "check_broadcastable_batch",
    "check_positive_number",
    "check_fraction",
    "check_int",
    "check_choice",
    "check_bool",
]


def _shape_str(shape) -> str:
    dims = (
        [("None" if d is None else str(d)) for d in tf.TensorShape(shape).as_list()]
        if tf.TensorShape(shape).rank is not None
        else ["..."]
    )
    return "[" + ", ".join(dims) + "]"


def is_eager(x) -> bool:
    """True when `x` holds concrete values that can be inspected now."""
    if isinstance(x, (np.ndarray, np.generic, numbers.Number, list, tuple)):
        return True
    if isinstance(x, tf.Tensor):
        if not tf.executing_eagerly():
            return False
        try:
            return not tf.is_symbolic_tensor(x)
        except Exception:  # pragma: no cover - very old TF
            return hasattr(x, "numpy")
    if isinstance(x, tf.Variable):
        return tf.executing_eagerly()
    return False


def check_dtype_float(x, name: str):
    """Raise `TypeError` unless `x` has a floating-point dtype."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return
    try:
        is_float = tf.as_dtype(dtype).is_floating
    except TypeError:
        is_float = np.issubdtype(np.dtype(dtype), np.floating)
    if not is_float:
        raise TypeError(
            f"{name}: expected a floating-point tensor, got dtype {tf.as_dtype(dtype).name}"
        )


def to_float_tensor(x, name: str, dtype=None) -> tf.Tensor:
    """Convert `x` to a floating-point `tf.Tensor`, rejecting integer / bool / string inputs.

    NumPy arrays and Python lists become float32 (or `dtype`); floating TF tensors keep their
    dtype unless `dtype` is given, in which case they are cast.
    """
    if x is None:
        raise TypeError(f"{name}: expected a floating-point tensor, got None")
    is_numpy = isinstance(x, (np.ndarray, np.generic))
    if isinstance(x, (tf.Tensor, tf.Variable)) or (hasattr(x, "dtype") and not is_numpy):
        try:
            t = tf.convert_to_tensor(x)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{name}: expected a floating-point tensor, got {type(x).__name__} ({e})"
            ) from None
        check_dtype_float(t, name)
        if dtype is not None and t.dtype != tf.as_dtype(dtype):
            t = tf.cast(t, dtype)
        return t
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists etc.
        raise TypeError(
            f"{name}: expected an array-like of numbers, got {type(x).__name__} ({e})"
        ) from None
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise TypeError(
            f"{name}: expected an array-like of numbers, got {type(x).__name__} of dtype "
            f"{arr.dtype}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    return tf.convert_to_tensor(arr, dtype=dtype or tf.float32)


def to_numpy(x, name: str) -> np.ndarray:
    """Concrete NumPy value of an eager input (NumPy, list, eager tensor); TypeError otherwise."""
    if isinstance(x, (tf.Tensor, tf.Variable)):
        if not is_eager(x):
            raise TypeError(f"{name}: expected a concrete (eager) value, got a symbolic tensor")
        return x.numpy()
    try:
        arr = np.asarray(x)
    except Exception as e:
        raise TypeError(f"{name}: expected an array-like, got {type(x).__name__} ({e})") from None
    if arr.dtype == object:
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(x).__name__}")
    return arr


def check_rank(x, name: str, ranks, what: str | None = None):
    """Raise `ValueError` unless the static rank of `x` is in `ranks` (int or iterable).

    `what` describes the expected layout, e.g. ``"[B, H, W, 1]"``.
    """
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    shape = tf.TensorShape(getattr(x, "shape", np.shape(x)))
    if shape.rank is None:
        return
    if shape.rank not in ranks:
        expected = what or " or ".join(f"rank {r}" for r in ranks)
        raise ValueError(
            f"{name}: expected {expected}, got shape {_shape_str(shape)} (rank {shape.rank})"
        )


def check_channels(x, name: str, channels=None, min_channels=None, what: str | None = None):
    """Raise `ValueError` unless the last static dimension equals `channels` (int or tuple)
    or is at least `min_channels`. Unknown dimensions pass."""
    shape = tf.TensorShape(getattr(x, "shape", np.shape(x)))
    if shape.rank is None or shape.rank == 0:
        return
    c = shape[-1]
    if c is None:
        return
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if c not in allowed:
            expected = what or ("last dimension " + " or ".join(str(a) for a in allowed))
            raise ValueError(f"{name}: expected {expected}, got shape {_shape_str(shape)}")
    if min_channels is not None and c < min_channels:
        expected = what or f"at least {min_channels} channels in the last dimension"
        raise ValueError(f"{name}: expected {expected}, got shape {_shape_str(shape)}")


def _fmt(v: float) -> str:
    return f"{float(v):.6g}"


def check_finite(x, name: str):
    """Raise `ValueError` if an eager `x` contains NaN or Inf (skipped for symbolic tensors)."""
    if not is_eager(x):
        return
    arr = to_numpy(x, name)
    if arr.size and not np.all(np.isfinite(arr.astype(np.float64, copy=False))):
        n_nan = int(np.isnan(arr).sum())
        raise ValueError(
            f"{name}: expected finite values, got {n_nan} NaN and {int(np.isinf(arr).sum())} Inf"
        )


def check_range(x, name: str, low=None, high=None, tolerance: float = 1e-5):
    """Raise `ValueError` unless every value of an eager `x` lies in [low, high] (+- tolerance).

    NaN values fail. Skipped for symbolic tensors (graph mode).
    """
    if not is_eager(x):
        return
    arr = to_numpy(x, name)
    if arr.size == 0:
        return
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError(
            f"{name}: expected values in [{_fmt(low) if low is not None else '-inf'}, "
            f"{_fmt(high) if high is not None else 'inf'}], got NaN"
        )
    lo_s = _fmt(low) if low is not None else "-inf"
    hi_s = _fmt(high) if high is not None else "inf"
    if low is not None:
        mn = arr.min()
        if mn < low - tolerance:
            raise ValueError(f"{name}: expected values in [{lo_s}, {hi_s}], got min {_fmt(mn)}")
    if high is not None:
        mx = arr.max()
        if mx > high + tolerance:
            raise ValueError(f"{name}: expected values in [{lo_s}, {hi_s}], got max {_fmt(mx)}")


def check_same_shape(a, b, name_a: str, name_b: str, axes=None):
    """Raise `ValueError` if the static shapes of `a` and `b` differ (on `axes` if given).

    Unknown dimensions are compatible with anything.
    """
    sa = tf.TensorShape(getattr(a, "shape", np.shape(a)))
    sb = tf.TensorShape(getattr(b, "shape", np.shape(b)))
    if sa.rank is None or sb.rank is None:
        return
    if axes is None:
        if sa.rank != sb.rank or not sa.is_compatible_with(sb):
            raise ValueError(
                f"{name_b}: expected the same shape as {name_a} {_shape_str(sa)}, "
                f"got {_shape_str(sb)}"
            )
        return
    for ax in axes:
        if ax >= sa.rank or ax >= sb.rank or -ax > sa.rank or -ax > sb.rank:
            raise ValueError(
                f"{name_b}: expected a shape compatible with {name_a} {_shape_str(sa)}, "
                f"got {_shape_str(sb)}"
            )
        da, db = sa[ax], sb[ax]
        if da is not None and db is not None and da != db:
            raise ValueError(
                f"{name_b}: expected dimension {ax} to match {name_a} ({da}), got {db} "
                f"(shapes {_shape_str(sa)} and {_shape_str(sb)})"
            )


def check_broadcastable_batch(a, b, name_a: str, name_b: str):
    """Batch dimensions equal or one of them 1 (static check)."""
    sa = tf.TensorShape(getattr(a, "shape", np.shape(a)))
    sb = tf.TensorShape(getattr(b, "shape", np.shape(b)))
    if sa.rank and sb.rank:
        da, db = sa[0], sb[0]
        if da is not None and db is not None and da != db and 1 not in (da, db):
            raise ValueError(f"{name_b}: expected batch size {da} (as {name_a}) or 1, got {db}")


def _real_scalar(value, name: str, expected: str):
    """`float(value)` for a real scalar (eager tensors included); None for a symbolic tensor."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        if not is_eager(value):
            return None
        value = value.numpy()
    if (
        isinstance(value, bool)
        or not isinstance(value, (numbers.Real, np.number, np.ndarray))
        or np.ndim(value) != 0
    ):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
    return float(value)


def check_positive_number(value, name: str, allow_zero: bool = False):
    """A Python / NumPy real number > 0 (or >= 0). Tensors are accepted when eager."""
    v = _real_scalar(value, name, "a real number")
    if v is None:
        return value
    if not np.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        raise ValueError(
            f"{name}: expected a {'non-negative' if allow_zero else 'positive'} number, got {v}"
        )
    return value


def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0):
    """A real number in [low, high]."""
    v = _real_scalar(value, name, f"a real number in [{low}, {high}]")
    if v is None:
        return value
    if not (low <= v <= high):
        raise ValueError(f"{name}: expected a number in [{_fmt(low)}, {_fmt(high)}], got {_fmt(v)}")
    return value


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A Python / NumPy integer (not bool) within [minimum, maximum]; returns it as `int`."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}: expected an integer <= {maximum}, got {v}")
    return v


def check_choice(value, name: str, choices):
    """`value` must be one of `choices`."""
    if value not in tuple(choices):
        raise ValueError(
            f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        )
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)
