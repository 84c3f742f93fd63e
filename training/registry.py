"""The experiment registry: named presets, each a default config plus a train function.

Each application registers its presets in `training/experiments/<app>.py`:

    from indep_seg.training.registry import register_experiment
    register_experiment("box_seg", BoxSegConfig(), train_box_seg,
                        "box-level masks (Dai et al. 2019, Sec. 3.1)")

`train_fn(config, ctx) -> dict` gets the resolved dataclass config and a
`indep_seg.training.context.TrainContext`, and returns the final metrics (JSON-serialisable floats).
`get_experiment(name)` imports `indep_seg.training.experiments` first, so every registered module
is loaded.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

__all__ = [
    "Experiment",
    "UnknownExperimentError",
    "register_experiment",
    "get_experiment",
    "list_experiments",
    "unregister_experiment",
]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One named preset: `default_config` (dataclass instance), `train_fn(config, ctx) -> dict`."""

    name: str
    default_config: Any
    train_fn: Callable
    description: str = ""


class UnknownExperimentError(KeyError):
    """`get_experiment` was given a name nobody registered; the message lists the known ones."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def register_experiment(
    name: str, default_config, train_fn: Callable, description: str = "", replace: bool = False
) -> Experiment:
    """Register preset `name`. Raises ValueError if `name` is taken (unless `replace=True`)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"name: expected lower-case letters, digits and '_' starting with a letter, "
            f"got {name!r}"
        )
    if not dataclasses.is_dataclass(default_config) or isinstance(default_config, type):
        raise TypeError(
            f"default_config: expected a dataclass instance, got {type(default_config).__name__}"
        )
    if not callable(train_fn):
        raise TypeError(
            f"train_fn: expected a callable train_fn(config, ctx) -> dict, got "
            f"{type(train_fn).__name__}"
        )
    if not isinstance(description, str):
        raise TypeError(f"description: expected a string, got {type(description).__name__}")
    if name in _REGISTRY and not replace:
        existing = _REGISTRY[name]
        # Re-importing the same module (e.g. importlib.reload) re-registers the same function.
        if getattr(existing.train_fn, "__qualname__", None) != getattr(
            train_fn, "__qualname__", 0
        ) or getattr(existing.train_fn, "__module__", None) != getattr(train_fn, "__module__", 0):
            raise ValueError(
                f"name: experiment {name!r} is already registered "
                f"(by {existing.train_fn.__module__}.{existing.train_fn.__qualname__})"
            )
    exp = Experiment(name, default_config, train_fn, description)
    _REGISTRY[name] = exp
    return exp


def unregister_experiment(name: str) -> None:
    """Remove `name` (for tests); no error if absent."""
    _REGISTRY.pop(name, None)


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import indep_seg.training.experiments  # noqa: F401  (registers every application's presets)


def list_experiments() -> list[Experiment]:
    """All registered experiments, sorted by name."""
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_experiment(name: str) -> Experiment:
    """The experiment registered as `name`; UnknownExperimentError listing the known names
    otherwise."""
    _load_all()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise UnknownExperimentError(
            f"experiment: unknown name {name!r}; known experiments: {known}"
        )
    return _REGISTRY[name]
