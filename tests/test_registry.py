"""indep_seg.training.registry and indep_seg.training.experiments: named presets, unknown names, missing modules."""
from __future__ import annotations

import dataclasses

import pytest

from indep_seg.training.registry import (UnknownExperimentError, get_experiment, list_experiments, register_experiment,
                               unregister_experiment)


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
    register_experiment(scratch_name, _Cfg(steps=5), _train)  # same function re-registering: allowed
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


def test_missing_application_modules_are_reported_not_silent(monkeypatch):
    import indep_seg.training.experiments as exps

    monkeypatch.setattr(exps, "_MISSING", {"ilsgan": "training/experiments/ilsgan.py is not written yet"})
    with pytest.raises(UnknownExperimentError, match=r"not loaded: ilsgan \(training/experiments/ilsgan.py"):
        get_experiment("ilsgan_not_there")


def test_broken_module_warns_and_is_recorded(monkeypatch, tmp_path):
    import sys

    import indep_seg.training.experiments as exps

    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(exps, "__name__", "fakepkg")
    monkeypatch.setattr(exps, "_MISSING", {})
    with pytest.warns(RuntimeWarning, match="could not import fakepkg.broken"):
        exps._load("broken")
    exps._load("absent")
    missing = exps.missing_modules()
    assert "RuntimeError: boom at import" in missing["broken"]
    assert "absent.py is not written yet" in missing["absent"]
    sys.modules.pop("fakepkg", None)
