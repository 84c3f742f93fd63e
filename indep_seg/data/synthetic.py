"""The embedded default dataset: procedural objects on procedural backgrounds (numpy, seeded).

Every image is a function of `(seed, index)` only (`np.random.default_rng([seed, index])`), so
any image can be generated alone, in any order, in parallel, on any machine, and always
comes out the same.

Design, so that box-level segmentation (Dai et al. 2019) is learnable on it in minutes:
- **Foreground objects**: one per image, of varied shapes (stars, thin rotated ellipses,
  radial blobs, crescents, rings, crosses, four-legged "creatures") chosen so that the object
  covers 20-50 % of its tight box (like a horse in its box, unlike a filled square), with
  saturated colours and bold textures (stripes, checkers, spots, gradients, coarse noise,
  shaded solids). The mask is exact (the object's pixels, no antialiasing) and the box is the
  mask's tight box.
- **Backgrounds**: every image draws its background from the same stationary distribution
  (desaturated earthy colours, multi-scale smooth noise, a gentle gradient, fine grain and
  thin short "grass" strokes as clutter that is not object-like). A background patch taken
  anywhere outside the box therefore looks like the background inside the box, at the same
  scale and sharpness (DESIGN.md §7), while its statistics differ from the objects'.

`make_cluster_image` draws one dense image of many similar blobs (nucleus-like) with an
instance label map, for the dense-cluster application (Dai et al. 2019, Sec. 4.3).
"""

from __future__ import annotations

import io
import os

import numpy as np

__all__ = [
    "generate_example",
    "generate_batch",
    "read_synthetic",
    "write_synthetic_dataset",
    "make_cluster_image",
    "write_cluster_image",
    "SHAPES",
    "TEXTURES",
]

SHAPES = ("star", "thin_ellipse", "blob", "crescent", "ring", "cross", "creature")
TEXTURES = ("stripes", "checker", "spots", "gradient", "noise", "shaded")
#: Fill range: fraction of the tight box covered by the object.
FILL_RANGE = (0.20, 0.50)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- helpers


def _hsv_to_rgb(h, s, v):
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array(
        [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32
    )


def _smooth_noise(rng, h, w, cell, channels=1):
    """Value noise: a random grid every `cell` pixels, smoothstep-interpolated. Range ~[0, 1]."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    oy, ox = rng.random(2) * cell
    y = (np.arange(h, dtype=np.float32) + oy) / cell
    x = (np.arange(w, dtype=np.float32) + ox) / cell
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    fy = (fy * fy * (3 - 2 * fy))[:, None, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    top = g00 * (1 - fx) + g01 * fx
    bottom = g10 * (1 - fx) + g11 * fx
    return top * (1 - fy) + bottom * fy


def _draw_segment(canvas, rng_colour, p0, p1, width=1):
    h, w = canvas.shape[:2]
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1])) * 2) + 2
    t = np.linspace(0.0, 1.0, n)
    ys = np.round(p0[0] + (p1[0] - p0[0]) * t).astype(int)
    xs = np.round(p0[1] + (p1[1] - p0[1]) * t).astype(int)
    for d in range(width):
        yy, xx = np.clip(ys + d, 0, h - 1), np.clip(xs, 0, w - 1)
        canvas[yy, xx] = rng_colour


# ----------------------------------------------------------------------------- backgrounds


def _background(rng, h, w):
    """A stationary, desaturated, textured background (same distribution for every image)."""
    hue = rng.random()
    sat = rng.uniform(0.05, 0.30)
    val = rng.uniform(0.35, 0.72)
    c0 = _hsv_to_rgb(hue, sat, val)
    c1 = _hsv_to_rgb(
        (hue + rng.uniform(-0.08, 0.08)) % 1.0,
        np.clip(sat + rng.uniform(-0.08, 0.08), 0, 1),
        np.clip(val + rng.choice([-1, 1]) * rng.uniform(0.10, 0.22), 0.1, 0.9),
    )
    t = (
        _smooth_noise(rng, h, w, rng.uniform(20, 40)) * 0.55
        + _smooth_noise(rng, h, w, rng.uniform(7, 12)) * 0.30
        + _smooth_noise(rng, h, w, rng.uniform(2.5, 4)) * 0.15
    )
    t = np.clip((t - 0.5) * rng.uniform(1.2, 2.0) + 0.5, 0, 1)
    bg = c0 * (1 - t) + c1 * t
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w) - 0.5)[..., None]
    bg = bg + rng.uniform(-0.18, 0.18) * ramp
    # Clutter: thin short strokes ("grass", scratches) in background colours, not object-like.
    strokes = np.zeros((h, w, 3), np.float32)
    stroke_mask = np.zeros((h, w, 1), np.float32)
    n_strokes = int(rng.integers(int(0.001 * h * w), int(0.0025 * h * w) + 2))
    for _ in range(n_strokes):
        p0 = rng.uniform([0, 0], [h, w])
        length = rng.uniform(4, 14)
        a = rng.uniform(-np.pi, np.pi)
        p1 = p0 + length * np.array([np.sin(a), np.cos(a)])
        colour = (c0 if rng.random() < 0.5 else c1) * rng.uniform(0.75, 1.25)
        _draw_segment(strokes, colour, p0, p1)
        _draw_segment(stroke_mask, 1.0, p0, p1)
    bg = bg * (1 - stroke_mask) + strokes * stroke_mask
    grain = rng.normal(0, rng.uniform(0.015, 0.035), (h, w, 1)).astype(np.float32)
    bg = bg + grain + rng.normal(0, 0.008, (h, w, 3)).astype(np.float32)
    return bg.astype(np.float32)


# ----------------------------------------------------------------------------- shapes


def _shape_mask(rng, kind, n):
    """Boolean `[n, n]` mask of a shape of the given kind, centred, of radius ~n/2."""
    r = np.arange(n, dtype=np.float32) - (n - 1) / 2.0
    yy, xx = np.meshgrid(r, r, indexing="ij")
    scale = (n - 2) / 2.0
    angle = rng.uniform(0, 2 * np.pi)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / scale
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / scale
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if kind == "star":
        k = int(rng.integers(4, 9))
        inner = rng.uniform(0.28, 0.5)
        phase = (theta % (2 * np.pi / k)) / (2 * np.pi / k)
        tip = np.abs(2 * phase - 1)
        return rho <= inner + (1 - inner) * tip ** rng.uniform(1.0, 2.0)
    if kind == "thin_ellipse":
        b = 1.0 / rng.uniform(2.5, 5.0)
        # Rotation fixed between 20 and 70 degrees from the axes, so the box is not filled.
        a2 = rng.uniform(np.deg2rad(20), np.deg2rad(70)) + rng.integers(0, 4) * np.pi / 2
        uu = (xx * np.cos(a2) + yy * np.sin(a2)) / scale
        vv = (-xx * np.sin(a2) + yy * np.cos(a2)) / scale
        bend = rng.uniform(-0.3, 0.3) * uu**2
        return (uu**2 + ((vv - bend) / b) ** 2) <= 1.0
    if kind == "blob":
        radius = np.ones_like(theta)
        for k in range(2, 7):
            radius += rng.uniform(0.1, 0.5) / k**0.5 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        radius = (np.clip(radius, 0.05, None) / radius.max()) ** rng.uniform(1.5, 3.0)
        return rho <= radius
    if kind == "crescent":
        off = rng.uniform(0.35, 0.7)
        inner = rng.uniform(0.75, 0.95)
        return (rho <= 1.0) & (np.hypot(u - off, v) > inner)
    if kind == "ring":
        inner = rng.uniform(0.6, 0.8)
        wob = 1 + 0.08 * np.cos(3 * theta + rng.uniform(0, 6.28))
        return (rho <= wob) & (rho >= inner * wob)
    if kind == "cross":
        w1, w2 = rng.uniform(0.18, 0.35, size=2)
        c = rng.uniform(-0.5, 0.5)
        return ((np.abs(v) <= w1) & (np.abs(u) <= 1.0)) | (
            (np.abs(u - c) <= w2) & (np.abs(v) <= 1.0)
        )
    if kind == "creature":
        # u: along the body; v: down. Body, four legs, neck + head, tail (a horse-like silhouette).
        uu = (xx * np.cos(angle * 0.1) + yy * np.sin(angle * 0.1)) / scale
        vv = (-xx * np.sin(angle * 0.1) + yy * np.cos(angle * 0.1)) / scale
        if rng.random() < 0.5:
            uu = -uu
        body = ((uu / 0.62) ** 2 + ((vv + 0.12) / rng.uniform(0.2, 0.3)) ** 2) <= 1.0
        legs = np.zeros_like(body)
        leg_w = rng.uniform(0.05, 0.09)
        for x_leg in (-0.5, -0.35, 0.3, 0.45):
            x_leg = x_leg + rng.uniform(-0.05, 0.05)
            legs |= (
                (np.abs(uu - x_leg - 0.15 * (vv - 0.1)) <= leg_w)
                & (vv >= -0.1)
                & (vv <= rng.uniform(0.75, 0.95))
            )
        neck = (np.abs((uu - 0.55) + 0.6 * (vv + 0.25)) <= 0.1) & (vv <= -0.1) & (vv >= -0.7)
        head = (((uu - 0.8) / 0.2) ** 2 + ((vv + 0.72) / 0.11) ** 2) <= 1.0
        tail = (np.abs((uu + 0.7) - 0.4 * (vv + 0.1)) <= 0.04) & (vv >= -0.15) & (vv <= 0.45)
        return body | legs | neck | head | tail
    raise ValueError(f"kind: expected one of {SHAPES}, got {kind!r}")


def _tight_box(mask):
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def _object_mask(rng, side):
    """A shape mask cropped to its tight box, covering `FILL_RANGE` of the box (rejection
    sampling)."""
    best = None
    for _ in range(40):
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        m = _shape_mask(rng, kind, side)
        if not m.any():
            continue
        x0, y0, x1, y1 = _tight_box(m)
        m = m[y0:y1, x0:x1]
        if min(m.shape) < max(4, side // 6):
            continue
        fill = m.mean()
        if FILL_RANGE[0] <= fill <= FILL_RANGE[1]:
            return m, kind
        score = abs(fill - np.clip(fill, *FILL_RANGE))
        if best is None or score < best[0]:
            best = (score, m, kind)
    return best[1], best[2]


# ----------------------------------------------------------------------------- textures


def _object_colours(rng):
    hue = rng.random()
    c0 = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
    hue2 = (hue + rng.choice([rng.uniform(0.05, 0.15), rng.uniform(0.35, 0.65)])) % 1.0
    c1 = _hsv_to_rgb(hue2, rng.uniform(0.5, 1.0), rng.uniform(0.15, 0.95))
    return c0, c1


def _texture(rng, h, w):
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    c0, c1 = _object_colours(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, np.pi)
    proj = xx * np.cos(a) + yy * np.sin(a)
    if kind == "stripes":
        period = rng.uniform(4.0, 12.0)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period)
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == "checker":
        p = rng.uniform(3.0, 9.0)
        q = -xx * np.sin(a) + yy * np.cos(a)
        t = ((np.floor(proj / p) + np.floor(q / p)) % 2).astype(np.float32)
    elif kind == "spots":
        t = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(4, 12))):
            cy, cx, r = (
                rng.uniform(0, h),
                rng.uniform(0, w),
                rng.uniform(1.5, max(2.0, min(h, w) / 7)),
            )
            t[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    elif kind == "gradient":
        t = (proj - proj.min()) / max(1e-6, proj.max() - proj.min())
    elif kind == "noise":
        t = np.clip((_smooth_noise(rng, h, w, rng.uniform(3, 8))[..., 0] - 0.5) * 2.5 + 0.5, 0, 1)
    else:  # shaded solid
        t = np.zeros((h, w), np.float32)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    # Light from one side: shading across the object.
    cy, cx = (h - 1) / 2, (w - 1) / 2
    la = rng.uniform(0, 2 * np.pi)
    light = ((xx - cx) * np.cos(la) + (yy - cy) * np.sin(la)) / max(h, w)
    img = img * (1.0 + rng.uniform(0.2, 0.5) * light[..., None])
    img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)
    return img.astype(np.float32), kind


# ----------------------------------------------------------------------------- public API


def generate_example(index: int, seed: int = 0, size: int = 128) -> dict:
    """Image `index` of the synthetic dataset `seed`.

    Args:
        index: non-negative image index.
        seed: dataset seed; `(seed, index)` determines the image completely.
        size: image side in pixels (>= 32).

    Returns:
        dict with `image` uint8 `[size, size, 3]`, `mask` uint8 0/1 `[size, size, 1]`,
        `boxes` float32 `[1, 4]` (tight box of the mask, pixels x0, y0, x1, y1 exclusive),
        `shape` and `texture` names.
    """
    index = _check_int("index", index, 0)
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, 32)
    rng = np.random.default_rng([seed, index])
    bg = _background(rng, size, size)
    side = int(rng.uniform(0.38, 0.62) * size)
    obj, kind = _object_mask(rng, side)
    oh, ow = obj.shape
    y0 = int(rng.integers(1, size - oh)) if size - oh > 1 else 0
    x0 = int(rng.integers(1, size - ow)) if size - ow > 1 else 0
    texture, tex_kind = _texture(rng, oh, ow)
    image = bg.copy()
    region = image[y0 : y0 + oh, x0 : x0 + ow]
    region[obj] = texture[obj]
    mask = np.zeros((size, size, 1), np.uint8)
    mask[y0 : y0 + oh, x0 : x0 + ow, 0] = obj
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    boxes = np.array([[x0, y0, x0 + ow, y0 + oh]], np.float32)
    return {"image": image, "mask": mask, "boxes": boxes, "shape": kind, "texture": tex_kind}


def generate_batch(num_images: int, seed: int = 0, size: int = 128, start: int = 0) -> dict:
    """Images `start .. start + num_images - 1` stacked: `image [N, S, S, 3]`, `mask`, `boxes [N,
    4]`."""
    num_images = _check_int("num_images", num_images, 1)
    examples = [generate_example(start + i, seed, size) for i in range(num_images)]
    return {
        "image": np.stack([e["image"] for e in examples]),
        "mask": np.stack([e["mask"] for e in examples]),
        "boxes": np.concatenate([e["boxes"] for e in examples]),
    }


def source_id(index: int, seed: int = 0) -> str:
    return f"synthetic-{seed}-{index:06d}.png"


def read_synthetic(num_images: int = 1000, seed: int = 0, size: int = 128):
    """The synthetic dataset as a `tf.data.Dataset` of decoded elements (see
    `indep_seg.data.decode`).

    Images are generated on the fly in parallel (`num_parallel_calls=AUTOTUNE`, order kept);
    cache the dataset (or a pipeline on it) to generate each image once.
    """
    import tensorflow as tf

    num_images = _check_int("num_images", num_images, 1)
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, 32)

    def gen(i):
        e = generate_example(int(i), seed, size)
        return e["image"], e["mask"], e["boxes"]

    def to_element(i):
        image, mask, boxes = tf.numpy_function(
            gen, [i], [tf.uint8, tf.uint8, tf.float32], stateful=False
        )
        image.set_shape([size, size, 3])
        mask.set_shape([size, size, 1])
        boxes.set_shape([1, 4])
        sid = tf.strings.join(
            [f"synthetic-{seed}-", tf.strings.as_string(i, width=6, fill="0"), ".png"]
        )
        return {
            "image": image,
            "mask": mask,
            "has_mask": tf.constant(True),
            "boxes": boxes,
            "source_id": sid,
        }

    ds = tf.data.Dataset.range(num_images).map(
        to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    options = tf.data.Options()
    # Generated from a range, not files: shard by data under tf.distribute.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _atomic_write_bytes(path, data: bytes):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _png_bytes(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_synthetic_dataset(out_dir, num_images: int = 200, seed: int = 0, size: int = 128) -> dict:
    """Writes the dataset as files: `OUT/images/NNNNNN.png`, `OUT/masks/NNNNNN.png` (0/255) and
    `OUT/boxes.csv`.

    The folder is readable by `read_image_folder(OUT/images, OUT/boxes.csv, OUT/masks)`, by
    `read_dataset(OUT)` and by the converters. Files are written atomically.

    Returns:
        dict with the `images`, `masks` and `boxes_csv` paths.
    """
    num_images = _check_int("num_images", num_images, 1)
    out_dir = os.fspath(out_dir)
    images_dir = os.path.join(out_dir, "images")
    masks_dir = os.path.join(out_dir, "masks")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(masks_dir, exist_ok=True)
    rows = ["filename,x0,y0,x1,y1"]
    for i in range(num_images):
        e = generate_example(i, seed, size)
        name = f"{i:06d}.png"
        _atomic_write_bytes(os.path.join(images_dir, name), _png_bytes(e["image"]))
        _atomic_write_bytes(os.path.join(masks_dir, name), _png_bytes(e["mask"][..., 0] * 255))
        x0, y0, x1, y1 = (int(v) for v in e["boxes"][0])
        rows.append(f"{name},{x0},{y0},{x1},{y1}")
    csv_path = os.path.join(out_dir, "boxes.csv")
    _atomic_write_bytes(csv_path, ("\n".join(rows) + "\n").encode())
    return {"images": images_dir, "masks": masks_dir, "boxes_csv": csv_path}


# ----------------------------------------------------------------------------- dense cluster


def make_cluster_image(
    size: int = 256, num_objects: int = 60, radius: float = 7.0, seed: int = 0, clusters: int = 5
):
    """One dense image of many similar blobs (nucleus-like) and its instance label map.

    Blobs are slightly irregular ellipses of radius `radius * U(0.8, 1.2)`, bright with a
    little internal texture, on a dark noisy background, gathered around `clusters` centres;
    they may touch but never overlap.

    Returns:
        `(image uint8 [size, size, 3], labels uint16 [size, size])`; label 0 is background and
        ids 1..n are the n placed objects (n <= num_objects when space runs out).
    """
    size = _check_int("size", size, 16)
    num_objects = _check_int("num_objects", num_objects, 1)
    clusters = _check_int("clusters", clusters, 1)
    if not (np.isfinite(radius) and 1.0 <= radius <= size / 4):
        raise ValueError(f"radius: expected a number in [1, size/4], got {radius!r}")
    rng = np.random.default_rng([seed, 7_777_777])
    t = (
        _smooth_noise(rng, size, size, size / 6)[..., 0] * 0.6
        + _smooth_noise(rng, size, size, 3)[..., 0] * 0.4
    )
    image = 0.05 + 0.07 * t
    labels = np.zeros((size, size), np.uint16)
    centres = rng.uniform(radius * 2, size - radius * 2, size=(clusters, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    placed = 0
    for _ in range(num_objects * 30):
        if placed >= num_objects:
            break
        c = centres[int(rng.integers(clusters))]
        cy, cx = c + rng.normal(0, size / 7, 2)
        r = radius * rng.uniform(0.8, 1.2)
        if not (r + 1 <= cy <= size - r - 1 and r + 1 <= cx <= size - r - 1):
            continue
        aspect = rng.uniform(1.0, 1.5)
        ang = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)) / (r * aspect**0.5)
        v = (-(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)) / (r / aspect**0.5)
        theta = np.arctan2(v, u)
        wobble = (
            1
            + 0.08 * np.cos(3 * theta + rng.uniform(0, 6.28))
            + 0.05 * np.cos(5 * theta + rng.uniform(0, 6.28))
        )
        rho = np.hypot(u, v)
        m = rho <= wobble
        if (labels[m] > 0).any():
            continue
        placed += 1
        labels[m] = placed
        brightness = rng.uniform(0.6, 0.9)
        inner = brightness * (1 - 0.25 * (rho / wobble) ** 2)
        image = np.where(m, inner, image)
    tex = _smooth_noise(rng, size, size, 2.5)[..., 0]
    image = image * (1 + 0.12 * (tex - 0.5) * (labels > 0)) + rng.normal(0, 0.015, (size, size))
    tint = np.array([0.62, 0.55, 1.0], np.float32)
    rgb = np.clip(np.round(image[..., None] * tint * 255.0), 0, 255).astype(np.uint8)
    return rgb, labels


def write_cluster_image(
    out_dir, size: int = 256, num_objects: int = 60, radius: float = 7.0, seed: int = 0
) -> dict:
    """Writes `OUT/image.png` and `OUT/instances.png` (16-bit label map, as
    datasets/nuclei_dsb2018)."""
    from PIL import Image

    image, labels = make_cluster_image(size, num_objects, radius, seed)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    image_path = os.path.join(out_dir, "image.png")
    labels_path = os.path.join(out_dir, "instances.png")
    _atomic_write_bytes(image_path, _png_bytes(image))
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint16)).save(buf, format="PNG")
    _atomic_write_bytes(labels_path, buf.getvalue())
    return {"image": image_path, "instances": labels_path, "count": int(labels.max())}
