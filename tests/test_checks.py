"""Validators: errors name the argument and what was expected; values are checked only eagerly."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg import checks


def test_rank_and_channels():
    x = np.zeros([2, 3, 4, 1], np.float32)
    checks.check_rank(x, "x", 4)
    checks.check_rank(x, "x", (3, 4))
    with pytest.raises(
        ValueError, match=r"mask: expected \[B, H, W, 1\], got shape \[2, 3, 4, 1\] \(rank 4\)"
    ):
        checks.check_rank(x, "mask", 5, "[B, H, W, 1]")
    with pytest.raises(ValueError, match="x: expected rank 3 or rank 5"):
        checks.check_rank(x, "x", (3, 5))
    checks.check_channels(x, "x", 1)
    with pytest.raises(ValueError, match="image: expected last dimension 3"):
        checks.check_channels(x, "image", 3)
    with pytest.raises(ValueError, match="layers: expected at least 2 channels"):
        checks.check_channels(x, "layers", min_channels=2)


def test_range_finite_and_dtype():
    checks.check_range(np.array([0.0, 1.0]), "m", 0, 1)
    checks.check_range(np.array([1.0 + 1e-7]), "m", 0, 1)  # rounding tolerance
    with pytest.raises(ValueError, match=r"mask: expected values in \[0, 1\], got max 3.2"):
        checks.check_range(tf.constant([0.5, 3.2]), "mask", 0.0, 1.0)
    with pytest.raises(ValueError, match=r"mask: expected values in \[0, 1\], got min -1"):
        checks.check_range(np.array([-1.0]), "mask", 0.0, 1.0)
    with pytest.raises(ValueError, match="got NaN"):
        checks.check_range(np.array([np.nan]), "mask", 0.0, 1.0)
    with pytest.raises(ValueError, match="z: expected finite values, got 1 NaN and 1 Inf"):
        checks.check_finite(np.array([np.nan, np.inf, 0.0]), "z")
    with pytest.raises(TypeError, match="fg: expected a floating-point tensor, got dtype int32"):
        checks.check_dtype_float(tf.constant([1]), "fg")
    with pytest.raises(TypeError, match="fg: expected a floating-point array, got dtype int64"):
        checks.to_float_tensor(np.array([1]), "fg")
    with pytest.raises(TypeError, match="fg: expected a floating-point tensor, got None"):
        checks.to_float_tensor(None, "fg")
    with pytest.raises(TypeError, match="fg: expected an array-like of numbers"):
        checks.to_float_tensor(["a", "b"], "fg")
    assert checks.to_float_tensor([0.5, 1.0], "fg").dtype == tf.float32
    assert checks.to_float_tensor(tf.constant([0.5], tf.float16), "fg").dtype == tf.float16


def test_values_are_not_checked_inside_graphs_but_shapes_are():
    @tf.function
    def ranged(t):
        checks.check_range(t, "mask", 0.0, 1.0)  # symbolic: skipped
        return t

    np.testing.assert_array_equal(ranged(tf.constant([5.0])).numpy(), [5.0])

    @tf.function
    def ranked(t):
        checks.check_rank(t, "mask", 4)  # static shape: checked at trace time
        return t

    with pytest.raises(ValueError, match="mask: expected rank 4"):
        ranked(tf.zeros([2, 2]))
    spec_fn = tf.function(
        lambda t: (checks.check_channels(t, "mask", 1), t)[1],
        input_signature=[tf.TensorSpec([None, None, None, None])],
    )
    spec_fn(tf.zeros([1, 2, 2, 3]))  # unknown static dimensions pass


def test_shapes_and_scalars():
    a, b = np.zeros([2, 3, 4, 3]), np.zeros([2, 3, 5, 3])
    with pytest.raises(
        ValueError, match=r"bg: expected the same shape as fg \[2, 3, 4, 3\], got \[2, 3, 5, 3\]"
    ):
        checks.check_same_shape(a, b, "fg", "bg")
    with pytest.raises(ValueError, match=r"mask: expected dimension 2 to match fg \(4\), got 5"):
        checks.check_same_shape(a, b, "fg", "mask", axes=(0, 1, 2))
    checks.check_same_shape(a, b, "fg", "mask", axes=(0, 1))
    assert checks.check_int(3, "n", minimum=1) == 3
    with pytest.raises(TypeError, match="n: expected an integer, got bool"):
        checks.check_int(True, "n")
    with pytest.raises(ValueError, match="n: expected an integer >= 1, got 0"):
        checks.check_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match="a: expected a number in"):
        checks.check_fraction(1.5, "a")
    with pytest.raises(ValueError, match="lr: expected a positive number, got -1.0"):
        checks.check_positive_number(-1.0, "lr")
    with pytest.raises(ValueError, match="mode: expected one of 'a', 'b', got 'c'"):
        checks.check_choice("c", "mode", ("a", "b"))
    with pytest.raises(TypeError, match="flag: expected True or False"):
        checks.check_bool(1, "flag")
