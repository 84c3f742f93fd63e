"""`indep-seg train`: train a named experiment; resumes from `--model-dir` if it holds a checkpoint.

    indep-seg train --experiment NAME --model-dir DIR [--data PATH] [--steps N]
        [--budget-minutes M] [--strategy default|mirrored|multi_worker] [--config FILE.yaml]
        [--override key=value ...] [--seed S]
    indep-seg train --list

Options are resolved as preset -> `--config` YAML -> `--override`s (dotted keys for nested
configs) and written to `MODEL_DIR/config.yaml` with the run options. Started again on a directory
that has a `config.yaml`, the stored options are the starting point (so the same short command
resumes the same run) and the experiment must be the same. The final metrics are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from indep_seg.commands import CommandError

STRATEGY_CHOICES = ("default", "mirrored", "multi_worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", "-e", help="registered experiment name (see --list)")
    parser.add_argument(
        "--model-dir", help="run directory: checkpoints, logs, PNG grids, config.yaml"
    )
    parser.add_argument(
        "--data", default=None, help="data path (default: the experiment's own data)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="total steps of the run (default: the config's)"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="stop (with a checkpoint) after this many minutes of training",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGY_CHOICES,
        default=None,
        help="tf.distribute strategy; multi_worker reads TF_CONFIG (default: default)",
    )
    parser.add_argument("--config", default=None, help="YAML file of options (a subset is fine)")
    parser.add_argument(
        "--override",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="set one option, dotted keys for nested configs (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument(
        "--masks",
        default=None,
        help="box-level experiments: a mask folder to take boxes from (pixels never used)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and count) unreadable images and bad boxes instead of stopping",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the registered experiments and exit"
    )


def _list() -> int:
    from indep_seg.training.registry import list_experiments

    for exp in list_experiments():
        print(f"{exp.name:20s} {exp.description}")
    return 0


def _stored_run(model_dir: Path) -> dict | None:
    path = model_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CommandError(
            f"--model-dir: {path} is not valid YAML ({e}); remove it or use another directory"
        ) from None
    return data if isinstance(data, dict) else None


def _checked_model_dir(args) -> Path:
    """The command line's own errors, before anything is read; returns --model-dir as a Path."""
    if not args.experiment:
        raise CommandError("--experiment is required (indep-seg train --list shows the names)")
    if not args.model_dir:
        raise CommandError("--model-dir is required")
    model_dir = Path(args.model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise CommandError(f"--model-dir: {model_dir} exists and is not a directory")
    if args.steps is not None and args.steps < 0:
        raise CommandError(f"--steps: expected a non-negative integer, got {args.steps}")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        raise CommandError(
            f"--budget-minutes: expected a positive number, got {args.budget_minutes}"
        )
    if args.config is not None and not Path(args.config).is_file():
        raise CommandError(f"--config: file {args.config} does not exist")
    return model_dir


def _run_options(args, stored: dict | None, model_dir: Path) -> tuple:
    """(seed, data, steps): the command line's, else the stored run's (same experiment only)."""
    stored_run = (stored or {}).get("run") or {}
    if stored and stored.get("experiment") not in (None, args.experiment):
        raise CommandError(
            f"--model-dir: {model_dir} holds a run of experiment {stored.get('experiment')!r}, "
            f"not {args.experiment!r}; use another directory"
        )
    seed = args.seed if args.seed is not None else int(stored_run.get("seed", 0))
    data = args.data if args.data is not None else stored_run.get("data")
    steps = args.steps if args.steps is not None else stored_run.get("steps")
    return seed, data, steps


def _make_strategy(strategy_name: str):
    """The tf.distribute strategy of --strategy; a CommandError for an unusable one."""
    from indep_seg.training.strategy import make_strategy

    try:
        return make_strategy(strategy_name)
    except ValueError as e:
        raise CommandError(str(e)) from None


def _experiment(name: str):
    """The registered experiment called `name`; a CommandError listing the names otherwise."""
    from indep_seg.training.registry import UnknownExperimentError, get_experiment

    try:
        return get_experiment(name)
    except UnknownExperimentError as e:
        raise CommandError(str(e)) from None


def _resolve_config(exp, args, stored: dict | None, model_dir: Path):
    """The experiment's preset, then --config (else the stored config.yaml), then --override."""
    from indep_seg.training.config import ConfigError, apply_overrides, resolve_config

    try:
        if args.config is not None:
            return resolve_config(exp.default_config, args.config, args.override)
        if stored and isinstance(stored.get("config"), dict):
            return resolve_config(exp.default_config, model_dir / "config.yaml", args.override)
        return apply_overrides(exp.default_config, args.override)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def _extra_options(args) -> dict:
    """The experiment-specific options of the command line (--masks, --skip-bad)."""
    extra = {}
    if args.masks:
        if not Path(args.masks).is_dir():
            raise CommandError(f"--masks: {args.masks} is not a directory")
        extra["masks"] = str(args.masks)
    if args.skip_bad:
        extra["skip_bad"] = True
    return extra


def _save_run_config(exp, config, ctx, strategy_name: str) -> None:
    """The chief writes MODEL_DIR/config.yaml: experiment, run options and resolved config."""
    from indep_seg.training.config import save_yaml, to_dict
    from indep_seg.training.strategy import is_chief

    if not is_chief(ctx.strategy):
        return
    ctx.model_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(
        {
            "experiment": exp.name,
            "run": {
                "data": ctx.data,
                "steps": ctx.steps,
                "budget_minutes": ctx.budget_minutes,
                "strategy": strategy_name,
                "seed": ctx.seed,
                "replicas": int(ctx.strategy.num_replicas_in_sync),
                "command": " ".join(["indep-seg"] + sys.argv[1:]),
            },
            "config": to_dict(config),
        },
        ctx.model_dir / "config.yaml",
    )


def _train(exp, config, ctx) -> dict:
    """The experiment's train_fn; a bad --data becomes a CommandError naming the file."""
    from indep_seg.data.files import (
        DataError,  # (the indep_seg.data package imports TensorFlow)
    )

    try:
        return exp.train_fn(config, ctx) or {}
    except (DataError, FileNotFoundError) as e:  # bad --data: a clear message naming the file
        raise CommandError(str(e)) from None


def run(args) -> int:
    if args.list:
        return _list()
    model_dir = _checked_model_dir(args)
    stored = _stored_run(model_dir)
    seed, data, steps = _run_options(args, stored, model_dir)
    strategy_name = args.strategy or "default"
    # The strategy first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = _make_strategy(strategy_name)

    import keras

    from indep_seg.training.context import TrainContext

    exp = _experiment(args.experiment)
    config = _resolve_config(exp, args, stored, model_dir)
    keras.utils.set_random_seed(seed)
    ctx = TrainContext(
        model_dir=model_dir,
        data=data,
        steps=steps,
        budget_minutes=args.budget_minutes,
        strategy=strategy,
        seed=seed,
        extra=_extra_options(args),
    )
    _save_run_config(exp, config, ctx, strategy_name)
    result = _train(exp, config, ctx)
    print(
        json.dumps(
            {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool, type(None)))},
            sort_keys=True,
        )
    )
    return 0
