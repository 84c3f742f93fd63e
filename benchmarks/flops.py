"""FLOP counting from a model's operations, two independent ways.

1. `analytic_forward_flops(model, inputs)`: runs the model once and records the input and
   output shape of every Conv2D / Conv2DTranspose / Dense / DepthwiseConv2D it calls
   (SpectralNormalization and other wrappers are seen through, because the wrapped layer
   is itself called), then counts multiply-adds from the layer configuration:

   - Conv2D:          2 * N * H_out * W_out * k_h * k_w * (C_in / groups) * C_out
   - Conv2DTranspose: 2 * N * H_in  * W_in  * k_h * k_w * C_in * C_out
   - Dense:           2 * (elements of the input / C_in) * C_in * C_out
   - DepthwiseConv2D: 2 * N * H_out * W_out * k_h * k_w * C_in * depth_multiplier

   (one multiply-add = 2 FLOP; biases, activations, normalisation and other element-wise
   work are not counted: on these networks they are < 1 % of the convolutions).

2. `graph_flops(concrete_function)`: walks the traced TensorFlow graph of any function
   (a forward pass, or a whole train step with its gradients) and sums the FLOP that
   TensorFlow's own statistics registry (the one `tf.compat.v1.profiler` uses) assigns to
   each operation: Conv2D, Conv2DBackpropInput, Conv2DBackpropFilter, MatMul,
   BatchMatMul, ... It returns the total split into "matmul-like" operations (convolutions
   and matrix products) and everything else (element-wise ops).

`python -m benchmarks.flops` cross-checks the two on a small network (they agree to the
FLOP on a forward pass) and prints the Table-1 networks' counts.

The train-step convention used by the benchmarks (the "model FLOP" of a step): a network
pass that is differentiated counts 3x its forward FLOP (forward + gradient w.r.t. the
input + gradient w.r.t. the weights), a pass without gradient 1x. `graph_flops` of the
traced step measures what the step really executes; it is recorded beside it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MATMUL_LIKE_OPS = (
    "Conv2D",
    "Conv2DBackpropInput",
    "Conv2DBackpropFilter",
    "DepthwiseConv2dNative",
    "DepthwiseConv2dNativeBackpropInput",
    "DepthwiseConv2dNativeBackpropFilter",
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Conv3D",
)


def _layer_flops(layer, in_shape, out_shape):
    import keras

    n = int(in_shape[0])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        c_in = int(in_shape[-1])
        return (
            2 * n * int(out_shape[1]) * int(out_shape[2]) * kh * kw * c_in * layer.depth_multiplier
        )
    if isinstance(layer, keras.layers.Conv2DTranspose):
        if layer.data_format == "channels_first":
            h, w, c_in = in_shape[2], in_shape[3], in_shape[1]
        else:
            h, w, c_in = in_shape[1], in_shape[2], in_shape[3]
        kh, kw = layer.kernel_size
        return 2 * n * int(h) * int(w) * kh * kw * int(c_in) * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        if layer.data_format == "channels_first":
            ho, wo, c_in = out_shape[2], out_shape[3], in_shape[1]
        else:
            ho, wo, c_in = out_shape[1], out_shape[2], in_shape[3]
        kh, kw = layer.kernel_size
        groups = getattr(layer, "groups", 1) or 1
        return 2 * n * int(ho) * int(wo) * kh * kw * (int(c_in) // groups) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        c_in = int(in_shape[-1])
        rows = int(np.prod([int(d) for d in in_shape[:-1]]))
        return 2 * rows * c_in * layer.units
    return None


def analytic_forward_flops(model, inputs, training=False, per_layer=False):
    """FLOP of one forward pass of `model` on `inputs`, counted from the layer configs.

    Args:
        model: a Keras model or layer (functional or subclassed).
        inputs: the input batch (array or tensor, or a list/dict of them) the count is for.
        training: passed to the model call.
        per_layer: also return `[(layer_name, class_name, flops), ...]`.
    Returns:
        total FLOP (int), or `(total, per_layer_list)`.
    """
    import keras

    counted_types = (
        keras.layers.Conv2D,
        keras.layers.Conv2DTranspose,
        keras.layers.Dense,
        keras.layers.DepthwiseConv2D,
    )
    if not hasattr(model, "_flatten_layers"):
        raise TypeError(f"model: expected a Keras model or layer, got {type(model).__name__}")
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, counted_types)
    ]
    records = []
    patched = []
    for layer in layers:
        original = layer.call

        def wrapped(x, *args, __orig=original, __layer=layer, **kwargs):
            y = __orig(x, *args, **kwargs)
            records.append((__layer, tuple(x.shape), tuple(y.shape)))
            return y

        layer.call = wrapped  # instance attribute: Layer.__call__ looks `self.call` up
        patched.append(layer)
    try:
        model(inputs, training=training)
    finally:
        for layer in patched:
            del layer.call
    per = []
    for layer, s_in, s_out in records:
        f = _layer_flops(layer, s_in, s_out)
        if f is not None:
            per.append((layer.name, type(layer).__name__, int(f)))
    total = int(sum(f for _, _, f in per))
    return (total, per) if per_layer else total


def graph_flops(concrete_function, by_type=False):
    """FLOP of every operation of a traced graph, from TensorFlow's statistics registry.

    Args:
        concrete_function: a `tf.function(...).get_concrete_function(...)` (or any object
            with a `.graph`) with fully defined shapes.
        by_type: also return `{op_type: flops}`.
    Returns:
        `{"total": int, "matmul_like": int, "other": int}` (and the per-type dict).
    """
    from tensorflow.python.framework import ops as tf_ops

    graph = getattr(concrete_function, "graph", concrete_function)
    if not hasattr(graph, "get_operations"):
        raise TypeError(
            "concrete_function: expected a ConcreteFunction or tf.Graph, got "
            f"{type(concrete_function).__name__}"
        )
    per_type: dict[str, int] = {}

    def live_ops(g):
        # Only the ops the function really runs: those its outputs and side effects
        # (variable updates: the control outputs) depend on. A gradient tape records
        # more than it needs (e.g. weight gradients that are never applied); TensorFlow
        # prunes those before running the graph, and so do we.
        roots = [t.op for t in getattr(g, "outputs", []) or []] + list(
            getattr(g, "control_outputs", []) or []
        )
        if not roots:
            return g.get_operations()
        seen_ops, stack = set(), list(roots)
        while stack:
            op = stack.pop()
            if op in seen_ops:
                continue
            seen_ops.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
        return [op for op in g.get_operations() if op in seen_ops]

    def walk(g, seen):
        for op in live_ops(g):
            try:
                stats = tf_ops.get_stats_for_node_def(g, op.node_def, "flops")
                value = stats.value
            except (ValueError, KeyError, TypeError, AttributeError):
                value = None
            if value:
                per_type[op.type] = per_type.get(op.type, 0) + int(value)
        # nested function bodies (tf.cond / while / PartitionedCall) are not inlined in the
        # FuncGraph: count them once each (they run once per step in the graphs measured here).
        for name, fn in getattr(g, "_functions", {}).items():
            if name in seen:
                continue
            seen.add(name)
            inner = getattr(fn, "graph", None)
            if inner is not None and hasattr(inner, "get_operations"):
                walk(inner, seen)

    walk(graph, set())
    matmul = sum(v for k, v in per_type.items() if k in MATMUL_LIKE_OPS)
    total = sum(per_type.values())
    out = {"total": int(total), "matmul_like": int(matmul), "other": int(total - matmul)}
    return (out, dict(sorted(per_type.items()))) if by_type else out


def forward_graph_flops(model, inputs, training=False):
    """`graph_flops` of one traced forward pass of `model` (conv/matmul part)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=training))
    spec = tf.TensorSpec(inputs.shape, inputs.dtype)
    return graph_flops(fn.get_concrete_function(spec))["matmul_like"]


def _small_network():
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.SpectralNormalization(keras.layers.Conv2D(8, 3, strides=2, padding="same"))(
        inp
    )
    x = keras.layers.Conv2D(16, 4, strides=2, padding="same")(x)
    x = keras.layers.Conv2DTranspose(8, 4, strides=2, padding="same")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(inp, x)


def main():
    import json

    import tensorflow as tf

    from benchmarks.table1 import table1_discriminator, table1_unet

    net = _small_network()
    x = tf.random.uniform((2, 32, 32, 3))
    a, per = analytic_forward_flops(net, x, per_layer=True)
    g = forward_graph_flops(net, x)
    out = {"small_network": {"analytic": a, "graph": g, "per_layer": per}}
    for name, model, res in (
        ("table1_unet_128", table1_unet(128), 128),
        ("table1_discriminator_128", table1_discriminator(128), 128),
    ):
        x = tf.random.uniform((1, res, res, 3))
        out[name] = {
            "analytic": analytic_forward_flops(model, x),
            "graph": forward_graph_flops(model, x),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
