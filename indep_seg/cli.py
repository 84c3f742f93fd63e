"""The `indep-seg` command line: one entry point, one module per subcommand.

Each subcommand lives in `indep_seg/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`; the module is imported only when its
subcommand runs, so `indep-seg --help` stays fast and one broken subcommand cannot
break the others. Nothing here imports TensorFlow: `indep-seg --help` and
`indep-seg SUBCOMMAND --help` answer at once.

Quiet by default: TensorFlow's C++ and Python start-up logs are hidden (`indep_seg.quiet`)
unless `--verbose` is given, before or after the subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from indep_seg import quiet
from indep_seg.commands import CommandError

__all__ = ["SUBCOMMANDS", "CommandError", "build_parser", "main"]

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("indep_seg.commands.train", "train a named experiment (resumes from --model-dir)"),
    "segment": ("indep_seg.commands.segment", "write one mask PNG per input image"),
    "evaluate": ("indep_seg.commands.evaluate", "IoU / DICE of a model against ground-truth masks"),
    "count": ("indep_seg.commands.count", "count instances in one dense image"),
    "export": ("indep_seg.commands.export", "versioned SavedModel (and ONNX) of a trained model"),
    "serve": ("indep_seg.commands.serve", "TF-Serving-compatible gRPC / REST model server"),
    "tfrecords": ("indep_seg.commands.tfrecords", "convert folders or images to sharded TFRecords"),
    "demo": ("indep_seg.commands.demo", "the README's main job on the embedded default data"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="indep-seg",
        description="Segmentation masks without pixel labels, from composites of independent "
        "layers.",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show TensorFlow's start-up and C++ log lines (hidden by default)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show TensorFlow's start-up and C++ log lines (hidden by default)",
        )
        # Only the chosen subcommand's module is imported (its arguments are needed for parsing).
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    # Before any subcommand module (and so TensorFlow) is imported.
    verbose_flags = ("--verbose", "-v")
    quiet.configure(verbose=any(a in verbose_flags for a in sys.argv[1:]))
    parser = build_parser()
    # --verbose is read above; taken out here so that it is accepted anywhere on the line
    # (nested subcommands such as `tfrecords folder` included). Kept for --help's listing.
    argv = [
        a
        for a in sys.argv[1:]
        if a not in verbose_flags or "--help" in sys.argv or "-h" in sys.argv
    ]
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except CommandError as e:
        print(f"indep-seg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"indep-seg {args.command}: not implemented yet: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
