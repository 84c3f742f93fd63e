"""Real patches and backgrounds from the one image (Dai et al. 2019, application 2, "Data
Preparation").

- `extract_patches`: windows of `window` pixels (about 1.5 x the widest instance) resized to
  `resolution` (64 in the paper), with horizontal and vertical flips.
- `disk_background`: the paper's background provider, real patches with a black disk of radius about
  20 px at 64x64 (``radius = 20 / 64 * resolution``) in the centre.
- `inpaint_background`: "real patches with missing regions" for sparse images: the classical
  foreground (Otsu) is filled with the surrounding background level plus background noise, so the
  background provider shows real background texture and no instance.
- `rescale_image` + `random_patch_dataset`: the training pipeline. Resizing the whole image once by
  ``resolution / window`` and cutting random ``resolution``-sized crops is the same as cutting
  random
  windows and resizing each (same area resampling for real patches and backgrounds).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from indep_seg import checks
from indep_seg.hoc.estimate import significant_foreground

__all__ = [
    "rescale_image",
    "extract_patches",
    "disk_background",
    "disk_mask",
    "inpaint_background",
    "random_patch_dataset",
]


def _check_image(image, name="image"):
    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected float [H, W, 3] in [0, 1], got shape {a.shape}")
    return a


def _check_window(window, image_hw, name="window"):
    window = checks.check_int(window, name, minimum=2)
    h, w = image_hw
    if window > min(h, w):
        raise ValueError(
            f"{name}: expected a window no larger than the image ({h}x{w} pixels), "
            f"got {window}: the image is smaller than the window"
        )
    return window


def rescale_image(image, window: int, resolution: int) -> np.ndarray:
    """Resize the whole image by ``resolution / window`` (area resampling when shrinking)."""
    a = _check_image(image)
    window = _check_window(window, a.shape[:2])
    resolution = checks.check_int(resolution, "resolution", minimum=2)
    scale = resolution / window
    h, w = a.shape[:2]
    nh, nw = max(resolution, int(round(h * scale))), max(resolution, int(round(w * scale)))
    chans = [
        np.asarray(
            Image.fromarray(a[..., c]).resize((nw, nh), Image.BOX if scale < 1 else Image.BILINEAR)
        )
        for c in range(3)
    ]
    return np.clip(np.stack(chans, -1), 0, 1).astype(np.float32)


def extract_patches(
    image, window: int, resolution: int, stride: int | None = None, flips: bool = True
) -> np.ndarray:
    """All `window` x `window` windows on a grid of step `stride` (default window // 2), each
    resized to
    `resolution`; with `flips` also their horizontal, vertical and both-way flips (Dai et al.: "Both
    horizontal flip and vertical flip are used").

    Returns float32 ``[K, resolution, resolution, 3]``; K = rows * cols * (4 if flips else 1),
    ordered
    originals first, then h-flips, v-flips, hv-flips; windows row-major.
    """
    a = _check_image(image)
    h, w = a.shape[:2]
    window = _check_window(window, (h, w))
    resolution = checks.check_int(resolution, "resolution", minimum=2)
    stride = (
        max(1, window // 2) if stride is None else checks.check_int(stride, "stride", minimum=1)
    )
    ys = range(0, h - window + 1, stride)
    xs = range(0, w - window + 1, stride)
    out = []
    for y in ys:
        for x in xs:
            crop = a[y : y + window, x : x + window]
            if window != resolution:
                crop = np.stack(
                    [
                        np.asarray(
                            Image.fromarray(crop[..., c]).resize(
                                (resolution, resolution),
                                Image.BOX if window > resolution else Image.BILINEAR,
                            )
                        )
                        for c in range(3)
                    ],
                    -1,
                )
            out.append(crop)
    p = np.clip(np.stack(out), 0, 1).astype(np.float32)
    if flips:
        p = np.concatenate([p, p[:, :, ::-1], p[:, ::-1], p[:, ::-1, ::-1]], axis=0)
    return p


def disk_mask(resolution: int, radius: float) -> np.ndarray:
    """Float ``[R, R, 1]``: 1 inside the centred disk of `radius` pixels, 0 outside."""
    resolution = checks.check_int(resolution, "resolution", minimum=1)
    checks.check_positive_number(radius, "radius", allow_zero=True)
    c = (resolution - 1) / 2.0
    yy, xx = np.mgrid[:resolution, :resolution]
    return (((yy - c) ** 2 + (xx - c) ** 2) <= float(radius) ** 2).astype(np.float32)[..., None]


def disk_background(patches, radius: float | None = None):
    """Dai et al. 2019 background provider: real patches with a black disk in the centre.

    Args:
        patches: float ``[B, R, R, C]`` (NumPy or tensor).
        radius: disk radius in pixels; default ``20 / 64 * R`` (the paper's "roughly 20 pixels" at
        64).
    """
    shape = tuple(patches.shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"patches: expected square patches [B, R, R, C], got shape {shape}")
    r = 20.0 / 64.0 * shape[1] if radius is None else radius
    keep = 1.0 - disk_mask(int(shape[1]), r)
    if isinstance(patches, np.ndarray):
        return (patches * keep[None]).astype(patches.dtype)
    return patches * tf.constant(keep[None], dtype=patches.dtype)


def inpaint_background(image, foreground=None, seed: int = 0, dilate: int = 4) -> np.ndarray:
    """ "Real patches with missing regions": the foreground filled with background.

    Each foreground pixel (by default every pixel that stands out of the background noise,
    `estimate.significant_foreground`, dilated by `dilate` px) gets the large-scale background
    level (normalised convolution of the background pixels, from 16 px up until every pixel is
    reached: at smaller scales the level next to an instance still carries its halo, and each
    filled instance would stay as a brighter ghost) plus a residual drawn from the background's
    own fine texture, so the result keeps the real noise.
    """
    a = _check_image(image)
    if foreground is None:
        foreground = significant_foreground(a)
    fg = np.asarray(foreground, bool)
    if fg.shape != a.shape[:2]:
        raise ValueError(f"foreground: expected shape {a.shape[:2]}, got {fg.shape}")
    if dilate > 0:
        fg = ndimage.binary_dilation(fg, iterations=int(dilate))
    bgm = (~fg).astype(np.float32)
    if bgm.sum() == 0:
        raise ValueError(
            "image: no background pixels left to inpaint from (foreground covers everything)"
        )
    out = a.copy()
    rng = np.random.default_rng(seed)
    level = np.zeros_like(a)
    filled = np.zeros(a.shape[:2], bool)
    for sigma in (16, 32, 64, 128):
        wsum = ndimage.gaussian_filter(bgm, sigma)
        ok = (wsum > 1e-3) & ~filled
        for c in range(3):
            lv = ndimage.gaussian_filter(a[..., c] * bgm, sigma) / np.maximum(wsum, 1e-6)
            level[..., c][ok] = lv[ok]
        filled |= ok
        if filled.all():
            break
    level[~filled] = (a * bgm[..., None]).sum((0, 1)) / bgm.sum()
    smooth_bg = np.stack(
        [
            ndimage.gaussian_filter(a[..., c] * bgm, 2)
            / np.maximum(ndimage.gaussian_filter(bgm, 2), 1e-6)
            for c in range(3)
        ],
        -1,
    )
    resid = (a - smooth_bg)[~fg]
    idx = rng.integers(0, len(resid), size=int(fg.sum()))
    out[fg] = level[fg] + resid[idx]
    return np.clip(out, 0, 1).astype(np.float32)


def random_patch_dataset(
    scaled_image,
    resolution: int,
    batch_size: int,
    scaled_background=None,
    background: str = "disk",
    disk_radius: float | None = None,
    flips: bool = True,
    seed: int = 0,
) -> tf.data.Dataset:
    """Infinite ``tf.data`` of ``{"real": [B, R, R, 3], "background": [B, R, R, 3]}``.

    Real patches are random crops of the rescaled image with random h/v flips; the background
    batch is independent: `"disk"` = other real crops with the centred black disk, `"inpaint"` =
    crops of `scaled_background` (the inpainted image), `"black"` = zeros.
    """
    checks.check_choice(background, "background", ("disk", "inpaint", "black"))
    img = tf.constant(_check_image(scaled_image, "scaled_image"))
    if min(img.shape[0], img.shape[1]) < resolution:
        raise ValueError(
            f"scaled_image: expected at least {resolution} px on each side, got {img.shape[:2]}"
        )
    bg_img = None
    if background == "inpaint":
        if scaled_background is None:
            raise ValueError("scaled_background: required when background='inpaint'")
        bg_img = tf.constant(_check_image(scaled_background, "scaled_background"))
    keep = tf.constant(
        1.0
        - disk_mask(resolution, 20.0 / 64.0 * resolution if disk_radius is None else disk_radius)
    )

    def crops(source, n, s):
        seeds = tf.random.experimental.stateless_split(s, 3)
        h, w = tf.shape(source)[0], tf.shape(source)[1]
        ys = tf.random.stateless_uniform([n], seeds[0], 0, h - resolution + 1, dtype=tf.int32)
        xs = tf.random.stateless_uniform([n], seeds[1], 0, w - resolution + 1, dtype=tf.int32)
        idx = tf.range(resolution)
        rows = ys[:, None] + idx[None]
        cols = xs[:, None] + idx[None]
        p = tf.gather(source, rows)  # [n, R, W, 3]
        p = tf.gather(p, cols, axis=2, batch_dims=1)  # [n, R, R, 3]
        if flips:
            f = tf.random.stateless_uniform([n, 2], seeds[2]) < 0.5
            p = tf.where(f[:, 0, None, None, None], p[:, :, ::-1], p)
            p = tf.where(f[:, 1, None, None, None], p[:, ::-1], p)
        return p

    def make(step):
        s = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), step]), 2)
        real = crops(img, batch_size, s[0])
        if background == "disk":
            bg = crops(img, batch_size, s[1]) * keep
        elif background == "inpaint":
            bg = crops(bg_img, batch_size, s[1])
        else:
            bg = tf.zeros_like(real)
        return {"real": real, "background": bg}

    return tf.data.Dataset.range(2**62).map(make, num_parallel_calls=1).prefetch(2)
