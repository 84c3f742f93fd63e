"""Experiments `hoc` / `hoc_paper`: settings resolved from Table 4 or from the image; a tiny run."""

import json

import numpy as np
import pytest

from indep_seg.training.experiments.hoc import PAPER_SETTINGS, HocConfig, hoc_paper_config, resolve
from indep_seg.training.registry import get_experiment
from tests._hoc_helpers import tiny_hoc_config


def _blob_image(n=12, size=128, r=5, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size), 0.05, np.float32)
    for _ in range(n):
        x, y = rng.integers(r, size - r, 2)
        img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = 0.7
    return np.repeat(img[..., None], 3, -1)


def test_registered():
    assert get_experiment("hoc").default_config.resolution == 32
    assert get_experiment("hoc_paper").default_config.resolution == 64


@pytest.mark.parametrize("setting", ["crowd", "fruit", "seed"])
def test_paper_settings_follow_table_4(setting):
    cfg = hoc_paper_config()
    cfg.setting = setting
    r = resolve(cfg, _blob_image())
    t = PAPER_SETTINGS[setting]
    assert (r["num_layers"], r["latent_dim"], r["a"], r["info_weight"], r["padding"]) == (
        t["num_layers"],
        t["latent_dim"],
        t["a"],
        50.0,
        t["padding"],
    )
    assert r["background"] == "disk" and r["disk_radius"] == 20.0
    assert r["area_weight"] == 1000.0 and r["binarization_weight"] == 0.0
    assert r["g_widths"] == (256, 256, 128, 64) and r["d_head"] == "conv1x1"


def test_auto_setting_follows_the_image_and_overrides_win():
    img = _blob_image()
    r = resolve(HocConfig(), img)
    est = r["estimate"]
    assert r["window"] == est["window"]
    assert r["a"] == pytest.approx(est["median_area"] / est["window"] ** 2)
    assert r["background"] == "inpaint"  # sparse image: background is visible
    assert r["num_layers"] >= 2 and r["padding"] >= 0.4 * r["resolution"]
    r2 = resolve(HocConfig(window=40, num_layers=3, a=0.2, background="disk"), img)
    assert (r2["window"], r2["num_layers"], r2["a"], r2["background"]) == (40, 3, 0.2, "disk")
    gray = np.repeat(np.asarray(img, np.float32).mean(-1, keepdims=True), 3, -1)
    tinted = gray * np.array([1.0, 0.9, 0.8], np.float32)
    assert resolve(HocConfig(), gray)["grayscale"] is True
    assert resolve(HocConfig(), tinted)["grayscale"] is False
    assert resolve(HocConfig(grayscale=False), gray)["grayscale"] is False


def test_window_larger_than_image_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"window: expected at most the image's smaller side \(128 px\), got 500"
    ):
        resolve(HocConfig(window=500), _blob_image())


@pytest.mark.slow
def test_tiny_run_writes_model_counter_and_figures(tmp_path):
    from PIL import Image

    from indep_seg.training.context import TrainContext

    path = tmp_path / "blobs.png"
    Image.fromarray((_blob_image(size=96)[..., 0] * 255).astype(np.uint8)).save(path)
    cfg = tiny_hoc_config()
    ctx = TrainContext(model_dir=tmp_path / "run", data=str(path), steps=2)
    out = get_experiment("hoc").train_fn(cfg, ctx)
    run = tmp_path / "run"
    for name in (
        "hoc.json",
        "generator.weights.h5",
        "counter/counter.keras",
        "counter/counter.json",
        "instances.png",
        "masks.png",
        "composites.png",
        "carved.png",
        "fakes000002.png",
    ):
        assert (run / name).exists(), name
    assert out["step"] == 2 and np.isfinite(out["g_loss"])
    assert json.loads((run / "counter" / "counter.json").read_text())["resolution"] == 16
