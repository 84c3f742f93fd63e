"""`ilsgan` / `ilsgan_paper`: unsupervised foreground-background segmentation (Zou et al. 2023).

One `train_fn` runs the paper's whole pipeline:
1. GAN training of `ILSGAN` (layered StyleGAN2-style generator, residual discriminator, perturbed
   composition, L_m, L_b, ILS-MI, lazy R1, ADA) on square centre crops of the photos, with
   `indep_seg.training.loop.run_fit` (checkpoints, resume, PNG grids rows background / foreground /
   composite /
   mask, TensorBoard, time budget);
2. every `eval_every` steps: the selection metric and the mask-collapse check. The paper keeps the
   checkpoint with the lowest FID. FID/KID use InceptionV3 when its weights are on this machine
   (`indep_seg.metrics_gan.find_inception_weights`); otherwise the run says so and uses KID on the
   features of a fixed random conv net (an unsupervised criterion; no mask is ever used). A
   collapsed
   checkpoint is never selected; with `collapse_policy="restart"` the run goes back to the last
   healthy checkpoint;
3. the selected generator makes synthetic (image, mask) pairs, a post-hoc UNet is trained on them
   (90/10 split, best validation IoU) and saved as `model_dir/segmenter` (`indep_seg.segmenter`).

Data (`--data`): anything `indep_seg.data.read_dataset` reads (default:
../shared/datasets/weizmann_horse);
only the photos are used, centre-cropped to squares.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from indep_seg import metrics_gan
from indep_seg.collapse import CollapseMonitor
from indep_seg.models.ilsgan import ILSGAN
from indep_seg.posthoc import (
    discriminator_scores,
    generate_pairs,
    save_posthoc_segmenter,
    small_unet,
    top_k_pairs,
    train_posthoc_unet,
    zoom_out_pairs,
)
from indep_seg.presets import preset_options
from indep_seg.training.registry import register_experiment

DEFAULT_DATA = str(
    Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "weizmann_horse"
)


@dataclasses.dataclass
class ILSGANConfig:
    """Options of the `ilsgan` (small, 2 CPU cores) preset; `paper_config()` gives
    `ilsgan_paper`. The model's options (resolution .. ils_distribution) are the core's
    (`indep_seg.presets.ILSGAN_PRESETS`, which `ilsgan_config()` / `paper_config()` read); the
    defaults here repeat the `ilsgan` preset's (tests/test_api_presets.py checks)."""

    resolution: int = 32
    z_dim: int = 64
    w_dim: int = 64
    mapping_layers: int = 2
    g_channel_base: int = 1024
    g_channel_max: int = 64
    d_channel_base: int = 1024
    d_channel_max: int = 64
    use_noise: bool = True
    mbstd_group_size: int = (
        4  # minibatch-std group (StyleGAN2: 4); ilsgan_tiny: 1 (replica-independent)
    )
    mask_bias: float = 0.0  # mask-logit offset
    mask_center_prior: float = 2.0  # small preset only (paper: 0): fixed centred logit map, see
    # LayeredGenerator; without it, masks went translucent / all-0 / all-1
    # within the CPU budget on the horse photos
    batch_size: int = 32
    learning_rate: float = 0.0025
    beta_1: float = 0.0
    beta_2: float = 0.99
    r1_gamma: float = -1.0  # < 0: 0.0002 * res^2 / batch (StyleGAN2-ADA heuristic)
    r1_interval: int = 16
    ada: bool = True
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0
    ema_kimg: float = 10.0  # StyleGAN2-ADA: batch * 10 / 32 kimg half-life; 0 = no EMA copy
    ema_rampup: float = 0.05  # StyleGAN2-ADA's ramp-up (< 0: none)
    style_mixing_prob: float = (
        0.0  # StyleGAN2 / the authors' code: 0.9 (off here: not measured on CPU yet)
    )
    pl_weight: float = 0.0  # StyleGAN2: 2; the authors' code has it off (their loss.py raises)
    pl_interval: int = 4
    shift_fraction: float = 0.125
    eta: float = 0.25
    eta_max: float = 0.5  # small preset only (paper: -1 = off): upper area hinge. On the horse
    # photos, without it masks went all-0 in 500 steps (mask_bias 0) or
    # all-1 in 250 steps (mask_bias 1) within the CPU budget
    lambda_m: float = 2.0
    lambda_b: float = 2.0
    mask_losses_on: str = "mask"  # eq. 4 as printed; "shifted": on T(m), as the authors' loss.py
    ils: str = "mi"  # "mi" (eq. 12), "l1" (eq. 13), "none"
    lambda_ils: float = 1.0
    lambda_ils_warmup: float = 0.2
    ils_warmup_images: int = 20000
    ils_separate: bool = True
    ils_opt_visible: bool = True
    ils_opt_mask: bool = True
    ils_distribution: str = "laplace"
    steps: int = 200000  # the time budget usually stops the small preset first
    checkpoint_every: int = 250
    log_every: int = 50
    eval_every: int = 250
    eval_samples: int = 384
    inception_weights: str = ""  # path of InceptionV3 no-top weights ("" = the Keras cache)
    collapse_policy: str = "restart"  # "report" or "restart"
    collapse_patience: int = 2
    posthoc_pairs: int = 16000  # 4000 pairs and 12 epochs gave real-horse IoU 0.547, this 0.585
    posthoc_epochs: int = 30  # a 60-minute budget's 9-minute share stops it after ~18
    posthoc_zoom_out: float = 0.55  # 1.0 = off
    posthoc_topk: int = (
        0  # > 0: keep the posthoc_topk pairs of posthoc_pool that D scores most real
    )
    posthoc_pool: int = 0  # pairs drawn before the top-k filter (0: posthoc_pairs)
    posthoc_budget_fraction: float = 0.15  # share of --budget-minutes kept for the post-hoc UNet
    posthoc_widths: str = "32,64,128,128"
    max_images: int = 0
    seed: int = 0


def ilsgan_config() -> ILSGANConfig:
    """The `ilsgan` preset: the core's model options (`indep_seg.presets.ILSGAN_PRESETS`), this
    class's defaults for the rest of the run."""
    return ILSGANConfig(**preset_options("ilsgan"))


def paper_config() -> ILSGANConfig:
    """Zou et al. 2023, Implementation Details: StyleGAN2 at 128x128 (Table 1; 64 for the
    ablations), z and w 512, 8-layer mapping networks, 512 channels, Adam 0.0025 (0, 0.99),
    lambda_m = lambda_b = 2, eta 0.25, lambda_ils 1 (0.2 for the first 400k images), ADA target
    0.6, 8M images shown; from the authors' code (stylegan2-ada): EMA of G (10 kimg, ramp-up
    0.05), style mixing 0.9, no path-length regularisation. The core's `ilsgan_paper` model
    options (`indep_seg.presets`) and the paper's run settings."""
    return ILSGANConfig(
        **{
            **preset_options("ilsgan_paper"),
            **dict(
                steps=250000,
                checkpoint_every=2500,
                eval_every=2500,
                eval_samples=10000,
                posthoc_pairs=10000,
                posthoc_epochs=20,
                posthoc_zoom_out=1.0,
                posthoc_budget_fraction=0.05,
                posthoc_widths="64,128,256,512,512",
            ),
        }
    )


# ----------------------------------------------------------------------------- data
def load_training_images(spec, resolution, max_images=0, log=print):
    """Photos of `spec` (via `indep_seg.data.read_dataset`), centre-cropped to squares and resized
    to
    `resolution` (antialiased): float32 `[N, R, R, 3]` in [0, 1]. Masks, if any, are ignored."""
    from indep_seg.data import read_dataset

    ds = read_dataset(spec)
    out = []
    for el in ds:
        img = el["image"] if isinstance(el, dict) else el
        h, w = int(img.shape[0]), int(img.shape[1])
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        crop = tf.cast(img[y0 : y0 + s, x0 : x0 + s], tf.float32) / 255.0
        out.append(tf.image.resize(crop, [resolution, resolution], antialias=True).numpy())
        if max_images and len(out) >= max_images:
            break
    if not out:
        raise ValueError(f"data: {spec} holds no images")
    images = np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)
    log(f"data: {len(images)} photos from {spec}, centre-cropped to {resolution}x{resolution}")
    return images


def prepare_image_shards(spec, resolution, directory, max_images=0, log=print):
    """The run's image shards (`indep_seg.data.image_stream`): the photos of `spec` read one at a
    time,
    centre-cropped and resized as `load_training_images` does, written once (reused when complete
    and
    made from the same spec); memory holds one photo. Returns the shards' manifest."""
    from indep_seg.data import DataError, read_dataset
    from indep_seg.data.image_stream import centre_square, read_image_shards, write_image_shards

    info = {
        "data": str(spec),
        "resolution": int(resolution),
        "max_images": int(max_images),
        "version": 1,
    }
    manifest = read_image_shards(directory, info=info)
    if manifest is not None:
        log(f"data: reusing {manifest['images']} photos of {spec} in {directory}")
        return manifest

    def photos():
        try:
            for n, el in enumerate(read_dataset(spec).as_numpy_iterator(), start=1):
                yield centre_square(el["image"], resolution)
                if max_images and n >= max_images:
                    return
        except tf.errors.DataLossError as e:
            raise DataError(
                f"{spec}: truncated or corrupt TFRecord file ({e.message.strip()[:200]})"
            ) from None
        except tf.errors.InvalidArgumentError as e:
            raise DataError(f"{spec}: {e.message.strip()[:300]}") from None

    t = time.time()
    try:
        manifest = write_image_shards(photos(), directory, resolution=resolution, info=info)
    except DataError as e:
        if "no image to write" in str(e):
            raise ValueError(f"data: {spec} holds no images") from None
        raise
    log(
        f"data: {manifest['images']} photos from {spec}, centre-cropped to "
        f"{resolution}x{resolution}, "
        f"written to {len(manifest['image_files'])} shard(s) in {directory} in "
        f"{time.time() - t:.1f} s"
    )
    return manifest


def make_dataset(images, batch_size, seed=0):
    # epoch e = the permutation drawn with the stateless seed (seed, e): a new order every epoch as
    # with
    # shuffle().repeat(), but the same stream for every iterator (the preview batch, fit under any
    # strategy, a resumed run); a stateful shuffle gave fit under MirroredStrategy another order
    n = len(images)
    images = tf.constant(images)
    order = tf.data.Dataset.range(2**62).flat_map(
        lambda e: tf.data.Dataset.from_tensor_slices(
            tf.argsort(
                tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), e]))
            )
        )
    )
    ds = order.map(lambda i: tf.gather(images, i))
    # stateless flip keyed by (seed, position in the stream): the unseeded stateful flip under a
    # parallel
    # map gave each run other flips (no exact resume, N replicas != 1 device)
    ds = ds.enumerate().map(
        lambda i, x: tf.image.stateless_random_flip_left_right(
            x, seed=tf.stack([tf.cast(seed, tf.int64), i])
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


# ----------------------------------------------------------------------------- model
def build_model(cfg: ILSGANConfig, global_batch_size=None):
    """The compiled `ILSGAN` of `cfg` (`ILSGAN.from_options`, the builder of `from_preset`)."""
    return ILSGAN.from_options(
        dataclasses.asdict(cfg),
        seed=cfg.seed,
        global_batch_size=global_batch_size or cfg.batch_size,
    )


def feature_extractor(cfg: ILSGANConfig, log=print):
    """(extractor, name, is_inception): InceptionV3 when its weights are here, else a random conv
    net."""
    try:
        ext = metrics_gan.inception_feature_extractor(cfg.inception_weights or None)
        log("selection metric: FID/KID with InceptionV3 pool features")
        return ext, "inception_v3", True
    except metrics_gan.InceptionWeightsUnavailable as e:
        log(f"NOTE: {e}")
        log(
            "selection metric: KID on the features of a FIXED RANDOM conv net (seed 0), an "
            "unsupervised "
            "criterion comparable only between runs of this project; no mask is used"
        )
        return metrics_gan.random_feature_extractor(seed=0), "random_conv_kid", False


class _Selector:
    """The metric fn of run_fit: selection metric, collapse check, best and last-healthy
    checkpoints."""

    def __init__(self, model, cfg, model_dir, real_images, log=print):
        self.model = model
        self.cfg = cfg
        self.dir = Path(model_dir)
        self.log = log
        self.extractor, self.metric_name, self.inception = feature_extractor(cfg, log)
        self.real_feats = metrics_gan.compute_features(real_images, self.extractor)
        self.z = tf.constant(
            np.random.default_rng(1234)
            .standard_normal((cfg.eval_samples, cfg.z_dim))
            .astype(np.float32)
        )
        self.monitor = CollapseMonitor(
            cfg.collapse_policy, cfg.collapse_patience, log_path=self.dir / "collapse.jsonl"
        )
        self.best = {"kid": float("inf"), "step": -1}
        state = self.dir / "selection.json"
        if state.exists():  # a resumed run keeps its best so far
            self.best = json.loads(state.read_text()).get("best", self.best)
        self.items = tf.train.Checkpoint(
            **{
                k: (v.state if isinstance(v, keras.random.SeedGenerator) else v)
                for k, v in model.checkpoint_items().items()
            }
        )
        self.gen_ckpt = tf.train.Checkpoint(
            generator=model.sampling_generator
        )  # the EMA copy when on
        self.restarts = 0

    def _save(self, ckpt, name):
        tmp = self.dir / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        ckpt.write(str(tmp / "ckpt"))
        final = self.dir / name
        if final.exists():
            old = self.dir / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        return final / "ckpt"

    def __call__(self, model):
        step = int(model.step_counter.numpy())
        comps, masks = [], []
        for i in range(0, self.cfg.eval_samples, 128):
            out = model.generate(self.z[i : i + 128])
            comps.append(np.clip(out["composite"].numpy(), 0, 1))
            masks.append(out["mask"].numpy())
        comps, masks = np.concatenate(comps), np.concatenate(masks)
        feats = metrics_gan.compute_features(comps, self.extractor)
        kid, _ = metrics_gan.kid_from_features(
            feats,
            self.real_feats,
            num_subsets=20,
            subset_size=min(256, len(feats), len(self.real_feats)),
        )
        result = {"kid": kid, "mask_coverage": float((masks > 0.5).mean())}
        if self.inception:
            result["fid"] = metrics_gan.fid_from_features(feats, self.real_feats)
        healthy_path = None
        report, action = self.monitor.check(step, masks, None)
        if not report.collapsed:
            healthy_path = self._save(self.items, "healthy")
            self.monitor.last_healthy = (step, str(healthy_path))
            if kid < self.best["kid"]:
                self._save(self.gen_ckpt, "best")
                self.best = {
                    "kid": kid,
                    "step": step,
                    **{k: v for k, v in result.items() if k != "kid"},
                }
        else:
            self.log(report.message)
        if action == "restart":
            path = self.monitor.last_healthy[1]
            self.items.restore(path).expect_partial()
            self.restarts += 1
            model.seed_generator.state.assign(model.seed_generator.state + 7919 * self.restarts)
            self.log(f"restarted from {path} (restart {self.restarts})")
        result.update(
            {
                "collapsed": float(report.collapsed),
                "best_kid": self.best["kid"],
                "best_step": float(self.best["step"]),
                "restarts": float(self.restarts),
            }
        )
        state = {"metric": self.metric_name, "best": self.best, "restarts": self.restarts}
        tmp = self.dir / f"selection.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.dir / "selection.json")
        return result


def posthoc_stage(
    model, cfg: ILSGANConfig, model_dir, chosen, selection_metric, budget_seconds=None, log=print
):
    """Zou et al., "Evaluation": `cfg.posthoc_pairs` synthetic (image, mask) pairs from the selected
    generator (half of them zoomed out when `posthoc_zoom_out` < 1), a post-hoc UNet trained on them
    (90/10 split, best validation IoU, at most `posthoc_epochs` or `budget_seconds`), saved as
    `model_dir/segmenter`. Returns the training history."""
    t_post = time.time()
    if cfg.posthoc_topk > 0:  # not the authors' --topk (a checkpoint window): see indep_seg.posthoc
        pool = cfg.posthoc_pool or cfg.posthoc_pairs
        pair_images, pair_masks = generate_pairs(model, pool, seed=cfg.seed)
        scores = discriminator_scores(model.discriminator, pair_images)
        pair_images, pair_masks = top_k_pairs(pair_images, pair_masks, scores, cfg.posthoc_topk)
        log(
            f"post-hoc pairs: the {cfg.posthoc_topk} of {pool} that the discriminator scores most "
            "real "
            f"(logit >= {np.sort(scores)[-cfg.posthoc_topk]:.3f}; median of the pool "
            f"{np.median(scores):.3f})"
        )
    else:
        pair_images, pair_masks = generate_pairs(model, cfg.posthoc_pairs, seed=cfg.seed)
    if cfg.posthoc_zoom_out < 1.0:
        zi, zm = zoom_out_pairs(pair_images, pair_masks, cfg.posthoc_zoom_out, seed=cfg.seed)
        half = len(pair_images) // 2
        pair_images = np.concatenate([pair_images[:half], zi[half:]])
        pair_masks = np.concatenate([pair_masks[:half], zm[half:]])
    widths = tuple(int(v) for v in cfg.posthoc_widths.split(","))
    unet = small_unet(cfg.resolution, widths)
    if budget_seconds is not None:  # the pairs' generation is part of the stage's time
        budget_seconds = max(10.0, budget_seconds - (time.time() - t_post))
    unet, hist = train_posthoc_unet(
        pair_images,
        pair_masks,
        unet,
        epochs=cfg.posthoc_epochs,
        budget_seconds=budget_seconds,
        seed=cfg.seed,
        log=log,
    )
    save_posthoc_segmenter(
        unet,
        model_dir,
        cfg.resolution,
        "ilsgan",
        extra={
            "selected_step": int(chosen["step"]),
            "selection_metric": selection_metric,
            "posthoc_best_val_iou": hist["best_val_iou"],
        },
    )
    hist["seconds"] = time.time() - t_post
    log(
        f"segmenter saved to {Path(model_dir) / 'segmenter'} (post-hoc val IoU "
        f"{hist['best_val_iou']:.4f}, "
        f"{hist['seconds']:.0f} s)"
    )
    return hist


def _run_log(model_dir: Path):
    """log(msg): a timestamped line printed and appended to `model_dir/log.txt`."""
    log_file = model_dir / "log.txt"

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    return log


def _image_shards(data, cfg: ILSGANConfig, ctx, model_dir: Path, log):
    """The run's image shards of `data` (`prepare_image_shards`) and their manifest."""
    from indep_seg.training.strategy import worker_dir

    # a non-chief worker's own copy, beside (not in) the folder its checkpoints clear
    scratch = worker_dir(model_dir, ctx.strategy)
    shard_dir = (
        scratch / "image_shards"
        if scratch == model_dir
        else scratch.with_name(scratch.name + "-data") / "image_shards"
    )
    return prepare_image_shards(data, cfg.resolution, shard_dir, cfg.max_images, log)


def _gan_phase(model, shards, cfg: ILSGANConfig, ctx, selector) -> dict:
    """The GAN training (`run_fit`) on the shards, within the budget less the post-hoc share."""
    from indep_seg.data.image_stream import image_dataset
    from indep_seg.training.loop import run_fit

    global_batch = cfg.batch_size

    def dataset_fn(start_step=0):
        return image_dataset(
            shards["image_files"],
            global_batch,
            resolution=cfg.resolution,
            seed=cfg.seed,
            start_batch=int(start_step),
        )

    budget = ctx.budget_minutes
    gan_ctx = ctx
    if budget is not None:
        gan_ctx = dataclasses.replace(
            ctx, budget_minutes=budget * (1.0 - cfg.posthoc_budget_fraction)
        )
    total_steps = ctx.resolve_steps(cfg.steps)
    return run_fit(
        model,
        dataset_fn,
        gan_ctx,
        total_steps=total_steps,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        image_every=cfg.checkpoint_every,
        metric_every=cfg.eval_every,
        metric_fns={"selection": selector},
    )


def _restore_selected(model, selector, model_dir: Path, log) -> dict:
    """Load the selected generator (else keep the final one), write `selected.png`; its record."""
    from indep_seg.training.loop import write_png

    best_dir = model_dir / "best"
    if best_dir.exists():
        tf.train.Checkpoint(generator=model.sampling_generator).read(
            str(best_dir / "ckpt")
        ).expect_partial()
        chosen = selector.best
        log(
            f"selected checkpoint: step {chosen['step']} ({selector.metric_name} "
            f"{chosen['kid']:.5f})"
        )
    else:
        chosen = {"kid": float("nan"), "step": int(model.step_counter.numpy())}
        log("no healthy checkpoint was evaluated; using the final generator")
    write_png(model_dir / "selected.png", model.image_grid())
    return chosen


def _posthoc_budget(budget_minutes, t_start: float):
    """Seconds left to the post-hoc stage (at least 30, 20 kept for saving); None: no budget."""
    if budget_minutes is None:
        return None
    return max(30.0, budget_minutes * 60.0 - (time.time() - t_start) - 20.0)


def _save_summary(model_dir: Path, selector, chosen, fit, hist, gan_seconds, t_start) -> None:
    """`model_dir/ilsgan_summary.json`: selection, fit, post-hoc history, times, collapses."""
    summary = {
        "selection_metric": selector.metric_name,
        "selected": chosen,
        "fit": {
            k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in fit.items()
        },
        "posthoc": hist,
        "gan_seconds": gan_seconds,
        "total_seconds": time.time() - t_start,
        "collapse_events": selector.monitor.events,
        "restarts": selector.restarts,
    }
    tmp = model_dir / f"ilsgan_summary.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, model_dir / "ilsgan_summary.json")


def _result(fit, selector, t_start: float, chosen=None, hist=None) -> dict:
    """train_fn's result; NaN selection and post-hoc figures where there were none (a worker)."""
    return {
        "steps": float(fit["step"]),
        "selected_step": float("nan") if chosen is None else float(chosen["step"]),
        "selected_kid": float("nan") if chosen is None else float(chosen["kid"]),
        "posthoc_val_iou": float("nan") if hist is None else float(hist["best_val_iou"]),
        "restarts": float(selector.restarts),
        "seconds": float(time.time() - t_start),
    }


def train_ilsgan(cfg: ILSGANConfig, ctx):
    """train_fn of `ilsgan` / `ilsgan_paper` (see the module docstring)."""
    from indep_seg.data.image_stream import sample_image_records
    from indep_seg.training.strategy import is_chief

    t_start = time.time()
    model_dir = Path(ctx.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    log = _run_log(model_dir)
    keras.utils.set_random_seed(cfg.seed + int(ctx.seed))
    # streamed: the photos are written once into the run's image shards and read through tf.data;
    # the KID reference is a bounded uniform sample of them (every photo up to 2048)
    shards = _image_shards(ctx.data or DEFAULT_DATA, cfg, ctx, model_dir, log)
    images = sample_image_records(
        shards["image_files"], cfg.resolution, max(cfg.eval_samples, 2048), seed=cfg.seed
    )
    with ctx.strategy.scope():
        model = build_model(cfg, cfg.batch_size)
    selector = _Selector(model, cfg, model_dir, images, log)
    fit = _gan_phase(model, shards, cfg, ctx, selector)
    gan_seconds = time.time() - t_start
    if not is_chief(ctx.strategy):
        # the GAN is one model across the workers and ends here; the post-hoc UNet is trained
        # outside the strategy, so only the chief trains and saves it (no two writers of
        # model_dir/segmenter)
        return _result(fit, selector, t_start)
    chosen = _restore_selected(model, selector, model_dir, log)
    post_budget = _posthoc_budget(ctx.budget_minutes, t_start)
    hist = posthoc_stage(model, cfg, model_dir, chosen, selector.metric_name, post_budget, log)
    _save_summary(model_dir, selector, chosen, fit, hist, gan_seconds, t_start)
    return _result(fit, selector, t_start, chosen, hist)


register_experiment(
    "ilsgan",
    ilsgan_config(),
    train_ilsgan,
    "ILSGAN small preset (32x32, narrow StyleGAN2-style nets; 2 CPU cores), Zou et al. 2023",
)
register_experiment(
    "ilsgan_paper",
    paper_config(),
    train_ilsgan,
    "ILSGAN as in the paper (StyleGAN2 128x128, z/w 512, ADA, EMA, 8M images), Zou et al. 2023",
)
