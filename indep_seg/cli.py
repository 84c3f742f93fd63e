"""The `indep-seg` command line: one entry point, one module per subcommand.

Each subcommand lives in `indep_seg/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`; the module is imported only when its
subcommand runs, so `indep-seg --help` stays fast and one broken subcommand cannot
break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys

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


class CommandError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="indep-seg",
        description="Segmentation masks without pixel labels, from composites of independent layers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    argv = sys.argv[1:]
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (its arguments are needed for parsing).
        if name in argv[:1]:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:])
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
