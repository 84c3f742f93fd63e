"""Imports run one way (docs/ARCHITECTURE.md, "Layers"; issue #20).

Every module of the package is read with `ast`, imports inside functions, classes, `try`
blocks and `if TYPE_CHECKING:` included, relative imports resolved, and
`importlib.import_module("...")` / `__import__("...")` with a literal name counted as imports:

    core     indep_seg.*  (paper maths, networks, models, data, segmenter, imageio, ...)
    layers   indep_seg.tfrecords_tools, indep_seg.training, indep_seg.serving: the core only
             (and themselves; they do not import each other)
    cli      indep_seg.cli, indep_seg.commands.*, indep_seg.__main__: anything
    nothing outside the CLI imports the CLI; the package never imports `tests` or `benchmarks`,
    nor the repository folders under their bare names (`training`, `serving`, `tfrecords_tools`).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# repository folder -> installed package name (setup.py's package_dir)
FOLDERS = {
    "indep_seg": "indep_seg",
    "training": "indep_seg.training",
    "serving": "indep_seg.serving",
    "tfrecords_tools": "indep_seg.tfrecords_tools",
}

LAYERS = {  # layer -> module-name prefixes (the longest matching prefix decides)
    "tfrecords_tools": ("indep_seg.tfrecords_tools",),
    "training": ("indep_seg.training",),
    "serving": ("indep_seg.serving",),
    "cli": ("indep_seg.cli", "indep_seg.commands", "indep_seg.__main__"),
    "core": ("indep_seg",),
}
ALLOWED = {  # layer -> the layers it may import
    "core": {"core"},
    "tfrecords_tools": {"core", "tfrecords_tools"},
    "training": {"core", "training"},
    "serving": {"core", "serving"},
    "cli": {"core", "tfrecords_tools", "training", "serving", "cli"},
}
# top-level names the installed package must never import
FORBIDDEN_TOP = {"tests", "benchmarks", "training", "serving", "tfrecords_tools"}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, or None for a module outside the package."""
    best, best_len = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """`(line, imported module)` for every import anywhere in `source` (function level too).

    `from a import b` yields `a.b` (b may be a submodule; for a layer check `a.b` and `a` lie
    in the same layer unless b is a subpackage of another layer, e.g. `from indep_seg import
    training`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else node.module
            )
            found += [
                (node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base)
                for alias in node.names
            ]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of `module` (source text) that break the layer order, one line each."""
    layer = layer_of(module)
    out = []
    for line, target in imports_of(source, module, is_package):
        top = target.split(".")[0]
        if top in FORBIDDEN_TOP:
            out.append(f"{module}:{line} imports {target} (outside the installed package)")
            continue
        target_layer = layer_of(target)
        if target_layer is not None and target_layer not in ALLOWED[layer]:
            out.append(f"{module}:{line} ({layer}) imports {target} ({target_layer})")
    return out


def package_modules():
    """(installed module name, path, is_package) of every .py file of the four folders."""
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            yield ".".join((package, *parts)), path, is_package


def test_every_module_is_read():
    names = {m for m, _, _ in package_modules()}
    assert {
        "indep_seg.losses",
        "indep_seg.training.loop",
        "indep_seg.serving.server",
        "indep_seg.tfrecords_tools.writer",
        "indep_seg.cli",
        "indep_seg.commands.train",
    } <= names
    assert len(names) > 80


def test_imports_run_one_way():
    problems = []
    for module, path, is_package in package_modules():
        problems += violations(module, path.read_text(encoding="utf-8"), is_package)
    assert not problems, "imports against the layer order (docs/ARCHITECTURE.md):\n" + "\n".join(
        problems
    )


# ----------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(
    "module, source",
    [
        # a core module importing training inside a function, hidden in try/except ImportError
        (
            "indep_seg.models.tiny",
            """
        def f():
            try:
                from indep_seg.training.loop import step_outputs
            except ImportError:
                return None
        """,
        ),
        ("indep_seg.models.tiny", "from ..training import loop\n"),  # relative
        ("indep_seg.models.tiny", "from indep_seg import serving\n"),  # subpackage by name
        ("indep_seg.models.tiny", "import indep_seg.tfrecords_tools.writer as w\n"),
        ("indep_seg.data.tiny", "import importlib\nm = importlib.import_module('indep_seg.cli')\n"),
        (
            "indep_seg.metrics_tiny",
            "class A:\n    def g(self):\n        import indep_seg.commands.train\n",
        ),
        (
            "indep_seg.serving.tiny",
            "from indep_seg.training.loop import run_fit\n",
        ),  # sibling layers
        ("indep_seg.training.tiny", "from indep_seg.serving import export\n"),
        ("indep_seg.tfrecords_tools.tiny", "from indep_seg.training import config\n"),
        (
            "indep_seg.training.tiny",
            "from indep_seg.cli import CommandError\n",
        ),  # nothing imports the CLI
        ("indep_seg.serving.tiny", "from .. import commands\n"),
        ("indep_seg.losses_tiny", "import training.loop\n"),  # the bare folder name
        ("indep_seg.losses_tiny", "from benchmarks import common\n"),
    ],
)
def test_checker_reports_a_violating_import(module, source):
    found = violations(module, textwrap.dedent(source))
    assert len(found) == 1, found
    assert found[0].startswith(module + ":")


@pytest.mark.parametrize(
    "module, source",
    [
        (
            "indep_seg.models.tiny",
            "import tensorflow as tf\nfrom indep_seg import losses\nfrom . import distiller\n",
        ),
        (
            "indep_seg.training.tiny",
            "from indep_seg.training.loop import run_fit\nfrom indep_seg.data import x\n",
        ),
        (
            "indep_seg.serving.tiny",
            "from .errors import clip\nfrom indep_seg.segmenter import Segmenter\n",
        ),
        (
            "indep_seg.commands.tiny",
            "from indep_seg.training import registry\nfrom indep_seg.serving import x\n"
            "from indep_seg.tfrecords_tools import y\nfrom indep_seg.cli import main\n",
        ),
        (
            "indep_seg.cli",
            "import importlib\nimportlib.import_module('indep_seg.commands.train')\n",
        ),
    ],
)
def test_checker_accepts_imports_down_the_layers(module, source):
    assert violations(module, source) == []


def test_relative_imports_resolve_from_packages_and_modules():
    assert imports_of("from . import a", "indep_seg.data", is_package=True) == [
        (1, "indep_seg.data.a")
    ]
    assert imports_of("from . import a", "indep_seg.data.readers") == [(1, "indep_seg.data.a")]
    assert imports_of("from ..training import loop", "indep_seg.models.x") == [
        (1, "indep_seg.training.loop")
    ]


def test_tests_and_benchmarks_import_the_layers_by_their_installed_names():
    """`training`, `serving` and `tfrecords_tools` are repository folders, installed only as
    `indep_seg.training` etc.: a bare import works from the repository root by accident only."""
    bare = {"training", "serving", "tfrecords_tools"}
    problems = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for line, target in imports_of(path.read_text(encoding="utf-8"), module):
                if target.split(".")[0] in bare:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not problems, "\n".join(problems)
