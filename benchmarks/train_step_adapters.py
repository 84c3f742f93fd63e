"""The applications' own training steps, built from their registered presets, for
`bench_train_step.py`: each adapter returns a `StepHandle` (the compiled step, one batch, the
batch size and the model FLOP of one step by the 3x rule of benchmarks/flops.py).

Model FLOP per step (forward FLOP counted from the networks' layers at their real input shapes):
- box_seg / box_seg_paper (`ForegroundSegGAN.train_step`): one UNet forward serves both updates
  (3U), D on real + detached fake with weight gradients (2 x 3D), D on the fake again for the
  UNet's loss (3D): B x (3U + 9D).
- ilsgan / ilsgan_paper (`ILSGAN.train_step`): generator with gradient (3G), D on the perturbed
  composite for G (3D), D on real + fake with weight gradients (6D): B x (3G + 9D); the lazy R1
  step every `r1_interval` steps is not counted (forward FLOP of these StyleGAN2 networks come
  from the traced graph: their modulated convolutions call tf.nn.conv2d, not Keras Conv2D).
- hoc / hoc_paper (`HocGAN.train_step`): generator on B x N latents without gradient for the D
  step (N G), D on real + fake (6D), generator again with gradient (3 N G), D on the composite
  (3D), Q head on the B x N layers (3 N Q): B x (4 N G + 9 D + 3 N Q).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.flops import analytic_forward_flops

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclasses.dataclass
class StepHandle:
    step: object  # callable(*batch) -> outputs
    batch: tuple
    batch_size: int
    flops: dict  # {"per_step": int, ...}
    impl: str
    config: dict


def _experiment(preset):
    import indep_seg.training.experiments  # noqa: F401  (registers the presets)
    from indep_seg.training.registry import get_experiment

    return get_experiment(preset)


def box_seg(preset, jit_compile=False, batch_size=None):
    from indep_seg.models.foreground_seg_gan import ForegroundSegGAN
    from indep_seg.training.experiments.box_seg import build_discriminator, build_unet, effective_a

    cfg = dataclasses.replace(_experiment(preset).default_config)
    b = int(batch_size or cfg.batch_size)
    r = cfg.resolution
    unet, disc = build_unet(cfg), build_discriminator(cfg)
    gan = ForegroundSegGAN(
        unet,
        disc,
        area_lambda=cfg.area_lambda,
        area_a=effective_a(cfg),
        area_mode=cfg.area_mode,
        d_downsample=cfg.d_downsample,
    )
    gan.compile()
    g = tf.random.Generator.from_seed(0)
    batch = {"image": g.uniform((b, r, r, 3)), "background": g.uniform((b, r, r, 3))}
    u = analytic_forward_flops(unet, tf.zeros((1, r, r, 3)))
    rd = r // cfg.d_downsample
    d = analytic_forward_flops(disc, tf.zeros((1, rd, rd, 3)), training=True)
    step = tf.function(gan.train_step, jit_compile=jit_compile, reduce_retracing=True)
    return StepHandle(
        step=step,
        batch=(batch,),
        batch_size=b,
        flops={
            "unet_forward_per_image": u,
            "disc_forward_per_image": d,
            "rule": "B(3U+9D)",
            "per_step": int(b * (3 * u + 9 * d)),
        },
        impl="ForegroundSegGAN",
        config=dataclasses.asdict(cfg),
    )


def _hoc_image():
    path = SHARED / "nuclei_dsb2018" / "image.png"
    if path.is_file():
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    rng = np.random.default_rng(0)  # dark background with bright blobs
    img = np.zeros((256, 256, 3), np.float32)
    yy, xx = np.mgrid[:256, :256]
    for _ in range(60):
        cy, cx = rng.integers(0, 256, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 0.8
    return img


def hoc(preset, jit_compile=False, batch_size=None, resolved=None):
    """`resolved`: the trainer's resolved options (`hoc.resolve` of its normalised image); default:
    the preset resolved on the raw image."""
    from indep_seg.training.experiments.hoc import build_model, resolve

    cfg = dataclasses.replace(_experiment(preset).default_config)
    r = dict(resolved) if resolved is not None else resolve(cfg, _hoc_image())
    if batch_size:
        r["batch_size"] = int(batch_size)
    r["jit_compile"] = False
    model = build_model(r)
    b, res, n = int(r["batch_size"]), int(r["resolution"]), int(r["num_layers"])
    g = tf.random.Generator.from_seed(0)
    batch = {"real": g.uniform((b, res, res, 3)), "background": g.uniform((b, res, res, 3))}
    gf = analytic_forward_flops(model.generator, tf.zeros((1, r["latent_dim"])))
    df = analytic_forward_flops(model.discriminator, tf.zeros((1, res, res, 3)), training=True)
    qf = (
        analytic_forward_flops(model.q_head, tf.zeros((1, res, res, 4)))
        if model.q_head is not None
        else 0
    )
    step = tf.function(model.train_step, jit_compile=jit_compile, reduce_retracing=True)
    return StepHandle(
        step=step,
        batch=(batch,),
        batch_size=b,
        flops={
            "generator_forward_per_layer": gf,
            "disc_forward_per_image": df,
            "q_forward_per_layer": qf,
            "num_layers": n,
            "rule": "B(4NG+9D+3NQ)",
            "per_step": int(b * (4 * n * gf + 9 * df + 3 * n * qf)),
        },
        impl="HocGAN",
        config={k: v for k, v in r.items() if isinstance(v, (int, float, str, bool))},
    )


def ilsgan(preset, jit_compile=False, batch_size=None):
    from benchmarks.flops import forward_graph_flops
    from indep_seg.training.experiments.ilsgan import build_model

    cfg = dataclasses.replace(_experiment(preset).default_config)
    b = int(batch_size or cfg.batch_size)
    r = cfg.resolution
    model = build_model(cfg, global_batch_size=b)
    real = tf.random.Generator.from_seed(0).uniform((b, r, r, 3))
    # StyleGAN2 layers call tf.nn.conv2d directly: count their forward from the traced graph
    gf = forward_graph_flops(model.generator, tf.zeros((1, model.generator.z_dim)), training=True)
    df = forward_graph_flops(model.discriminator, tf.zeros((1, r, r, 3)), training=True)
    step = tf.function(model.train_step, jit_compile=jit_compile, reduce_retracing=True)
    return StepHandle(
        step=step,
        batch=(real,),
        batch_size=b,
        flops={
            "generator_forward_per_image": gf,
            "disc_forward_per_image": df,
            "rule": "B(3G+9D), lazy R1 (every r1_interval steps) not counted",
            "per_step": int(b * (3 * gf + 9 * df)),
        },
        impl="ILSGAN",
        config=dataclasses.asdict(cfg),
    )


ADAPTERS = {
    "box_seg": box_seg,
    "box_seg_paper": box_seg,
    "hoc": hoc,
    "hoc_paper": hoc,
    "ilsgan": ilsgan,
    "ilsgan_paper": ilsgan,
}


def registered(preset) -> str | None:
    """None when the preset is registered and has an adapter, else why not."""
    if preset not in ADAPTERS and not preset.startswith("ilsgan"):
        return f"no adapter for {preset}"
    try:
        import indep_seg.training.experiments  # noqa: F401
        from indep_seg.training.registry import list_experiments
    except Exception as e:  # noqa: BLE001
        return f"indep_seg.training.experiments cannot be imported ({type(e).__name__}: {e})"
    names = {e.name for e in list_experiments()}
    if preset not in names:
        return f"{preset} is not registered in training/experiments"
    if preset not in ADAPTERS:
        return f"no adapter for {preset} yet"
    return None
