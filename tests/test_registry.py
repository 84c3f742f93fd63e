"""indep_seg.training.registry and indep_seg.training.experiments: named presets, unknown names,
an experiment module that fails to import."""

from __future__ import annotations

import dataclasses

import pytest

from indep_seg.training.registry import (
    UnknownExperimentError,
    get_experiment,
    list_experiments,
    register_experiment,
    unregister_experiment,
)


@dataclasses.dataclass
class _Cfg:
    steps: int = 3


def _train(cfg, ctx):
    return {"steps": cfg.steps}


def _other_train(cfg, ctx):
    return {}


@pytest.fixture
def scratch_name():
    name = "zz_registry_test"
    yield name
    unregister_experiment(name)


def test_register_get_list(scratch_name):
    exp = register_experiment(scratch_name, _Cfg(), _train, "a test preset")
    assert get_experiment(scratch_name) is exp
    assert exp.train_fn(exp.default_config, None) == {"steps": 3}
    names = [e.name for e in list_experiments()]
    assert scratch_name in names and names == sorted(names)
    assert "toy" in names  # training/experiments/toy.py is always there


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownExperimentError) as info:
        get_experiment("no_such_experiment")
    msg = str(info.value)
    assert "unknown name 'no_such_experiment'" in msg
    assert "toy" in msg
    for e in list_experiments():
        assert e.name in msg


def test_duplicate_and_invalid_registrations(scratch_name):
    register_experiment(scratch_name, _Cfg(), _train)
    register_experiment(
        scratch_name, _Cfg(steps=5), _train
    )  # same function re-registering: allowed
    assert get_experiment(scratch_name).default_config.steps == 5
    with pytest.raises(ValueError, match="already registered"):
        register_experiment(scratch_name, _Cfg(), _other_train)
    register_experiment(scratch_name, _Cfg(), _other_train, replace=True)
    assert get_experiment(scratch_name).train_fn is _other_train
    with pytest.raises(ValueError, match="name: expected lower-case"):
        register_experiment("Bad-Name", _Cfg(), _train)
    with pytest.raises(TypeError, match="default_config: expected a dataclass instance"):
        register_experiment("zz_x", {"steps": 1}, _train)
    with pytest.raises(TypeError, match="train_fn: expected a callable"):
        register_experiment("zz_x", _Cfg(), "not callable")


def test_every_application_registers_its_presets():
    names = {e.name for e in list_experiments()}
    assert {
        "toy",
        "box_seg",
        "box_seg_paper",
        "box_seg_tiny",
        "ilsgan",
        "ilsgan_paper",
        "ilsgan_tiny",
        "hoc",
        "hoc_paper",
        "hoc_tiny",
    } <= names, sorted(names)


def test_a_broken_experiment_module_raises_instead_of_being_skipped(tmp_path):
    """An import error in an experiment module is an error of
    `import indep_seg.training.experiments`
    (and so of `indep-seg train`), never a warning that leaves its experiments missing."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import indep_seg.training.experiments as exps

    # a copy of the package's experiments folder with one module broken, imported in a fresh process
    src = Path(exps.__file__).parent
    fake = tmp_path / "fakeroot" / "indep_seg" / "training" / "experiments"
    shutil.copytree(src, fake, ignore=shutil.ignore_patterns("__pycache__"))
    (fake / "tiny.py").write_text("raise RuntimeError('boom at import')\n")
    script = (
        "import indep_seg.training as t\n"
        f"t.__path__.insert(0, {str(fake.parent)!r})\n"
        "import indep_seg.training.experiments\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "RuntimeError: boom at import" in r.stderr and "tiny.py" in r.stderr, r.stderr[-2000:]
