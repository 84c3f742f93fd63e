"""The subcommands of `indep-seg` (the CLI layer, docs/ARCHITECTURE.md "Layers"): one module per
subcommand (`add_arguments(parser)`, `run(args) -> int`, listed in `indep_seg.cli.SUBCOMMANDS`),
plus `predictor` (whatever `--model PATH` / `--server` names -> masks).

A subcommand module imports at its top only what loads without TensorFlow (the standard library,
numpy, PIL, `indep_seg.imageio`, this package): `indep-seg SUBCOMMAND --help` imports the module
and must answer at once (tests/test_cli_quiet.py). The TensorFlow-backed layers
(`indep_seg.training`,
`indep_seg.serving`, the core's models and data) are imported inside `run()`.
"""


class CommandError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""
