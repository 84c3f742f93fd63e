"""indep_seg.training.config: dataclass presets, YAML files, --override with type coercion and clear
errors."""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import yaml

from indep_seg.training.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_yaml,
    parse_override,
    resolve_config,
    save_yaml,
    to_dict,
)


@dataclasses.dataclass
class Optim:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.99)


@dataclasses.dataclass
class Cfg:
    batch_size: int = 8
    name: str = "run"
    use_ada: bool = False
    widths: tuple[int, ...] = (32, 64)
    tags: list[str] = dataclasses.field(default_factory=list)
    limit: int | None = None
    old_style: Optional[float] = 1.5
    extra: dict = dataclasses.field(default_factory=dict)
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_overrides_coerce_to_field_types():
    cfg = apply_overrides(
        Cfg(),
        [
            "batch_size=16",
            "name=abc",
            "use_ada=true",
            "widths=16,32,64",
            "tags=[a, b]",
            "limit=7",
            "old_style=none",
            "optim.lr=1e-3",
            "optim.betas=[0.0, 0.9]",
            "extra={k: 2}",
        ],
    )
    assert cfg.batch_size == 16 and isinstance(cfg.batch_size, int)
    assert cfg.name == "abc"
    assert cfg.use_ada is True
    assert cfg.widths == (16, 32, 64)
    assert cfg.tags == ["a", "b"]
    assert cfg.limit == 7
    assert cfg.old_style is None
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.0, 0.9)
    assert cfg.extra == {"k": 2}


def test_overrides_do_not_modify_the_preset_and_later_ones_win():
    preset = Cfg()
    cfg = apply_overrides(preset, ["batch_size=4", "batch_size=12"])
    assert cfg.batch_size == 12
    assert preset.batch_size == 8 and preset.optim.lr == 2e-4


@pytest.mark.parametrize(
    "text, match",
    [
        ("nope=1", r"nope: unknown key; Cfg has batch_size"),
        ("optim.momentum=0.9", r"optim.momentum: unknown key; Optim has optim.betas, optim.lr"),
        ("batch_size=abc", r"batch_size: expected an int, got 'abc'"),
        ("batch_size=1.5", r"batch_size: expected an int"),
        ("use_ada=maybe", r"use_ada: expected a bool"),
        ("optim.lr=fast", r"optim.lr: expected a float, got 'fast'"),
        ("optim.betas=0.1", r"optim.betas: expected 2 values"),
        ("widths=1,x", r"widths\[1\]: expected an int"),
        ("limit=none_of_that", r"limit: expected int \| None"),
        ("batch_size.x=1", r"batch_size: is a int, not a nested config"),
        ("optim=3", r"optim: is a nested config \(Optim\); set its fields as optim.<name>=value"),
        ("no_equals_sign", r"--override: expected key=value"),
        ("=3", r"--override: expected key=value with a \(dotted\) key"),
    ],
)
def test_override_errors_name_the_key_and_value(text, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Cfg(), [text])


def test_bool_and_none_spellings():
    for text, expected in [("yes", True), ("0", False), ("False", False), ("ON", True)]:
        assert apply_overrides(Cfg(), [f"use_ada={text}"]).use_ada is expected
    assert apply_overrides(Cfg(limit=3), ["limit=null"]).limit is None
    # a str field keeps the text "none" as text
    assert apply_overrides(Cfg(), ["name=none"]).name == "none"


def test_parse_override_keeps_equals_in_the_value():
    assert parse_override("name=a=b") == ("name", "a=b")


def test_yaml_roundtrip_and_resolution_order(tmp_path):
    cfg = apply_overrides(Cfg(), ["widths=4,8", "optim.lr=0.5", "limit=3"])
    path = save_yaml(cfg, tmp_path / "c.yaml")
    assert not list(tmp_path.glob("*.tmp-*"))  # atomic write leaves no temp file
    data = yaml.safe_load(path.read_text())
    assert data["widths"] == [4, 8] and data["optim"] == {"lr": 0.5, "betas": [0.5, 0.99]}
    assert from_dict(Cfg, data) == cfg
    # preset -> file (partial) -> overrides
    partial = tmp_path / "p.yaml"
    partial.write_text("batch_size: 32\noptim:\n  lr: 0.01\n")
    out = resolve_config(Cfg(), partial, ["optim.lr=0.02"])
    assert out.batch_size == 32 and out.optim.lr == 0.02 and out.optim.betas == (0.5, 0.99)
    # a run's config.yaml (experiment / run / config) is unwrapped
    run_yaml = tmp_path / "config.yaml"
    save_yaml({"experiment": "x", "run": {"seed": 1}, "config": to_dict(cfg)}, run_yaml)
    assert resolve_config(Cfg(), run_yaml) == cfg


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("optim:\n  wd: 1\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: optim.wd: unknown key"):
        resolve_config(Cfg(), unknown)
    typed = tmp_path / "typed.yaml"
    typed.write_text("batch_size: eight\n")
    with pytest.raises(ConfigError, match=r"typed.yaml: batch_size: expected an int, got 'eight'"):
        resolve_config(Cfg(), typed)


def test_rejects_non_dataclasses():
    with pytest.raises(TypeError, match="expected a dataclass instance"):
        apply_overrides({"a": 1}, ["a=2"])
    with pytest.raises(TypeError, match="expected a dataclass instance"):
        to_dict(Cfg)
