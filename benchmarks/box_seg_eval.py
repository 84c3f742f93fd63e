"""The box-level evaluation protocol of ../shared/datasets/README.md, on its data sets and halves.

Data sets: `horse` (Weizmann, boxes from the masks) and `ecssd`; halves `tune`, `test`, `all`
(horse001-164 / 165-328, ECSSD 0001-0500 / 0501-1000). Settings are chosen on `tune` and
reported on `test`; masks only score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
EVAL_RES = 128

#: (image folder, mask folder, tuning-half stems, test-half stems)
HALVES = {
    "horse": (
        "weizmann_horse/rgb",
        "weizmann_horse/figure_ground",
        [f"horse{i:03d}" for i in range(1, 165)],
        [f"horse{i:03d}" for i in range(165, 329)],
    ),
    "ecssd": (
        "ecssd/images",
        "ecssd/masks",
        [f"{i:04d}" for i in range(1, 501)],
        [f"{i:04d}" for i in range(501, 1001)],
    ),
}


def stems(name: str, half: str):
    _, _, tune, test = HALVES[name]
    return {"tune": tune, "test": test, "all": tune + test}[half]


def load_dataset(name: str, half: str = "all", root: Path = DATASETS):
    """`(items [(name, uint8 image, box)], gts [bool full-size masks])`; boxes from the masks.

    A photo is resized to its mask's size when they differ (the horses' masks)."""
    from PIL import Image

    img_dir, mask_dir, _, _ = HALVES[name]
    img_dir, mask_dir = root / img_dir, root / mask_dir
    by_stem = {p.stem: p for p in mask_dir.iterdir()}
    items, gts = [], []
    for stem in stems(name, half):
        ip = next(
            (
                img_dir / f"{stem}{e}"
                for e in (".jpg", ".png")
                if (img_dir / f"{stem}{e}").is_file()
            ),
            None,
        )
        if ip is None or stem not in by_stem:
            continue
        gt = np.asarray(Image.open(by_stem[stem]).convert("L")) > 127
        with Image.open(ip) as im:
            im = im.convert("RGB")
            if im.size != (gt.shape[1], gt.shape[0]):
                im = im.resize((gt.shape[1], gt.shape[0]), Image.BILINEAR)
            image = np.asarray(im)
        ys, xs = np.nonzero(gt)
        if ys.size == 0:
            continue
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        items.append((ip.name, image, box))
        gts.append(gt)
    return items, gts


class Evaluator:
    """The README protocol on full-size masks (square of half-side 0.75 max(w, h), 128 px, IoU at
    0.5)."""

    def __init__(self, items, gts):
        import tensorflow as tf

        from indep_seg.box_crop import EVAL_MARGIN, EVAL_SQUARE, box_window, crop_to_window

        self.items, self.gts = items, gts
        self.boxes = np.asarray([b for _, _, b in items], np.float32)
        self.windows = box_window(self.boxes, EVAL_MARGIN, EVAL_SQUARE).numpy()
        self.gt_crops = np.stack(
            [
                crop_to_window(
                    tf.convert_to_tensor(g[None, :, :, None].astype(np.float32)),
                    self.windows[i : i + 1],
                    EVAL_RES,
                ).numpy()[0, :, :, 0]
                > 0.5
                for i, g in enumerate(gts)
            ]
        )

    def crop_full(self, i, full_mask):
        import tensorflow as tf

        from indep_seg.box_crop import crop_to_window

        return crop_to_window(
            tf.convert_to_tensor(np.asarray(full_mask, np.float32)[None, :, :, None]),
            self.windows[i : i + 1],
            EVAL_RES,
        ).numpy()[0, :, :, 0]

    def scores(self, pred_crops):
        p = np.asarray(pred_crops) > 0.5
        g = self.gt_crops
        inter = (p & g).sum(axis=(1, 2))
        union = (p | g).sum(axis=(1, 2))
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        s = p.sum((1, 2)) + g.sum((1, 2))
        dice = np.where(s > 0, 2 * inter / np.maximum(s, 1), 1.0)
        return {"iou": float(iou.mean()), "dice": float(dice.mean()), "per_image_iou": iou}

    def evaluate_full(self, full_masks):
        return self.scores(np.stack([self.crop_full(i, m) for i, m in enumerate(full_masks)]))


def eval_crops(ev: Evaluator, res: int = EVAL_RES):
    """Evaluation-window crops of the photos `[N, res, res, 3]` uint8 and the boxes in crop
    pixels."""
    import tensorflow as tf

    from indep_seg.box_crop import crop_to_window

    imgs, boxes = [], []
    for i, (_, image, box) in enumerate(ev.items):
        img = crop_to_window(
            tf.convert_to_tensor(image[None].astype(np.float32) / 255.0), ev.windows[i : i + 1], res
        ).numpy()[0]
        imgs.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        w = ev.windows[i]
        s = res / (w[2] - w[0])
        boxes.append(
            [(box[0] - w[0]) * s, (box[1] - w[1]) * s, (box[2] - w[0]) * s, (box[3] - w[1]) * s]
        )
    return np.stack(imgs), np.asarray(boxes, np.float32)


def baseline_masks(ev: Evaluator):
    """Filled box and inscribed ellipse as evaluation crops."""
    r = EVAL_RES
    yy, xx = np.mgrid[0:r, 0:r] + 0.5
    box_m, ell_m = [], []
    for i, b in enumerate(ev.boxes):
        w = ev.windows[i]
        s = r / (w[2] - w[0])
        x0, y0, x1, y1 = (b[0] - w[0]) * s, (b[1] - w[1]) * s, (b[2] - w[0]) * s, (b[3] - w[1]) * s
        box_m.append(((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.float32))
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        ell_m.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.float32))
    return {"box": np.stack(box_m), "ellipse": np.stack(ell_m)}
