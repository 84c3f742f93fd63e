"""`indep-seg train`: options resolution, config.yaml, resume with the stored options, user
errors."""

from __future__ import annotations

import json

import pytest
import yaml

from indep_seg.cli import main


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_list_shows_experiments(capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("toy ") and "2-layer GAN" in line for line in out.splitlines())
    assert any(line.startswith("ilsgan ") for line in out.splitlines())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model-dir", "{d}"], "--experiment is required"),
        (["train", "-e", "toy"], "--model-dir is required"),
        (["train", "-e", "nope", "--model-dir", "{d}"], "unknown name 'nope'; known experiments: "),
        (
            ["train", "-e", "toy", "--model-dir", "{d}", "--override", "hiden=3"],
            "hiden: unknown key; ToyConfig has",
        ),
        (
            ["train", "-e", "toy", "--model-dir", "{d}", "--override", "steps=ten"],
            "steps: expected an int, got 'ten'",
        ),
        (
            ["train", "-e", "toy", "--model-dir", "{d}", "--config", "{d}/missing.yaml"],
            "--config: file",
        ),
        (
            ["train", "-e", "toy", "--model-dir", "{d}", "--steps", "-1"],
            "--steps: expected a non-negative",
        ),
        (
            ["train", "-e", "toy", "--model-dir", "{d}", "--budget-minutes", "0"],
            "--budget-minutes: expected a positive",
        ),
        (["train", "-e", "toy", "--model-dir", "{d}/file.txt"], "exists and is not a directory"),
        (["train", "-e", "toy", "--model-dir", "{d}", "--strategy", "multi_worker"], "TF_CONFIG"),
        (
            ["train", "-e", "box_seg", "--model-dir", "{d}", "--masks", "{d}/no_such_dir"],
            "--masks: ",
        ),
    ],
)
def test_user_errors_exit_2_with_a_message(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    (tmp_path / "file.txt").write_text("x")
    code = main([a.replace("{d}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("indep-seg train: error: ") and message in err
    if "unknown name" in message:
        assert "toy" in err.split("known experiments:")[1]
    assert not (tmp_path / "config.yaml").exists()  # nothing written on a user error


def test_train_writes_config_and_resumes_with_stored_options(tmp_path, capsys):
    run = tmp_path / "run"
    cfg_file = tmp_path / "opts.yaml"
    cfg_file.write_text("hidden: 16\nlog_every: 2\n")
    code = main(
        [
            "train",
            "--experiment",
            "toy",
            "--model-dir",
            str(run),
            "--steps",
            "4",
            "--seed",
            "3",
            "--config",
            str(cfg_file),
            "--override",
            "checkpoint_every=2",
            "image_every=0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    result = _last_json(out)
    assert result["step"] == 4 and result["resumed_from"] == 0
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["experiment"] == "toy"
    assert (
        stored["run"]["seed"] == 3
        and stored["run"]["steps"] == 4
        and stored["run"]["strategy"] == "default"
    )
    assert stored["run"]["replicas"] == 1
    # preset <- file <- overrides
    assert stored["config"]["hidden"] == 16 and stored["config"]["log_every"] == 2
    assert stored["config"]["checkpoint_every"] == 2 and stored["config"]["image_every"] == 0
    assert stored["config"]["latent_dim"] == 8  # untouched preset value
    assert not list(run.glob("fakes*.png"))

    # the same short command continues the run with the stored options (hidden=16 must match)
    assert main(["train", "-e", "toy", "--model-dir", str(run), "--steps", "6"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["resumed_from"] == 4 and result["step"] == 6
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        stored["config"]["hidden"] == 16
        and stored["run"]["seed"] == 3
        and stored["run"]["steps"] == 6
    )

    # another experiment on the same directory is refused
    code = main(["train", "-e", "box_seg", "--model-dir", str(run)])
    assert code == 2
    assert "holds a run of experiment 'toy'" in capsys.readouterr().err
