"""`box_seg_tiny`, `ilsgan_tiny`, `hoc_tiny`: the three application trainers at toy size, for the
distribution tests (`tests/test_distributed_*.py`, docs/ARCHITECTURE.md "Experiments").

Each preset runs its application's own `train_fn` (both phases / post-hoc stages included) in
seconds on a CPU, with a global batch of 4 (2 per replica on 2 devices), on data made here from the
embedded synthetic generators (`ctx.data` is not needed), deterministically given `ctx.seed`, and
with the settings that make N replicas train exactly as one device:

- BatchNorm over the global batch (`bn_synchronized` / `g_bn_synchronized`: Keras'
  `BatchNormalization(synchronized=True)`; 1 device uses the same E[x^2] - E[x]^2 formula);
- no bias in the layers that feed a BatchNorm (`bias_before_bn` / `g_bias_before_bn` = False): that
  bias has a zero gradient in exact arithmetic, so Adam moves it by +-lr on the sign of rounding
  noise, differently on 1 and 2 devices (BN's beta plays its role; nothing else changes);
- ILSGAN: minibatch-std group size 1 (StyleGAN2 groups examples with a stride of batch/group, so
  any group > 1 mixes examples that sit on different replicas), `ils="l1"` (ILS-MI is a batch-level
  contrastive estimator whose negatives come from the local batch: it cannot be split-invariant),
  no ADA (its augmentation draws are per replica) and no per-pixel noise (unseeded
  `tf.random.normal` in `NoiseInjection`);
- every other random draw in the train steps goes through
`indep_seg.training.strategy.global_batch_draw`
  (done in the model files, unconditionally: one device draws exactly the numbers it drew before),
  and the input pipelines are pure functions of the seed (stateless flips, no reshuffling state).

The generated data lands in `MODEL_DIR/tiny_data/` (rewritten identically on every run).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from indep_seg.presets import preset_options
from indep_seg.training.experiments.box_seg import BoxSegConfig, train_box_seg
from indep_seg.training.experiments.hoc import HocConfig, train_hoc
from indep_seg.training.experiments.ilsgan import ILSGANConfig, train_ilsgan
from indep_seg.training.registry import register_experiment

__all__ = ["box_seg_tiny_config", "ilsgan_tiny_config", "hoc_tiny_config"]


def _data_dir(ctx) -> Path:
    path = Path(ctx.model_dir) / "tiny_data"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- box_seg_tiny
def box_seg_tiny_config() -> BoxSegConfig:
    """The core's `box_seg_tiny` model options (`indep_seg.presets`) and a run of 3 steps."""
    return BoxSegConfig(
        **{
            **preset_options("box_seg_tiny"),
            **dict(
                steps=3,
                adversarial_fraction=0.67,
                background_variants=1,
                snapshot_every=1000,
                probe_images=8,
                log_every=1,
                evidence_images=0,
            ),
        }
    )


def train_box_seg_tiny(cfg: BoxSegConfig, ctx) -> dict:
    """`train_box_seg` on 8 synthetic photos (`indep_seg.data.write_synthetic_dataset`, boxes from
    masks)."""
    from indep_seg.data import write_synthetic_dataset

    if ctx.data is not None:  # e.g. TFRecords of the same photos (the distribution tests)
        return train_box_seg(cfg, ctx, name="box_seg_tiny")
    paths = write_synthetic_dataset(_data_dir(ctx), num_images=8, seed=int(ctx.seed), size=32)
    if not cfg.masks:
        cfg = dataclasses.replace(cfg, masks=paths["masks"])
    return train_box_seg(cfg, dataclasses.replace(ctx, data=paths["images"]), name="box_seg_tiny")


# ----------------------------------------------------------------------------- ilsgan_tiny
def ilsgan_tiny_config() -> ILSGANConfig:
    """The core's `ilsgan_tiny` model options (`indep_seg.presets`) and a run of 3 steps."""
    return ILSGANConfig(
        **{
            **preset_options("ilsgan_tiny"),
            **dict(
                steps=3,
                checkpoint_every=1000,
                log_every=1,
                eval_every=1000,
                eval_samples=16,
                collapse_policy="report",
                posthoc_pairs=40,
                posthoc_epochs=1,
                posthoc_zoom_out=1.0,
                posthoc_widths="4,8",
                max_images=16,
            ),
        }
    )


def train_ilsgan_tiny(cfg: ILSGANConfig, ctx) -> dict:
    """`train_ilsgan` on 16 photos of the embedded synthetic dataset (`synthetic:16`)."""
    return train_ilsgan(cfg, dataclasses.replace(ctx, data=ctx.data or "synthetic:16"))


# ----------------------------------------------------------------------------- hoc_tiny
def hoc_tiny_config() -> HocConfig:
    """The core's `hoc_tiny` model options (`indep_seg.presets`) and a run of 3 steps."""
    return HocConfig(
        **{
            **preset_options("hoc_tiny"),
            **dict(
                window=16,
                background="disk",
                flips=True,
                steps=3,
                checkpoint_every=1000,
                image_every=0,
                log_every=1,
                counter_steps=2,
                counter_width=8,
                counter_sigma=2.0,
            ),
        }
    )


def train_hoc_tiny(cfg: HocConfig, ctx) -> dict:
    """`train_hoc` on one synthetic 64x64 cluster image (`indep_seg.data.write_cluster_image`)."""
    from indep_seg.data import write_cluster_image

    paths = write_cluster_image(
        _data_dir(ctx), size=64, num_objects=24, radius=4.0, seed=int(ctx.seed)
    )
    return train_hoc(cfg, dataclasses.replace(ctx, data=ctx.data or paths["image"]))


register_experiment(
    "box_seg_tiny",
    box_seg_tiny_config(),
    train_box_seg_tiny,
    "box_seg at toy size on synthetic data (distribution tests; seconds on a CPU)",
)
register_experiment(
    "ilsgan_tiny",
    ilsgan_tiny_config(),
    train_ilsgan_tiny,
    "ilsgan at toy size on synthetic data (distribution tests; seconds on a CPU)",
)
register_experiment(
    "hoc_tiny",
    hoc_tiny_config(),
    train_hoc_tiny,
    "hoc at toy size on a synthetic cluster image (distribution tests; seconds on a CPU)",
)
