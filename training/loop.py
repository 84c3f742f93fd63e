"""The shared training loop: `model.fit` plus run-directory callbacks and crash-safe checkpoints.

    with ctx.strategy.scope():
        model = MyGAN(cfg)                 # self.built = True, SeedGenerators, loss trackers
        model.compile(d_optimizer=..., g_optimizer=...)
        model.build_optimizers()           # both optimizers built on their variables, in scope
    result = run_fit(model, dataset_fn, ctx, total_steps=ctx.resolve_steps(cfg.steps),
                     checkpoint_every=cfg.checkpoint_every)

A model used with `run_fit` implements
- `train_step(batch)` returning a dict of scalars; wrap it in `step_outputs(...)`, which gives them
  shape [1] under MultiWorkerMirroredStrategy (it cannot reduce scalars in `fit`: DESIGN.md
  section 4) and leaves them scalars elsewhere (Keras' TensorBoard callback needs scalars);
- `checkpoint_items() -> dict[str, trackable]`: networks, both optimizers, seed generators (a
  `keras.random.SeedGenerator` may be given directly), extra state variables (ADA probability...);
- `image_grid(batch) -> np.uint8 [H, W, 3]` for the PNG grids. It must not change training state:
  the loop saves and restores every SeedGenerator state around the call anyway.
- optionally `real_grid(batch) -> np.uint8 [H, W, 3]` for `reals.png` (default: a grid of the
  batch's images).

Run directory (`ctx.model_dir`), stylegan2-ada style:
- `config.yaml` (written by the train command), `log.txt`, `stats.jsonl` (training scalars every
  `log_every` steps), `metric-<name>.jsonl` (one line per evaluation of `metric_fns[name]`),
- `reals.png`, `fakes000000.png`, `fakes000500.png`, ... (`image_every`),
- `tensorboard/` (scalars every `log_every` steps, images with the PNGs),
- `checkpoints/ckpt-<step>.*` + `checkpoints/checkpoint` (tf.train.CheckpointManager, the last
  `keep_checkpoints` kept), each holding `checkpoint_items()`, the step counter and the state of
  every SeedGenerator found in the model.

Resume and crash safety: at start the newest readable checkpoint is restored (older ones are tried
if the newest cannot be read), so a run started again on the same directory continues at the saved
step. TensorFlow writes a checkpoint's files under a temporary name and only then atomically
rewrites the `checkpoint` index file, so a process killed at any moment leaves the previous
checkpoint as the latest one: at most `checkpoint_every` steps are lost. For the steps after a
resume to repeat an uninterrupted run exactly, pass `dataset` as a function `dataset_fn(start_step)`
returning the stream from that step on (the loop calls it with the restored step); a plain
`tf.data.Dataset` restarts from its beginning.

Distribution: the dataset yields *global* batches; Keras splits them across replicas and shards
them per worker. Under multi-worker training every worker saves (the non-chief ones into scratch
folders that are deleted, TensorFlow's pattern), only the chief writes logs and pictures, and the
time-budget stop is agreed on by all workers at the same step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

# step_outputs lives in the core (models use it) and is re-exported here for trainers.
from indep_seg.distribute import step_outputs
from indep_seg.gallery import tile_images
from indep_seg.training.strategy import is_chief, is_multi_worker, worker_dir

__all__ = [
    "run_fit",
    "step_outputs",
    "Checkpointer",
    "collect_seed_generators",
    "image_grid",
    "write_png",
    "RunCallback",
    "read_jsonl",
]


# ----------------------------------------------------------------------------- helpers for trainers


def collect_seed_generators(model) -> dict[str, keras.random.SeedGenerator]:
    """Every `keras.random.SeedGenerator` tracked by `model` and its sub-layers, keyed by a stable
    path of child indices (the same model code gives the same keys in another process)."""
    found: dict[str, keras.random.SeedGenerator] = {}
    seen: set[int] = set()

    def walk(layer, path):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for i, sg in enumerate(getattr(layer, "_seed_generators", []) or []):
            if id(sg) not in seen:
                seen.add(id(sg))
                found[f"{path}sg{i}"] = sg
        for j, child in enumerate(getattr(layer, "_layers", []) or []):
            walk(child, f"{path}{j}/")

    walk(model, "")
    return found


def image_grid(images, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tile `images` [N, H, W, C] (C in 1, 3, 4; float in [0, 1] or uint8) into one uint8 [H', W',
    3]
    (`indep_seg.gallery.tile_images`: black gutters of `padding` px, none around)."""
    return tile_images(images, columns, padding)


def write_png(path, grid: np.ndarray) -> Path:
    """Write uint8 [H, W, 3] (or [H, W]) as PNG, atomically (temp name + os.replace)."""
    from PIL import Image

    grid = np.asarray(grid)
    if grid.dtype != np.uint8 or grid.ndim not in (2, 3):
        raise ValueError(f"grid: expected uint8 [H, W] or [H, W, 3], got {grid.dtype} {grid.shape}")
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    Image.fromarray(grid).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def read_jsonl(path) -> list[dict]:
    """The JSON lines of `path`, skipping a torn last line (a run killed while appending)."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")


def _floats(logs: dict | None) -> dict:
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[k] = float(np.mean(np.asarray(v, dtype=np.float64)))
        except (TypeError, ValueError):
            continue
    return out


def _first_images(batch):
    """The image tensor of a batch: itself, `batch["image"]`, or the first element of a tuple."""
    if isinstance(batch, dict):
        for key in ("image", "images", "x"):
            if key in batch:
                return batch[key]
        return next(iter(batch.values()))
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


# ----------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """tf.train.Checkpoint over `model.checkpoint_items()` + step counter + SeedGenerator states,
    managed by tf.train.CheckpointManager in `model_dir/checkpoints` (non-chief workers: a scratch
    folder). `restore()` returns the restored step (0 when there is no checkpoint)."""

    def __init__(self, model, model_dir, strategy=None, keep_checkpoints: int = 5):
        if not hasattr(model, "checkpoint_items"):
            raise TypeError(
                f"model: {type(model).__name__} must implement checkpoint_items() -> dict"
            )
        if not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints: expected an int >= 1, got {keep_checkpoints!r}")
        self.model = model
        self.model_dir = Path(model_dir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = is_chief(self.strategy)
        items = model.checkpoint_items()
        if not isinstance(items, dict) or not items:
            raise TypeError(
                f"model.checkpoint_items(): expected a non-empty dict of name -> trackable, "
                f"got {type(items).__name__}"
            )
        reserved = {"step", "rng"} & set(items)
        if reserved:
            raise ValueError(
                f"model.checkpoint_items(): names {sorted(reserved)} are reserved by the loop"
            )
        tracked = {}
        for name, obj in items.items():
            if isinstance(obj, keras.random.SeedGenerator):
                obj = obj.state
            if isinstance(obj, keras.optimizers.Optimizer) and not obj.built:
                raise ValueError(
                    f"model.checkpoint_items()[{name!r}]: the optimizer is not built; build it on "
                    f"its variables inside strategy.scope() before training (DESIGN.md section 4)"
                )
            tracked[name] = obj
        self.seed_generators = collect_seed_generators(model)
        for name, obj in items.items():  # seed generators the model lists itself but does not track
            if isinstance(obj, keras.random.SeedGenerator) and all(
                sg is not obj for sg in self.seed_generators.values()
            ):
                self.seed_generators[f"item:{name}"] = obj
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        rng = {k: sg.state for k, sg in self.seed_generators.items()}
        self.checkpoint = tf.train.Checkpoint(step=self.step, rng=rng, **tracked)
        self.directory = worker_dir(self.model_dir, self.strategy) / "checkpoints"
        self.read_directory = self.model_dir / "checkpoints"
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.directory), max_to_keep=keep_checkpoints if self.chief else 1
        )

    @property
    def checkpoints(self) -> list[str]:
        """Paths (prefixes) of the kept checkpoints, oldest first."""
        state = tf.train.get_checkpoint_state(str(self.read_directory))
        return list(state.all_model_checkpoint_paths) if state else []

    def restore(self, log=print) -> int:
        """Restore the newest readable checkpoint of `model_dir`; returns its step (0 if none).

        A checkpoint that cannot be read (truncated / missing files) is reported and the next older
        one is tried. A checkpoint that does not match the model (another config) raises ValueError.
        """
        candidates = self.checkpoints
        errors = []
        for path in reversed(candidates):
            try:
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
            except AssertionError as e:
                raise ValueError(
                    f"model_dir: checkpoint {path} does not match the model (was the run started "
                    f"with another experiment or config?): {str(e)[:400]}"
                ) from None
            except ValueError as e:
                if "incompatible tensor" in str(e) or "shape" in str(e):
                    raise ValueError(
                        f"model_dir: checkpoint {path} does not match the model (was the run "
                        f"started with another experiment or config?): {str(e)[:400]}"
                    ) from None
                errors.append(f"{path}: {type(e).__name__}: {str(e)[:200]}")
            except Exception as e:  # truncated / missing files: OpError, IndexError...
                errors.append(f"{path}: {type(e).__name__}: {str(e)[:200]}")
            else:
                for err in errors:
                    log(
                        f"warning: checkpoint {err.split(': ', 1)[0]} cannot be read "
                        f"({err.split(': ', 1)[1]}); "
                        f"restored the older {path}"
                    )
                return int(self.step.numpy())
        if candidates:
            raise ValueError(
                f"model_dir: none of the checkpoints in {self.read_directory} can be read "
                f"({'; '.join(errors)}); move the folder away to start over"
            )
        return 0

    def save(self, step: int) -> str:
        """Save at `step` (every worker must call this at the same step under multi-worker)."""
        self.step.assign(int(step))
        path = self.manager.save(checkpoint_number=int(step))
        if not self.chief:  # TensorFlow's multi-worker pattern: only the chief's copy is kept
            shutil.rmtree(self.directory.parent, ignore_errors=True)
            try:
                # model_dir/.workers, once every worker is done
                self.directory.parent.parent.rmdir()
            except OSError:
                pass
        return path

    def rng_states(self) -> dict:
        return {k: sg.state.numpy() for k, sg in self.seed_generators.items()}

    def set_rng_states(self, states: dict) -> None:
        for k, v in states.items():
            self.seed_generators[k].state.assign(v)


# ----------------------------------------------------------------------------- the callback


class RunCallback(keras.callbacks.Callback):
    """Step counter, budget stop, logs (stdout, log.txt, stats.jsonl, TensorBoard), PNG grids,
    metric-<name>.jsonl and checkpoints, all at step multiples so every worker acts in lockstep."""

    def __init__(self, run: "_Run"):
        super().__init__()
        self.run = run

    def on_train_batch_end(self, batch, logs=None):
        r = self.run
        r.step += 1
        r.last_logs = _floats(logs)
        step = r.step
        bad = sorted(k for k, v in r.last_logs.items() if not math.isfinite(v))
        if bad:  # never checkpoint a diverged state: the last good checkpoint stays the latest
            r.diverged = True
            r.log(
                f"error: non-finite {', '.join(bad)} at step {step}; stopping without saving "
                f"(the latest checkpoint is step {max(r.last_saved, 0)})"
            )
            self.model.stop_training = True
            return
        if r.log_every and step % r.log_every == 0:
            r.log_scalars(step, r.last_logs)
            # fit runs the whole run as one epoch: reset loss trackers (keras.metrics.Mean) so each
            # logged value is the mean over the last `log_every` steps, not since step 0.
            for m in getattr(self.model, "metrics", []) or []:
                m.reset_state()
        if r.image_every and step % r.image_every == 0:
            r.write_fakes(step)
        if r.metric_every and step % r.metric_every == 0:
            r.run_metrics(step)
        if r.checkpoint_every and step % r.checkpoint_every == 0:
            r.save(step)
        if r.budget_exceeded(step):
            r.stopped_by_budget = True
            self.model.stop_training = True


class _Run:
    """State shared by `run_fit` and its callback."""

    def __init__(
        self,
        model,
        ctx,
        checkpointer,
        total_steps,
        checkpoint_every,
        log_every,
        image_every,
        metric_every,
        metric_fns,
        preview_batch,
        budget_check_every,
        verbose,
    ):
        self.model = model
        self.ctx = ctx
        self.ckpt = checkpointer
        self.total_steps = total_steps
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.image_every = image_every
        self.metric_every = metric_every
        self.metric_fns = metric_fns or {}
        self.preview_batch = preview_batch
        self.verbose = verbose
        self.chief = is_chief(ctx.strategy)
        self.multi_worker = is_multi_worker(ctx.strategy)
        self.model_dir = Path(ctx.model_dir)
        self.step = 0
        self.last_saved = -1
        self.last_logs: dict = {}
        self.stopped_by_budget = False
        self.diverged = False
        self.t0 = time.time()
        self.t_last = self.t0
        self.step_last = 0
        self.deadline = (
            None if ctx.budget_minutes is None else self.t0 + 60.0 * float(ctx.budget_minutes)
        )
        self.budget_check_every = budget_check_every
        self.writer = None
        if self.chief:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            self.writer = tf.summary.create_file_writer(str(self.model_dir / "tensorboard"))
        self._any_fn = None

    # -- text logs
    def log(self, msg: str) -> None:
        if not self.chief:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self.verbose:
            print(line, flush=True)
        with open(self.model_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def log_scalars(self, step: int, values: dict) -> None:
        if not self.chief:
            return
        now = time.time()
        rate = (step - self.step_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last = now, step
        record = {
            "step": step,
            "time_s": round(now - self.t0, 3),
            "steps_per_s": round(rate, 4),
            **values,
        }
        _append_jsonl(self.model_dir / "stats.jsonl", record)
        with self.writer.as_default(step=step):
            for k, v in values.items():
                tf.summary.scalar(k, v)
            tf.summary.scalar("perf/steps_per_s", rate)
        self.writer.flush()
        self.log(
            f"step {step}/{self.total_steps} "
            + " ".join(f"{k}={v:.4g}" for k, v in values.items())
            + f" ({rate:.2f} steps/s)"
        )

    # -- pictures
    def _grid(self, fn, batch):
        states = self.ckpt.rng_states()  # image_grid must not move the training RNG
        try:
            return fn(batch)
        finally:
            self.ckpt.set_rng_states(states)

    def write_reals(self) -> None:
        if not self.chief or self.preview_batch is None:
            return
        fn = getattr(self.model, "real_grid", None) or (lambda b: image_grid(_first_images(b)))
        grid = self._grid(fn, self.preview_batch)
        write_png(self.model_dir / "reals.png", grid)
        with self.writer.as_default(step=0):
            tf.summary.image("reals", grid[None], step=0)

    def write_fakes(self, step: int) -> None:
        if not self.chief or self.preview_batch is None or not hasattr(self.model, "image_grid"):
            return
        grid = self._grid(self.model.image_grid, self.preview_batch)
        write_png(self.model_dir / f"fakes{step:06d}.png", grid)
        with self.writer.as_default(step=step):
            tf.summary.image("fakes", np.asarray(grid)[None], step=step)
        self.writer.flush()

    # -- metrics
    def run_metrics(self, step: int) -> None:
        if not self.chief:
            return
        for name, fn in self.metric_fns.items():
            t = time.time()
            states = self.ckpt.rng_states()
            try:
                result = fn(self.model)
            finally:
                self.ckpt.set_rng_states(states)
            results = {name: float(result)} if np.isscalar(result) else _floats(result)
            record = {
                "results": results,
                "metric": name,
                "step": step,
                "total_time": round(time.time() - t, 3),
                "timestamp": time.time(),
            }
            _append_jsonl(self.model_dir / f"metric-{name}.jsonl", record)
            with self.writer.as_default(step=step):
                for k, v in results.items():
                    tf.summary.scalar(f"metrics/{k}", v)
            self.log(
                f"metric {name} at step {step}: "
                + " ".join(f"{k}={v:.4g}" for k, v in results.items())
            )

    # -- checkpoints
    def save(self, step: int) -> None:
        if step == self.last_saved:
            return
        t = time.time()
        path = self.ckpt.save(step)
        self.last_saved = step
        self.log(f"checkpoint {path} ({time.time() - t:.2f} s)")

    # -- budget
    def _agree(self, flag: bool) -> bool:
        """True if any worker says True (a tiny all-reduce; all workers call it at the same
        step)."""
        strategy = self.ctx.strategy
        if self._any_fn is None:

            @tf.function
            def any_fn(x):
                per_replica = strategy.run(lambda: tf.identity(x))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._any_fn = any_fn
        return bool(self._any_fn(tf.constant(1.0 if flag else 0.0)).numpy() > 0.5)

    def budget_exceeded(self, step: int) -> bool:
        if self.deadline is None:
            return False
        if self.multi_worker:
            if step % self.budget_check_every:
                return False
            return self._agree(time.time() >= self.deadline)
        return time.time() >= self.deadline


def _truncate_jsonl_after(path: Path, step: int) -> None:
    """Drop records of steps after `step` (logged by a run that was killed before its next
    checkpoint)."""
    if not path.exists():
        return
    records = read_jsonl(path)
    kept = [r for r in records if int(r.get("step", 0)) <= step]
    if len(kept) != len(records) or path.read_text(encoding="utf-8").count("\n") != len(records):
        _atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# ----------------------------------------------------------------------------- run_fit


class _no_symbolic_build_of_built_model:
    """Skip Keras' pre-`fit` symbolic build when the model has nothing left to build.

    Keras 3.15 (`TensorFlowTrainer._maybe_symbolic_build`) takes the first distributed batch and
    calls `strategy.reduce("MEAN", batch, axis=None)` on it before looking whether anything needs
    building. `MultiWorkerMirroredStrategy.reduce` does not accept a nested batch (MirroredStrategy
    maps over the nest, CollectiveAllReduce does not): a dict batch such as box_seg's
    `{"image", "background", ...}` fails with "Attempt to convert a value ({'image': PerReplica...})
    to a Tensor" (issue #18), and a batch holding strings could not be averaged at all. `run_fit`
    has already checked that every layer and optimizer is built, so the build would do nothing but
    that all-reduce of a whole data batch across the workers; it is skipped. A model with something
    left to build (compiled Keras losses / metrics) keeps Keras' behaviour.
    """

    def __init__(self, model):
        self.model = model
        self.patched = False

    def _nothing_to_build(self) -> bool:
        m = self.model
        compile_loss = getattr(m, "_compile_loss", None)
        compile_metrics = getattr(m, "_compile_metrics", None)
        # `model.optimizer` is left out on purpose: the optimizers a GAN trains with are
        # checkpoint items, which the Checkpointer requires built; `super().compile()` without one
        # makes a stray RMSprop that no step uses, and building it would only allocate slots
        # (on one device Keras does not build it either).
        return (
            all(layer.built for layer in m._flatten_layers())
            and (compile_loss is None or compile_loss.built)
            and (compile_metrics is None or compile_metrics.built)
        )

    def __enter__(self):
        original = getattr(self.model, "_maybe_symbolic_build", None)
        if original is not None and self._nothing_to_build():
            object.__setattr__(
                self.model, "_maybe_symbolic_build", lambda iterator=None, data_batch=None: None
            )
            self.patched = True
        return self

    def __exit__(self, *exc):
        if self.patched:
            object.__delattr__(self.model, "_maybe_symbolic_build")
        return False


def _check_fit_arguments(model, dataset, total_steps, checkpoint_every, log_every) -> None:
    """ValueError / TypeError naming the argument of `run_fit` that is wrong."""
    if not isinstance(total_steps, int) or total_steps < 0:
        raise ValueError(f"total_steps: expected a non-negative int, got {total_steps!r}")
    for name, v in (("checkpoint_every", checkpoint_every), ("log_every", log_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if not callable(dataset) and not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "dataset: expected a tf.data.Dataset or dataset_fn(start_step), got "
            f"{type(dataset).__name__}"
        )
    if getattr(model, "optimizer", None) is None and not getattr(model, "compiled", False):
        raise ValueError(
            f"model: {type(model).__name__} is not compiled; call model.compile(...) inside "
            f"strategy.scope() first"
        )


def _check_built(model, strategy) -> None:
    """Marks the model and its stateless sub-layers built; an unbuilt layer with state is an
    error under tf.distribute (a warning on one device).

    A GAN wrapper has no call(): under tf.distribute, fit builds any unbuilt layer by calling the
    model ("Unable to automatically build the model", DESIGN.md section 4). So the wrapper is
    marked built here, and every sub-layer must already be built (variables created in scope).
    """
    if not model.built:
        model.built = True
    unbuilt = []
    for layer in model._flatten_layers(include_self=False):
        if layer.built:
            continue
        if type(layer).build is keras.layers.Layer.build:
            layer.built = True  # no build() of its own: no state to create (e.g. minibatch-std)
        else:
            unbuilt.append(getattr(layer, "path", None) or layer.name)
    if not unbuilt:
        return
    message = (
        f"model: layers not built before training: {', '.join(unbuilt[:8])}"
        f"{' ...' if len(unbuilt) > 8 else ''}; build every network (e.g. net.build(input_shape) "
        "or call it once) inside strategy.scope() - under tf.distribute fit cannot build a "
        "model without call()"
    )
    if strategy is not tf.distribute.get_strategy() or strategy.num_replicas_in_sync > 1:
        raise ValueError(message)
    print(f"warning: {message}", file=sys.stderr)


def _restore(run: _Run) -> int:
    """Restores the newest readable checkpoint into the run (0 without one), drops the logged
    records of later steps and logs where the run starts; returns the step."""
    start = run.ckpt.restore(log=run.log if run.chief else (lambda m: print(m, file=sys.stderr)))
    run.step = run.step_last = start
    run.last_saved = start if start else -1
    if run.chief:
        for p in [run.model_dir / "stats.jsonl", *run.model_dir.glob("metric-*.jsonl")]:
            _truncate_jsonl_after(p, start)
    strategy = run.ctx.strategy
    run.log(
        f"{'resuming from step ' + str(start) if start else 'starting'}: {run.total_steps} steps "
        f"in all, {strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), dir "
        f"{run.model_dir}"
    )
    return start


def _dataset_from(dataset, start: int) -> tf.data.Dataset:
    """The stream from step `start` on: `dataset_fn(start)`, or the dataset itself."""
    ds = (
        dataset(start)
        if callable(dataset) and not isinstance(dataset, tf.data.Dataset)
        else dataset
    )
    if not isinstance(ds, tf.data.Dataset):
        raise TypeError(f"dataset_fn({start}): expected a tf.data.Dataset, got {type(ds).__name__}")
    return ds


def _write_start_pictures(run: _Run, ds: tf.data.Dataset, start: int) -> None:
    """Takes the preview batch (default: the stream's first) and, on a fresh run, writes
    `reals.png` and `fakes000000.png`."""
    model = run.model
    if run.preview_batch is None and run.chief and (run.image_every or hasattr(model, "real_grid")):
        run.preview_batch = next(iter(ds.take(1)))
    if start == 0:
        run.write_reals()
        if run.image_every:
            run.write_fakes(0)


def _diverged_result(run: _Run, result: dict, t0: float) -> dict:
    """`run_fit`'s answer for a run stopped by a non-finite value (nothing saved)."""
    if run.writer is not None:
        run.writer.close()
    result.update(run.last_logs)
    result.update(
        {
            "step": run.step,
            "diverged": True,
            "last_checkpoint": max(run.last_saved, 0),
            "seconds": time.time() - t0,
        }
    )
    return result


def _finish(run: _Run, result: dict, t0: float) -> dict:
    """The last logs, pictures, metrics and checkpoint at the final step (those its period did
    not already write); returns `run_fit`'s answer."""
    final = run.step
    if run.last_logs and (final % run.log_every):
        run.log_scalars(final, run.last_logs)
    if run.image_every and final % run.image_every:
        run.write_fakes(final)
    if run.metric_every and run.metric_fns and final % run.metric_every:
        run.run_metrics(final)
    run.save(final)
    seconds = time.time() - t0
    run.log(
        f"stopped at step {final}{' (time budget)' if run.stopped_by_budget else ''} after "
        f"{seconds:.1f} s"
    )
    if run.writer is not None:
        run.writer.close()
    result.update(run.last_logs)
    result.update({"step": final, "stopped_by_budget": run.stopped_by_budget, "seconds": seconds})
    return result


def run_fit(
    model,
    dataset,
    ctx,
    *,
    total_steps: int,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 5,
    log_every: int = 50,
    image_every: int | None = None,
    metric_every: int | None = None,
    metric_fns: dict[str, Callable] | None = None,
    preview_batch=None,
    callbacks=(),
    budget_check_every: int | None = None,
    verbose: bool = True,
) -> dict:
    """Train `model` to `total_steps` (counted from step 0 of the run), resuming from
    `ctx.model_dir`.

    Args:
        model: a compiled keras.Model whose optimizers are built (see the module docstring).
        dataset: an infinite `tf.data.Dataset` of global batches, or `dataset_fn(start_step)`
            returning one that starts at that step (exact continuation after a resume).
        ctx: `indep_seg.training.context.TrainContext` (model_dir, budget, strategy).
        total_steps: steps of the whole run; a resumed run trains `total_steps - restored_step`.
        checkpoint_every: steps between checkpoints (also saved when the run stops).
        keep_checkpoints: how many checkpoints to keep (tf.train.CheckpointManager max_to_keep).
        log_every: steps between scalar logs (stdout, log.txt, stats.jsonl, TensorBoard).
        image_every: steps between `fakesNNNNNN.png` grids (default: checkpoint_every; 0: never).
        metric_every: steps between `metric_fns` evaluations (default: checkpoint_every).
        metric_fns: {name: fn(model) -> float | dict of floats}, appended to `metric-<name>.jsonl`.
        preview_batch: the batch given to `image_grid` / `real_grid` (default: the dataset's first).
        callbacks: extra keras callbacks.
        budget_check_every: multi-worker only: steps between agreed budget checks (default
            log_every).
        verbose: print the log lines too (they always go to log.txt).

    Returns:
        {"step": final step, "stopped_by_budget": bool, "resumed_from": step, "seconds": float,
        **last training scalars}; when a logged value became NaN / Inf the run stops at once
        without saving and the dict has `"diverged": True` and `"last_checkpoint"` (the step a
        restart resumes).
    """
    _check_fit_arguments(model, dataset, total_steps, checkpoint_every, log_every)
    image_every = checkpoint_every if image_every is None else image_every
    metric_every = checkpoint_every if metric_every is None else metric_every
    _check_built(model, ctx.strategy)
    ckpt = Checkpointer(model, ctx.model_dir, ctx.strategy, keep_checkpoints=keep_checkpoints)
    run = _Run(
        model,
        ctx,
        ckpt,
        total_steps,
        checkpoint_every,
        log_every,
        image_every,
        metric_every,
        metric_fns,
        preview_batch,
        budget_check_every or log_every,
        verbose,
    )
    start = _restore(run)
    result = {"step": start, "stopped_by_budget": False, "resumed_from": start}
    if start >= total_steps:
        run.log(f"nothing to do: the checkpoint is at step {start} >= {total_steps}")
        result["seconds"] = 0.0
        return result
    ds = _dataset_from(dataset, start)
    _write_start_pictures(run, ds, start)
    t0 = time.time()
    with _no_symbolic_build_of_built_model(model):
        model.fit(
            ds,
            epochs=1,
            steps_per_epoch=total_steps - start,
            verbose=0,
            shuffle=False,
            callbacks=[RunCallback(run), *callbacks],
        )
    return _diverged_result(run, result, t0) if run.diverged else _finish(run, result, t0)
