"""Imports every application's experiment module so that its presets get registered.

One module per application (`box_seg`, `ilsgan`, `hoc`) plus `toy` (a 2-layer GAN on synthetic
data used by the training-infrastructure tests) and `tiny` (the applications' `<app>_tiny` presets
of the distribution tests). A module that is not written yet is recorded as
missing, and a module that fails to import is recorded with its error and reported with a warning;
neither stops the other experiments from working. `missing_modules()` tells which and why;
`indep-seg train --list` and the unknown-experiment error show it.
"""
from __future__ import annotations

import importlib
import importlib.util
import traceback
import warnings

APPLICATION_MODULES = ("toy", "box_seg", "ilsgan", "hoc", "tiny")

_MISSING: dict[str, str] = {}


def _load(name: str) -> None:
    full = f"{__name__}.{name}"
    if importlib.util.find_spec(full) is None:
        _MISSING[name] = f"training/experiments/{name}.py is not written yet"
        return
    try:
        importlib.import_module(full)
    except Exception as e:  # one broken application must not break the others
        _MISSING[name] = f"import failed: {type(e).__name__}: {e}"
        warnings.warn(f"indep_seg.training.experiments: could not import {full}; its experiments are unavailable:\n"
                      + traceback.format_exc(), RuntimeWarning, stacklevel=2)


def missing_modules() -> dict[str, str]:
    """{module name: why it is not loaded} for the application modules that did not register."""
    return dict(_MISSING)


for _name in APPLICATION_MODULES:
    _load(_name)
