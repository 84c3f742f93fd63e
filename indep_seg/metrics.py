"""Segmentation metrics: IoU, DICE (per image, averaged over images), foreground IoU over a
dataset, and mIoU over the two classes (background, foreground).

Protocol (DRC / ILSGAN, ``../shared/datasets/README.md``): masks are binarised at 0.5
(``value > threshold``), IoU and DICE are computed per image and averaged over images.

Inputs: NumPy arrays, Python lists or eager TF tensors, shaped ``[N, H, W, 1]``,
``[N, H, W]`` or a single ``[H, W]`` mask; float in [0, 1], bool, or integer 0/1 (an 8-bit
0/255 mask must be scaled first: it raises an error naming the argument).

Empty masks: when both the prediction and the ground truth of an image are empty the union
is zero and the score is defined as ``empty_score`` (default 1.0: the prediction is exactly
right). The FID / KID / MINE metrics of ILSGAN live in `indep_seg.metrics_gan`.
"""

from __future__ import annotations

import numpy as np

from indep_seg import checks

__all__ = ["binarize", "iou", "dice", "foreground_iou", "mean_iou", "SegmentationMeter"]


def _as_masks(x, name: str) -> np.ndarray:
    arr = checks.to_numpy(x, name)
    if arr.dtype == np.bool_:
        pass
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"{name}: expected an integer mask of 0 and 1 (scale 8-bit masks to [0, 1]), "
                f"got values in [{arr.min()}, {arr.max()}]"
            )
    elif np.issubdtype(arr.dtype, np.floating):
        checks.check_range(arr, name, 0.0, 1.0)
    else:
        raise TypeError(f"{name}: expected a float, bool or integer mask, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4:
        if arr.shape[-1] != 1:
            raise ValueError(
                f"{name}: expected [N, H, W, 1], [N, H, W] or [H, W], got shape {list(arr.shape)}"
            )
        arr = arr[..., 0]
    elif arr.ndim != 3:
        raise ValueError(
            f"{name}: expected [N, H, W, 1], [N, H, W] or [H, W], got shape {list(arr.shape)}"
        )
    return arr


def binarize(mask, threshold: float = 0.5, name: str = "mask") -> np.ndarray:
    """Boolean ``[N, H, W]`` mask: ``mask > threshold`` (bool masks are kept as they are)."""
    checks.check_fraction(threshold, "threshold", 0.0, 1.0)
    arr = _as_masks(mask, name)
    if arr.dtype == np.bool_:
        return arr
    return arr > threshold


def _pair(pred, target, threshold):
    p = binarize(pred, threshold, "pred")
    t = binarize(target, threshold, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"target: expected the same shape as pred {list(p.shape)} (as [N, H, W]), "
            f"got {list(t.shape)}"
        )
    return p, t


def _counts(p, t):
    n = p.shape[0]
    p2, t2 = p.reshape(n, -1), t.reshape(n, -1)
    inter = np.logical_and(p2, t2).sum(axis=1).astype(np.int64)
    union = np.logical_or(p2, t2).sum(axis=1).astype(np.int64)
    sizes = p2.sum(axis=1).astype(np.int64) + t2.sum(axis=1).astype(np.int64)
    return inter, union, sizes


def iou(pred, target, threshold: float = 0.5, empty_score: float = 1.0, per_image: bool = False):
    """Intersection over union per image, averaged over images.

    ``IoU = |P ∩ T| / |P ∪ T|`` on the masks binarised at `threshold`; `empty_score` when
    both are empty.

    Returns:
        The mean over images (float); with ``per_image=True`` the float64 array ``[N]`` of
        per-image scores instead (its ``.mean()`` is the default result).
    """
    p, t = _pair(pred, target, threshold)
    inter, union, _ = _counts(p, t)
    scores = np.where(union > 0, inter / np.maximum(union, 1), float(empty_score))
    mean = float(scores.mean()) if scores.size else float("nan")
    return scores if per_image else mean


def dice(pred, target, threshold: float = 0.5, empty_score: float = 1.0, per_image: bool = False):
    """DICE coefficient per image, averaged over images: ``2 |P ∩ T| / (|P| + |T|)``.

    `empty_score` when both masks are empty. Returns the mean over images, or with
    ``per_image=True`` the array ``[N]`` of per-image scores.
    """
    p, t = _pair(pred, target, threshold)
    inter, _, sizes = _counts(p, t)
    scores = np.where(sizes > 0, 2.0 * inter / np.maximum(sizes, 1), float(empty_score))
    mean = float(scores.mean()) if scores.size else float("nan")
    return scores if per_image else mean


def foreground_iou(pred, target, threshold: float = 0.5, empty_score: float = 1.0) -> float:
    """Foreground IoU over the whole dataset: ``sum_n |P_n ∩ T_n| / sum_n |P_n ∪ T_n|``.

    Unlike `iou`, large objects weigh more. `empty_score` if every mask is empty.
    """
    p, t = _pair(pred, target, threshold)
    inter, union, _ = _counts(p, t)
    total_union = int(union.sum())
    return float(inter.sum() / total_union) if total_union else float(empty_score)


def mean_iou(pred, target, threshold: float = 0.5, empty_score: float = 1.0) -> float:
    """mIoU over the classes {background, foreground}, each IoU over the whole dataset
    (the usual confusion-matrix mIoU): ``(IoU_bg + IoU_fg) / 2``."""
    p, t = _pair(pred, target, threshold)
    inter_fg, union_fg, _ = _counts(p, t)
    inter_bg, union_bg, _ = _counts(~p, ~t)
    fg = inter_fg.sum() / union_fg.sum() if union_fg.sum() else float(empty_score)
    bg = inter_bg.sum() / union_bg.sum() if union_bg.sum() else float(empty_score)
    return float((fg + bg) / 2.0)


class SegmentationMeter:
    """Accumulates the metrics over batches (for evaluation loops).

    Example:
        >>> meter = SegmentationMeter()
        >>> for images, masks in data: meter.update(model(images), masks)
        >>> meter.result()  # {"iou", "dice", "foreground_iou", "mean_iou", "count"}
    """

    def __init__(self, threshold: float = 0.5, empty_score: float = 1.0):
        checks.check_fraction(threshold, "threshold", 0.0, 1.0)
        self.threshold = threshold
        self.empty_score = float(empty_score)
        self.reset()

    def reset(self):
        self._iou, self._dice = [], []
        self._inter = self._union = self._inter_bg = self._union_bg = 0

    def update(self, pred, target):
        p, t = _pair(pred, target, self.threshold)
        inter, union, sizes = _counts(p, t)
        self._iou.append(np.where(union > 0, inter / np.maximum(union, 1), self.empty_score))
        self._dice.append(np.where(sizes > 0, 2.0 * inter / np.maximum(sizes, 1), self.empty_score))
        ib, ub, _ = _counts(~p, ~t)
        self._inter += int(inter.sum())
        self._union += int(union.sum())
        self._inter_bg += int(ib.sum())
        self._union_bg += int(ub.sum())

    def per_image(self):
        """``(iou [N], dice [N])`` of every image seen so far."""
        if not self._iou:
            return np.zeros([0]), np.zeros([0])
        return np.concatenate(self._iou), np.concatenate(self._dice)

    def result(self) -> dict:
        ious, dices = self.per_image()
        fg = self._inter / self._union if self._union else self.empty_score
        bg = self._inter_bg / self._union_bg if self._union_bg else self.empty_score
        return {
            "iou": float(ious.mean()) if ious.size else float("nan"),
            "dice": float(dices.mean()) if dices.size else float("nan"),
            "foreground_iou": float(fg),
            "mean_iou": float((fg + bg) / 2.0),
            "count": int(ious.size),
        }
