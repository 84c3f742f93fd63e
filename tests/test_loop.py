"""indep_seg.training.loop on the toy GAN (default strategy, in process): run directory, resume,
crash safety."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from indep_seg.training.context import TrainContext
from indep_seg.training.experiments.toy import ToyConfig, ToyGAN, build_toy, toy_dataset, train_toy
from indep_seg.training.loop import (
    Checkpointer,
    collect_seed_generators,
    image_grid,
    read_jsonl,
    run_fit,
    step_outputs,
    write_png,
)

TINY = dict(steps=12, checkpoint_every=4, keep_checkpoints=2, log_every=2, image_every=6)


def _train(model_dir, seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    ctx = TrainContext(model_dir=model_dir, seed=seed, extra={"verbose": False})
    cfg = ToyConfig(**{**TINY, **overrides})
    result = train_toy(cfg, ctx)
    return result, ctx.extra["model"]


def _weights(model):
    return [v.numpy() for v in model.generator.weights + model.discriminator.weights]


def test_run_directory_contents(tmp_path):
    result, model = _train(tmp_path / "run")
    run = tmp_path / "run"
    assert result["step"] == 12 and result["resumed_from"] == 0 and not result["stopped_by_budget"]
    assert np.isfinite(result["d_loss"]) and np.isfinite(result["g_loss"])
    # checkpoints: 12 steps / every 4 -> 4, 8, 12; the last 2 kept
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    assert [p.rsplit("-", 1)[1] for p in state.all_model_checkpoint_paths] == ["8", "12"]
    # PNG grids, stylegan2-ada names; reals are the first batch, 8 px squares + 1 px padding
    for name in ("reals.png", "fakes000000.png", "fakes000006.png", "fakes000012.png"):
        assert (run / name).is_file(), name
    reals = np.asarray(Image.open(run / "reals.png"))
    assert reals.shape == (8, 8 * 8 + 7, 3)
    first = toy_dataset(8, 8, 0).take(1).get_single_element().numpy()
    np.testing.assert_array_equal(
        reals[:, :8], (np.clip(first[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    )
    fakes = np.asarray(Image.open(run / "fakes000012.png"))
    assert fakes.shape == (2 * 8 + 1, 8 * 8 + 7, 3)
    # stats.jsonl every 2 steps; metric-<name>.jsonl at every checkpoint step
    stats = read_jsonl(run / "stats.jsonl")
    assert [r["step"] for r in stats] == [2, 4, 6, 8, 10, 12]
    assert all({"d_loss", "g_loss", "steps_per_s"} <= set(r) for r in stats)
    metric = read_jsonl(run / "metric-mean_intensity.jsonl")
    assert [r["step"] for r in metric] == [4, 8, 12]
    assert metric[-1]["metric"] == "mean_intensity"
    expected = float(np.mean(model.generator(model.preview_z).numpy()))
    assert metric[-1]["results"]["mean_intensity"] == pytest.approx(expected, abs=1e-6)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "stopped at step 12" in (run / "log.txt").read_text()
    assert not list(run.rglob("*.tmp-*"))


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    full, full_model = _train(tmp_path / "full", steps=12)
    first, _ = _train(tmp_path / "split", steps=8)
    assert first["step"] == 8
    # as if killed at step 11, after the checkpoint at 8: a logged line for 10 and a torn one
    with open(tmp_path / "split" / "stats.jsonl", "a") as f:
        f.write(json.dumps({"step": 10, "d_loss": 9.0}) + "\n" + '{"step": 1')
    second, split_model = _train(tmp_path / "split", steps=12)
    assert second["resumed_from"] == 8 and second["step"] == 12
    for a, b in zip(_weights(full_model), _weights(split_model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the RNG state continued too: the same number of draws as the uninterrupted run
    np.testing.assert_array_equal(
        full_model.seed_generator.state.numpy(), split_model.seed_generator.state.numpy()
    )
    assert (
        full_model.d_optimizer.iterations.numpy()
        == split_model.d_optimizer.iterations.numpy()
        == 12
    )
    # the log lines of the lost steps were dropped and written again by the resumed run
    stats = read_jsonl(tmp_path / "split" / "stats.jsonl")
    assert [r["step"] for r in stats] == [2, 4, 6, 8, 10, 12]
    assert stats[4]["d_loss"] != 9.0
    again, _ = _train(tmp_path / "split", steps=12)  # nothing left to do
    assert again["step"] == 12 and again["resumed_from"] == 12


def _model(tmp_path, **overrides):
    keras.utils.set_random_seed(0)
    ctx = TrainContext(model_dir=tmp_path, extra={"verbose": False})
    return build_toy(ToyConfig(**{**TINY, **overrides}), ctx)


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    model = _model(tmp_path)
    ckpt = Checkpointer(model, tmp_path)
    ckpt.save(4)
    ckpt.save(8)
    data = tmp_path / "checkpoints" / "ckpt-8.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:20])  # truncated, as after a disk failure
    messages = []
    assert Checkpointer(_model(tmp_path), tmp_path).restore(log=messages.append) == 4
    assert any("ckpt-8 cannot be read" in m and "restored the older" in m for m in messages)
    # nothing readable at all: an error, never a silent restart that would overwrite the run
    (tmp_path / "checkpoints" / "ckpt-4.index").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the checkpoints in .* can be read"):
        Checkpointer(_model(tmp_path), tmp_path).restore()


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    Checkpointer(_model(tmp_path), tmp_path).save(4)
    with pytest.raises(ValueError, match="does not match the model"):
        Checkpointer(_model(tmp_path, hidden=16), tmp_path).restore()


def test_checkpoint_restores_rng_and_spectral_norm_state(tmp_path):
    keras.utils.set_random_seed(0)
    ctx = TrainContext(model_dir=tmp_path, extra={"verbose": False})
    model = build_toy(ToyConfig(**TINY), ctx)
    sn = model.discriminator.layers[1]
    model.seed_generator.state.assign([5, 9])
    sn.vector_u.assign(tf.ones_like(sn.vector_u))
    Checkpointer(model, tmp_path).save(3)
    model.seed_generator.state.assign([0, 0])
    sn.vector_u.assign(tf.zeros_like(sn.vector_u))
    assert Checkpointer(model, tmp_path).restore() == 3
    np.testing.assert_array_equal(model.seed_generator.state.numpy(), [5, 9])
    np.testing.assert_array_equal(sn.vector_u.numpy(), np.ones(sn.vector_u.shape))


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    ctx = TrainContext(model_dir=tmp_path, budget_minutes=0.5 / 60, extra={"verbose": False})
    result = train_toy(
        ToyConfig(steps=10**7, checkpoint_every=10**6, log_every=10**6, image_every=0), ctx
    )
    assert result["stopped_by_budget"] is True
    assert 0 < result["step"] < 10**7
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith(f"ckpt-{result['step']}")


def test_image_grid_does_not_move_the_training_rng(tmp_path):
    class Drawing(ToyGAN):
        def image_grid(self, batch):  # a careless grid that draws from the training generator
            z = keras.random.normal((4, self.config.latent_dim), seed=self.seed_generator)
            return image_grid(self.generator(z).numpy())

    keras.utils.set_random_seed(0)
    ctx = TrainContext(model_dir=tmp_path, extra={"verbose": False})
    with ctx.strategy.scope():
        model = Drawing(ToyConfig(), seed=0)
        model.compile(
            d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3)
        )
        model.build_optimizers()
    before = model.seed_generator.state.numpy().copy()
    run_fit(
        model,
        lambda s: toy_dataset(8, 8, 0, s),
        ctx,
        total_steps=0 + 1,
        checkpoint_every=1,
        image_every=1,
        verbose=False,
    )
    # one train step draws two latent batches: the state advanced exactly as without grids
    sg = keras.random.SeedGenerator(0)
    sg.state.assign(before)
    keras.random.normal((8, 8), seed=sg)
    keras.random.normal((8, 8), seed=sg)
    np.testing.assert_array_equal(model.seed_generator.state.numpy(), sg.state.numpy())


def test_step_outputs_and_helpers(tmp_path):
    out = step_outputs({"a": tf.constant(1.5), "b": tf.constant([2.0]), "n": tf.constant(3)})
    assert {k: v.shape.as_list() for k, v in out.items()} == {"a": [], "b": [], "n": []}
    assert out["n"].dtype == tf.float32 and float(out["b"]) == 2.0
    # (shape [1] under MultiWorkerMirroredStrategy: tests/test_distributed_multi_worker*.py fit
    # with real worker processes, which fails on scalars)
    with pytest.raises(ValueError, match=r"logs\['v'\]: expected a scalar"):
        step_outputs({"v": tf.zeros([3])})
    grid = image_grid(np.ones((5, 2, 3, 1), np.float32), columns=3)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2, 3) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 255 and grid[2, 0, 0] == 0 and grid[3, 8, 0] == 0  # padding, empty cell
    with pytest.raises(ValueError, match=r"images: expected \[N, H, W, C\]"):
        image_grid(np.zeros((2, 4, 4, 2)))
    path = write_png(tmp_path / "g.png", grid)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)
    model = ToyGAN(ToyConfig())
    assert list(collect_seed_generators(model)) == ["sg0"]


def test_run_fit_validates_its_arguments(tmp_path):
    ctx = TrainContext(model_dir=tmp_path)
    model = build_toy(ToyConfig(), ctx)
    with pytest.raises(ValueError, match="total_steps: expected a non-negative int"):
        run_fit(model, toy_dataset(8, 8, 0), ctx, total_steps=-1)
    with pytest.raises(ValueError, match="checkpoint_every: expected an int >= 1"):
        run_fit(model, toy_dataset(8, 8, 0), ctx, total_steps=3, checkpoint_every=0)
    with pytest.raises(TypeError, match="dataset: expected a tf.data.Dataset"):
        run_fit(model, [1, 2], ctx, total_steps=3)
    unbuilt = ToyGAN(ToyConfig())
    unbuilt.compile(d_optimizer=keras.optimizers.Adam(), g_optimizer=keras.optimizers.Adam())
    with pytest.raises(ValueError, match="the optimizer is not built"):
        run_fit(unbuilt, toy_dataset(8, 8, 0), ctx, total_steps=3)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_diverged_step_is_never_checkpointed(tmp_path):
    class Exploding(ToyGAN):
        def train_step(self, real):
            logs = super().train_step(real)
            it = tf.cast(self.d_optimizer.iterations, tf.float32)
            return {k: tf.where(it >= 6.0, np.nan, v) for k, v in logs.items()}

    keras.utils.set_random_seed(0)
    ctx = TrainContext(model_dir=tmp_path, extra={"verbose": False})
    with ctx.strategy.scope():
        model = Exploding(ToyConfig(), seed=0)
        model.compile(
            d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3)
        )
        model.build_optimizers()
    result = run_fit(
        model,
        lambda s: toy_dataset(8, 8, 0, s),
        ctx,
        total_steps=20,
        checkpoint_every=3,
        image_every=0,
        verbose=False,
    )
    assert result["diverged"] is True and result["step"] == 6 and result["last_checkpoint"] == 3
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
    assert "non-finite d_loss, g_loss at step 6" in (tmp_path / "log.txt").read_text()


def test_wrapper_without_call_is_marked_built_and_unbuilt_layers_are_named(tmp_path):
    class Unflagged(ToyGAN):
        def __init__(self, *args, extra_layer=False, **kwargs):
            super().__init__(*args, **kwargs)
            self.built = False  # as a wrapper that forgot the flag
            self.stateless = keras.layers.Activation(
                "relu", name="stateless"
            )  # no build(): marked built
            if extra_layer:
                self.head = keras.layers.Dense(3, name="never_built_head")

    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0"]
    )  # any tf.distribute strategy triggers the build
    for extra in (False, True):
        keras.utils.set_random_seed(0)
        ctx = TrainContext(
            model_dir=tmp_path / str(extra), strategy=strategy, extra={"verbose": False}
        )
        with strategy.scope():
            model = Unflagged(ToyConfig(), extra_layer=extra)
            model.compile(
                d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.Adam(1e-3)
            )
            model.build_optimizers()

        def fit():
            return run_fit(
                model,
                lambda s: toy_dataset(8, 8, 0, s),
                ctx,
                total_steps=2,
                checkpoint_every=2,
                image_every=0,
                verbose=False,
            )

        if extra:
            with pytest.raises(
                ValueError, match="layers not built before training: never_built_head"
            ):
                fit()
        else:
            assert fit()["step"] == 2
            assert model.stateless.built
