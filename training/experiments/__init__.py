"""Imports every application's experiment module so that its presets get registered.

One module per application (`box_seg`, `ilsgan`, `hoc`) plus `toy` (a 2-layer GAN on synthetic
data used by the training-infrastructure tests) and `tiny` (the applications' `<app>_tiny` presets
of the distribution tests). Every module is imported here, plainly: a module that fails to import
raises its error at once (naming the module and line), rather than leaving its experiments
silently unavailable and the tests that need them skipped.
"""

from __future__ import annotations

from indep_seg.training.experiments import box_seg, hoc, ilsgan, tiny, toy  # noqa: F401  (registration)

APPLICATION_MODULES = ("toy", "box_seg", "ilsgan", "hoc", "tiny")
