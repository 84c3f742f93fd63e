"""Experiments `hoc` and `hoc_paper`: instances, masks and counts from ONE image (Dai et al. 2019,
app. 2).

    indep-seg train --experiment hoc --data IMAGE --model-dir OUT [--budget-minutes M]
    indep-seg train --experiment hoc_paper --data IMAGE --model-dir OUT --override setting=fruit

`hoc` is the small preset for 2 CPU cores (32x32 patches, narrow networks, upsample+conv generator,
dense discriminator head: the changes DESIGN.md section 7 calls for). Window, a, number of layers,
padding and background provider are estimated from the image (`indep_seg.hoc.estimate`) unless set.
`hoc_paper` is Table 2's networks at 64x64 with Table 4's settings `crowd`, `fruit`, `seed`
(layers, dim z, a, beta 50, lambda 1000, padding 30 / 32 / 26 px, black-disk background).

The run ends with the counter phase (`indep_seg.hoc.counting`): a centre-heatmap network trained on
the generator's own composites, saved to ``MODEL_DIR/counter/`` for `indep-seg count`. Figures in
the model dir: ``instances.png``, ``masks.png``, ``composites.png``, ``carved.png`` (Figs. 8-11),
``fakesNNNNNN.png`` during training, the same images in TensorBoard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from indep_seg.gallery import tile_rows
from indep_seg.hoc import counting
from indep_seg.hoc.estimate import estimate_from_image, instance_contrast_range, layers_and_padding
from indep_seg.hoc.evaluate import mask_statistics
from indep_seg.hoc.instances import estimate_scale, nucleus_signal
from indep_seg.hoc.patches import inpaint_background, random_patch_dataset, rescale_image
from indep_seg.imageio import load_image
from indep_seg.models.hoc_gan import HocGAN
from indep_seg.presets import (
    HOC_ESTIMATED,
    HOC_PAPER_SETTINGS,
    hoc_setting_options,
    preset_options,
)
from indep_seg.training.loop import run_fit, write_png
from indep_seg.training.registry import register_experiment

# Dai et al. 2019, Table 4: the core's (`indep_seg.presets`), one home with `HocGAN.from_preset`.
PAPER_SETTINGS = HOC_PAPER_SETTINGS

DEFAULT_IMAGE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "datasets"
    / "nuclei_dsb2018"
    / "image.png"
)


@dataclasses.dataclass
class HocConfig:
    """Options of the one-image HOC experiments. ``None`` = estimated from the image (or the
    setting).

    setting: "auto" (everything estimated from the image) or a Table-4 setting "crowd" / "fruit" /
        "seed" (its layers, dim z, a, beta, padding, flips; black-disk background).
    """

    setting: str = "auto"
    resolution: int = 32
    window: int | None = None
    num_layers: int | None = None
    padding: int | None = None
    a: float | None = None
    background: str = "auto"  # auto | disk | inpaint | black
    grayscale: bool | None = None  # None: True when the image is gray (R = G = B)
    counter_gain_jitter: float = 0.7  # per-instance gain exp(U(-j, j)) in the counter's training
    counter_dihedral: bool = True  # composites and targets in random flips / transposes
    counter_contrast: bool = True  # instance contrasts drawn from the image's range
    counter_blur_sigma: float = (
        1.0  # composites blurred by U(0, s) px (soft rims, as after rescaling)
    )
    counter_noise: float = 0.02  # and noised by N(0, U(0, n))
    disk_radius: float | None = None  # default 20/64 * resolution
    flips: bool | None = None
    latent_dim: int | None = None
    area_weight: float = 1000.0  # lambda
    info_weight: float | None = None  # beta (50)
    binarization_weight: float = 1.0  # ILSGAN's L_b on the layer masks; 0 in hoc_paper (the paper)
    g_initial_size: int = 8
    g_widths: tuple[int, ...] = (128, 64, 32)
    g_upsample: str = "upsample"
    g_bn_momentum: float = 0.9
    g_bn_synchronized: bool = False  # BN over the global batch under tf.distribute (hoc_tiny: True)
    g_bias_before_bn: bool = True  # hoc_tiny: False (see RGBAGenerator)
    g_border_taper: int = 3  # alpha ramps to 0 on the canvas border (0 = paper)
    d_widths: tuple[int, ...] = (32, 64, 128)
    d_final_width: int = 0
    d_head: str = "dense"
    q_widths: tuple[int, ...] = (16, 32, 64)
    batch_size: int = 32
    d_lr: float = 2e-4
    g_lr: float = 2e-4
    steps: int = 20000
    checkpoint_every: int = 1000
    image_every: int = 500
    log_every: int = 100
    counter_steps: int = 2000
    counter_fraction: float = 0.12  # share of --budget-minutes kept for the counter
    counter_width: int = 32
    counter_sigma: float | None = None  # heatmap Gaussian sigma (px at resolution); default width/5
    jit_compile: bool = False
    normalise: bool = True  # polarity, stain and scale estimated from each image (hoc.instances)
    window_per_sigma: float = 4.25  # window = this x the image's LoG scale (1.5 x a nucleus' width)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def data_paths(data) -> list[str]:
    """`--data`: one image, a folder (its images, sorted; label maps ``*_instances*``,
    ``*_labels*``,
    ``*_count*`` skipped) or several images separated by commas. Raises ValueError when none is
    found."""
    items = [x.strip() for x in str(data).split(",") if x.strip()]
    out = []
    for it in items:
        if os.path.isdir(it):
            for name in sorted(os.listdir(it)):
                low = name.lower()
                if low.endswith(IMAGE_SUFFIXES) and not any(
                    k in low for k in ("_instances", "_labels", "_count")
                ):
                    out.append(os.path.join(it, name))
        else:
            out.append(it)
    if not out:
        raise ValueError(
            f"data: no image found in {data!r} (a file, a folder of images, or files separated by "
            "commas)"
        )
    return out


def prepare_image(image, window_per_sigma: float = 4.25):
    """The image as the model sees it: the one-channel nucleus signal (`instances.nucleus_signal`:
    polarity and stain from the image's histogram) as gray RGB, its LoG scale and its window
    (``window_per_sigma`` x sigma). Returns ``(signal [H, W, 3], info dict)``."""
    ns = nucleus_signal(image)
    sc = estimate_scale(ns.signal)
    h, w = ns.signal.shape
    window = int(max(4, min(round(window_per_sigma * sc["sigma"]), h, w)))
    info = dict(ns.meta(), sigma=sc["sigma"], radius=sc["radius"], area=sc["area"], window=window)
    return np.repeat(ns.signal[..., None], 3, -1), info


def hoc_config() -> HocConfig:
    """The `hoc` preset: the core's model options (`indep_seg.presets.HOC_PRESETS`), this class's
    defaults for the rest of the run."""
    return HocConfig(**preset_options("hoc"))


def hoc_paper_config() -> HocConfig:
    """The core's `hoc_paper` model options (Table 2 networks at 64 px, Table 4 setting 'crowd')
    and the paper's run settings."""
    return HocConfig(
        **{
            **preset_options("hoc_paper"),
            **dict(steps=50000, background="disk", counter_width=48),
        }
    )


def resolve(config: HocConfig, image) -> dict:
    """Fill every ``None`` of `config` from the setting and the image; returns the resolved dict."""
    if config.setting not in ("auto", *PAPER_SETTINGS):
        raise ValueError(
            f"setting: expected 'auto', 'crowd', 'fruit' or 'seed', got {config.setting!r}"
        )
    if config.background not in ("auto", "disk", "inpaint", "black"):
        raise ValueError(
            f"background: expected auto, disk, inpaint or black, got {config.background!r}"
        )
    r = dataclasses.asdict(config)
    h, w = image.shape[:2]
    try:
        est = estimate_from_image(image).to_dict()
    except ValueError:
        if config.window is None or config.a is None:
            raise
        est = None
    r["estimate"] = est
    window = config.window if config.window is not None else est["window"]
    if window > min(h, w):
        raise ValueError(
            f"window: expected at most the image's smaller side ({min(h, w)} px), got {window}"
        )
    if window < 4:
        raise ValueError(f"window: expected at least 4 px, got {window}")
    r["window"] = int(window)
    scale = config.resolution / window
    paper = hoc_setting_options(config.setting, config.resolution)  # padding at `resolution`
    for key in ("num_layers", "latent_dim", "a", "info_weight", "padding", "flips"):
        if r[key] is None and paper is not None:
            r[key] = paper[key]
    if r["a"] is None:
        # capped: a LoG window smaller than the Otsu size (hard-edged, pixelated blobs) gave a > 1
        r["a"] = float(min(0.9, est["median_area"] / (window * window)))
    density = est["density"] * (window / est["window"]) ** 2 if est else 1.0
    if r["num_layers"] is None or r["padding"] is None:
        n, p = layers_and_padding(density, config.resolution, r["num_layers"])
        r["num_layers"] = r["num_layers"] or n
        r["padding"] = p if r["padding"] is None else r["padding"]
    for key in ("latent_dim", "info_weight"):  # the core's fallbacks (`from_preset`'s too)
        r[key] = HOC_ESTIMATED[key] if r[key] is None else r[key]
    r["flips"] = True if r["flips"] is None else r["flips"]
    if config.background == "auto":
        r["background"] = "disk" if (paper is not None or (est and est["dense"])) else "inpaint"
    r["disk_radius"] = r["disk_radius"] or 20.0 / 64.0 * config.resolution
    if r["counter_sigma"] is None:
        inst_w = est["instance_width"] if est else window / 1.5
        r["counter_sigma"] = max(1.0, inst_w * scale / 5.0)
    if r["grayscale"] is None:
        rgb = np.asarray(image, np.float32)
        r["grayscale"] = bool(
            rgb.ndim == 3 and np.abs(rgb - rgb.mean(-1, keepdims=True)).max() < 1.0 / 255
        )
    r["density"] = density
    r["scale"] = scale
    return r


def build_model(r: dict, seed: int = 0):
    """The compiled `HocGAN` of the resolved options `r` (`HocGAN.from_options`, the builder of
    `from_preset`)."""
    return HocGAN.from_options(r, seed=seed)


def make_dataset_multi(images, windows, r: dict, seed: int = 0):
    """Batches from several images of one kind, each rescaled by its own window, taken in turn."""
    if len(images) == 1:
        return make_dataset(images[0], dict(r, window=windows[0]), seed=seed)
    dss = [
        make_dataset(im, dict(r, window=w), seed=seed + 7919 * i)
        for i, (im, w) in enumerate(zip(images, windows))
    ]
    order = tf.data.Dataset.range(len(dss)).repeat()
    return tf.data.Dataset.choose_from_datasets(dss, order)


def make_dataset(image, r: dict, seed: int = 0):
    scaled = rescale_image(image, r["window"], r["resolution"])
    scaled_bg = None
    if r["background"] == "inpaint":
        scaled_bg = rescale_image(
            inpaint_background(image, seed=seed), r["window"], r["resolution"]
        )
    return random_patch_dataset(
        scaled,
        r["resolution"],
        r["batch_size"],
        scaled_background=scaled_bg,
        background=r["background"],
        disk_radius=r["disk_radius"],
        flips=r["flips"],
        seed=seed,
    )


def counter_stage(model, ds, image, r: dict, model_dir, time_limit_s=None, log=print):
    """Train the centre counter on the frozen generator's composites and save it to
    ``model_dir/counter`` (`indep_seg.hoc.counting`). Returns ``(counter, history)``.

    An instance counts when it stands out of the background beneath it by at least a quarter of
    the image's Otsu foreground/background contrast (``min_contrast``, `counting.centre_targets`);
    with `counter_contrast` every instance's contrast is drawn from the image's range
    (`estimate.instance_contrast_range`) instead of the generator's own, otherwise its gain is
    jittered by exp(U(-j, j)).
    """
    try:
        min_contrast, high = instance_contrast_range(image)
    except ValueError:  # a constant image (window and a were given by hand)
        min_contrast, high = 0.0, None
    contrast_range = (min_contrast, high) if r.get("counter_contrast") and high else None
    gain_jitter = 0.0 if contrast_range else r["counter_gain_jitter"]
    counter, history = counting.train_counter(
        model,
        ds,
        r["counter_steps"],
        r["counter_sigma"],
        counter=counting.build_counter(r["counter_width"]),
        time_limit_s=time_limit_s,
        min_contrast=min_contrast,
        log=log,
        gain_jitter=gain_jitter,
        grayscale=r["grayscale"],
        dihedral=r["counter_dihedral"],
        contrast_range=contrast_range,
        blur_sigma=r.get("counter_blur_sigma", 0.0),
        noise=r.get("counter_noise", 0.0),
    )
    counting.save_counter(
        Path(model_dir) / "counter",
        counter,
        dict(
            window=r["window"],
            resolution=r["resolution"],
            sigma=r["counter_sigma"],
            experiment="hoc",
            min_contrast=min_contrast,
            contrast_range=list(contrast_range) if contrast_range else None,
            gain_jitter=gain_jitter,
            grayscale=r["grayscale"],
            dihedral=r["counter_dihedral"],
            blur_sigma=r.get("counter_blur_sigma", 0.0),
            noise=r.get("counter_noise", 0.0),
            steps=history[-1][0] + 1 if history else 0,
            normalise=bool(r.get("normalise", False)),
            window_per_sigma=r.get("window_per_sigma"),
            images=r.get("images"),
        ),
    )
    return counter, history


def sample_masks(model, n: int = 256, seed: int = 123):
    """n generator layers ``[n, R, R, 4]`` (inference mode) for figures and statistics."""
    z = tf.random.stateless_uniform([n, model.latent_dim], [seed, 0], -1.0, 1.0)
    return np.asarray(model.generator(z, training=False))


def mask_metric(r):
    pixel_scale = (r["window"] / r["resolution"]) ** 2

    def fn(model):
        st = mask_statistics(sample_masks(model, 128)[..., 3], pixel_scale=pixel_scale)
        return {k: v for k, v in st.items() if k != "areas"}

    return fn


def write_figures(model, batch, model_dir: Path, n: int = 12):
    """instances.png, masks.png, composites.png, carved.png (Dai Figs. 8-11) + TensorBoard
    images."""
    lay = sample_masks(model, n)
    write_png(model_dir / "instances.png", tile_rows([lay[..., :3]], min_cell=64))
    write_png(model_dir / "masks.png", tile_rows([np.repeat(lay[..., 3:], 3, -1)], min_cell=64))
    bg = batch["background"][:n]
    out = model.generate(int(bg.shape[0]), background=bg, training=False, return_all=True)
    write_png(
        model_dir / "composites.png",
        tile_rows(
            [batch["real"][:n], out["composite"]],
            min_cell=64,
            titles=["real patch", "composite"],
        ),
    )
    carved = [out["carved"][:, i] for i in range(model.num_layers)]
    write_png(
        model_dir / "carved.png",
        tile_rows(
            carved + [out["composite"]],
            min_cell=64,
            titles=[f"carved {i + 1}" for i in range(model.num_layers)] + ["composite"],
        ),
    )
    summary = tile_rows(
        [lay[..., :3], np.repeat(lay[..., 3:], 3, -1), lay[..., :3] * lay[..., 3:]],
        min_cell=64,
        titles=["instance", "mask", "instance x mask"],
    )
    write_png(model_dir / "figure.png", summary)
    with tf.summary.create_file_writer(str(model_dir / "tensorboard")).as_default(step=0):
        for name in ("instances", "masks", "composites", "carved"):
            tf.summary.image(
                f"final/{name}", np.asarray(Image.open(model_dir / f"{name}.png"))[None], step=0
            )


def _data_spec(ctx) -> str:
    """`--data`, else the default nuclei image when it is here; a ValueError without either."""
    data = ctx.data or (str(DEFAULT_IMAGE) if DEFAULT_IMAGE.exists() else None)
    if data is None:
        raise ValueError(
            "data: expected --data IMAGE (one image of a dense homogeneous cluster), a folder "
            "or several images of one kind separated by commas"
        )
    return data


def _prepare_images(paths, config: HocConfig) -> tuple:
    """(images, infos, windows, config): the images as the model sees them, and their windows."""
    raw = [load_image(p) for p in paths]
    if not config.normalise:
        return raw, [{} for _ in raw], [config.window] * len(raw), config
    prepared = [prepare_image(im, config.window_per_sigma) for im in raw]
    images = [p[0] for p in prepared]
    infos = [p[1] for p in prepared]
    kinds = {(i["polarity"], i["colour"]) for i in infos}
    if len(kinds) > 1:
        print(
            "hoc: warning: the images are not of one kind (polarity, colour: "
            f"{sorted(kinds)}); "
            f"each is normalised to bright nuclei on a dark background",
            flush=True,
        )
    windows = [i["window"] for i in infos]
    if config.window is None:
        config = dataclasses.replace(config, window=windows[0])
    else:  # a given window is the first image's; the others follow their own scale
        windows = [
            max(4, int(round(config.window * i["sigma"] / infos[0]["sigma"]))) for i in infos
        ]
    return images, infos, windows, config


def _resolve_run(config: HocConfig, images, windows, data, paths, infos) -> dict:
    """`resolve` on the first image, plus the data, each image's record and window."""
    r = resolve(config, images[0])
    if not config.normalise:
        windows = [r["window"]] * len(images)
    r["data"] = str(data)
    r["images"] = [dict(path=str(p), **i) for p, i in zip(paths, infos)]
    r["windows"] = windows
    return r


def _save_resolved(r: dict, model_dir: Path) -> None:
    """`model_dir/hoc.json` (the resolved options) and their one-line summary."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f"hoc.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(r, indent=2, default=float))
    os.replace(tmp, model_dir / "hoc.json")
    print(
        f"hoc: window {r['window']} px -> {r['resolution']} px, {r['num_layers']} layers, padding "
        f"{r['padding']}, a {r['a']:.4f}, background {r['background']}, density "
        f"{r['density']:.2f}/window",
        flush=True,
    )


def _gan_phase(model, ds, r: dict, ctx, t_start: float) -> dict:
    """The GAN training (`run_fit`), within the budget less the counter's share."""
    budget = ctx.budget_minutes
    gan_ctx = ctx
    if budget is not None:
        gan_ctx = dataclasses.replace(
            ctx,
            budget_minutes=max(
                0.1, budget * (1 - r["counter_fraction"]) - (time.time() - t_start) / 60
            ),
        )
    return run_fit(
        model,
        ds,
        gan_ctx,
        total_steps=ctx.resolve_steps(r["steps"]),
        checkpoint_every=r["checkpoint_every"],
        log_every=r["log_every"],
        image_every=r["image_every"],
        metric_fns={"masks": mask_metric(r)},
    )


def _counter_time_limit(budget, r: dict, t_start: float):
    """Seconds for the counter phase, at least its share of the budget (None: no budget)."""
    # the counter keeps its share even when the GAN phase overran (start-up, figures, a loaded
    # machine): until issue 19 it could be left 10 s, i.e. one step, on a busy 2-core machine
    if budget is None:
        return None
    return max(r["counter_fraction"] * budget * 60, budget * 60 - (time.time() - t_start) - 20)


def _save_generator(model, model_dir: Path) -> None:
    """`model_dir/generator.weights.h5`, written under a temporary name then renamed."""
    gen_path = model_dir / "generator.weights.h5"
    model.generator.save_weights(str(gen_path.with_name(f"generator.tmp-{os.getpid()}.weights.h5")))
    os.replace(gen_path.with_name(f"generator.tmp-{os.getpid()}.weights.h5"), gen_path)


def _final_metrics(result, model, counter, history, image, r: dict, t_start: float) -> dict:
    """The run's figures: fit's scalars, mask statistics, the image's count, counter loss, time."""
    stats = mask_metric(r)(model)
    count = counting.count_image(
        counter, image, r["window"], r["resolution"], r["counter_sigma"], grayscale=r["grayscale"]
    )
    final = {k: float(v) for k, v in result.items() if isinstance(v, (int, float, np.floating))}
    final.update({f"masks_{k}": float(v) for k, v in stats.items()})
    final["count"] = float(count["count"])
    final["counter_loss"] = float(history[-1][1]) if history else float("nan")
    final["seconds_total"] = time.time() - t_start
    return final


def train_hoc(config: HocConfig, ctx) -> dict:
    """train_fn of `hoc` / `hoc_paper` (see the module docstring)."""
    t_start = time.time()
    data = _data_spec(ctx)
    paths = data_paths(data)
    images, infos, windows, config = _prepare_images(paths, config)
    r = _resolve_run(config, images, windows, data, paths, infos)
    model_dir = Path(ctx.model_dir)
    _save_resolved(r, model_dir)
    with ctx.strategy.scope():
        model = build_model(r, seed=ctx.seed)
    ds = make_dataset_multi(images, r["windows"], r, seed=ctx.seed)
    result = _gan_phase(model, ds, r, ctx, t_start)
    write_figures(model, next(iter(ds)), model_dir)
    # Counter phase: learned from the generator's own composites only.
    limit = _counter_time_limit(ctx.budget_minutes, r, t_start)
    image = images[0]  # the first image, already normalised
    counter, history = counter_stage(model, ds, image, r, model_dir, time_limit_s=limit)
    _save_generator(model, model_dir)
    final = _final_metrics(result, model, counter, history, image, r, t_start)
    print("hoc: " + json.dumps(final), flush=True)
    return final


register_experiment(
    "hoc",
    hoc_config(),
    train_hoc,
    "Dai et al. 2019 app. 2: instances, masks and counts from one image (small, 2 CPU cores)",
)
register_experiment(
    "hoc_paper",
    hoc_paper_config(),
    train_hoc,
    "Dai et al. 2019 app. 2 with Table 2 networks at 64x64; --override setting=crowd|fruit|seed",
)
