"""`TrainContext`: what the `train` command hands to an experiment's `train_fn(config, ctx)`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tensorflow as tf

from indep_seg.training.strategy import is_chief

__all__ = ["TrainContext"]


@dataclasses.dataclass
class TrainContext:
    """Run-level options, separate from the experiment's config.

    Attributes:
        model_dir: the run directory (checkpoints, TensorBoard logs, PNG grids, config.yaml).
        data: `--data PATH` (None: the experiment's default data).
        steps: `--steps N`, total optimisation steps of the run counted from step 0 (a resumed run
            trains only the remaining ones); None: the config's own number.
        budget_minutes: `--budget-minutes M`, wall-clock budget of this process (None: no budget).
        strategy: the `tf.distribute.Strategy`; build models and optimizers inside
        `strategy.scope()`.
        seed: `--seed S` (also applied with `keras.utils.set_random_seed` by the command).
        extra: free-form run options (e.g. `checkpoint_every` for tests).
    """

    model_dir: Path
    data: str | None = None
    steps: int | None = None
    budget_minutes: float | None = None
    strategy: Any = None
    seed: int = 0
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.model_dir = Path(self.model_dir)
        if self.strategy is None:
            self.strategy = tf.distribute.get_strategy()
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 0):
            raise ValueError(f"steps: expected a non-negative int or None, got {self.steps!r}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ValueError(
                f"budget_minutes: expected a positive number or None, got {self.budget_minutes!r}"
            )

    @property
    def num_replicas(self) -> int:
        """Replicas in sync (all devices of all workers)."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        """True on the worker that writes logs, PNGs and the real checkpoints."""
        return is_chief(self.strategy)

    def resolve_steps(self, config_steps: int) -> int:
        """`--steps` if given, else the config's number of steps."""
        return int(self.steps) if self.steps is not None else int(config_steps)
