"""Where the fast CPU layers take their own kernels, and where they are Keras' layers.

`GemmConv2D`, `GemmConv2DTranspose`, `UnfusedBiasConv2D`, `FusedBatchNormalization` (in
`indep_seg.networks`) and `FusedAdam` (`indep_seg.optimizers`) are subclasses of Keras' layers and
optimizer with the same arguments, variables and results. Their own kernels (GEMM forms, a rank-1
bias, TensorFlow's fused batch-norm and Adam kernels) were measured faster on a 2-core CPU only
(docs/performance.md); on a GPU or TPU people expect cuDNN's and XLA's kernels. So each of them
asks `use_fast_cpu_kernels()` when its call (or update) is traced:

- ``auto`` (the default): the fast kernels when no GPU and no TPU is visible to TensorFlow (the
  CPU is the default device), Keras' own computation (``super().call`` / ``super().update_step``)
  when one is;
- ``on``: always the fast kernels; ``off``: always Keras' own.

The choice is set by the environment variable ``INDEP_SEG_FAST_CPU_LAYERS`` (``auto``, ``on`` /
``1``, ``off`` / ``0``), or in code by `set_fast_cpu_layers(mode)` / ``with
fast_cpu_layers(mode):``, which take precedence over the variable. It is read when a layer's call
is traced, so set it before building and calling a model. Since the classes, and so the variables
(names, shapes, checkpoint keys), are the same in every mode, a checkpoint written in one mode
loads into a model run in the other and gives the same outputs (tests/test_fast_cpu.py).

A GPU machine that should run on its CPU (``with tf.device("/CPU:0")``) keeps Keras' layers
under ``auto``; set ``on`` there.
"""

from __future__ import annotations

import contextlib
import functools
import os

import tensorflow as tf

__all__ = [
    "ENV_VAR",
    "MODES",
    "fast_cpu_layers_mode",
    "use_fast_cpu_kernels",
    "set_fast_cpu_layers",
    "fast_cpu_layers",
    "accelerator_visible",
]

ENV_VAR = "INDEP_SEG_FAST_CPU_LAYERS"
MODES = ("auto", "on", "off")
_ALIASES = {
    "auto": "auto",
    "on": "on",
    "1": "on",
    "true": "on",
    "off": "off",
    "0": "off",
    "false": "off",
}

_override: str | None = None


def _parse(value, where: str) -> str:
    mode = _ALIASES.get(str(value).strip().lower())
    if mode is None:
        raise ValueError(
            f"{where}: expected one of auto, on (1, true), off (0, false), got {value!r}"
        )
    return mode


def fast_cpu_layers_mode() -> str:
    """The mode in force: `set_fast_cpu_layers`' if set, else ``$INDEP_SEG_FAST_CPU_LAYERS``,
    else ``"auto"``. A bad value of the variable is a ValueError naming it."""
    if _override is not None:
        return _override
    value = os.environ.get(ENV_VAR)
    return "auto" if value is None or not value.strip() else _parse(value, f"${ENV_VAR}")


@functools.lru_cache(maxsize=None)
def accelerator_visible() -> bool:
    """Whether TensorFlow sees a GPU or a TPU (then the default device is not the CPU)."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def use_fast_cpu_kernels() -> bool:
    """True where the fast CPU layers should take their own kernels (see the module docstring)."""
    mode = fast_cpu_layers_mode()
    if mode == "auto":
        return not accelerator_visible()
    return mode == "on"


def set_fast_cpu_layers(mode: str | None) -> None:
    """Sets the mode for this process (``"auto"``, ``"on"``, ``"off"``); None returns the choice to
    the environment variable."""
    global _override
    _override = None if mode is None else _parse(mode, "mode")


@contextlib.contextmanager
def fast_cpu_layers(mode: str):
    """``with fast_cpu_layers("off"): ...`` builds / traces with that mode, then restores the old
    one."""
    global _override
    previous = _override
    set_fast_cpu_layers(mode)
    try:
        yield
    finally:
        _override = previous
