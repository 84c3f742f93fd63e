"""IoU / DICE / foreground IoU / mIoU on hand-counted masks."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.metrics import SegmentationMeter, binarize, dice, foreground_iou, iou, mean_iou


def _cases():
    """Three 4x4 images, hand-counted:
    1. pred = 2x2 block (4 px), target = 2x3 block containing it (6 px): I = 4, U = 6,
       IoU = 2/3, DICE = 2*4/(4+6) = 0.8.
    2. pred and target one pixel each, different pixels: I = 0, U = 2, IoU = DICE = 0.
    3. both empty: U = 0 -> empty_score (1.0) for both.
    """
    pred = np.zeros([3, 4, 4, 1], np.float32)
    target = np.zeros([3, 4, 4, 1], np.float32)
    pred[0, :2, :2] = 0.9
    target[0, :2, :3] = 1.0
    pred[1, 3, 3] = 0.7
    target[1, 0, 0] = 1.0
    pred[2] = 0.5  # exactly at the threshold: background (value > 0.5 is foreground)
    return pred, target


def test_iou_and_dice_per_image_hand_counted():
    pred, target = _cases()
    np.testing.assert_allclose(iou(pred, target, per_image=True), [2 / 3, 0.0, 1.0])
    assert iou(pred, target) == pytest.approx((2 / 3 + 0 + 1) / 3)
    np.testing.assert_allclose(dice(pred, target, per_image=True), [0.8, 0.0, 1.0])
    assert dice(pred, target) == pytest.approx(0.6)
    assert iou(pred, target, empty_score=0.0) == pytest.approx((2 / 3) / 3)


def test_dataset_level_foreground_iou_and_miou_hand_counted():
    pred, target = _cases()
    # foreground: sum I / sum U = (4 + 0 + 0) / (6 + 2 + 0)
    assert foreground_iou(pred, target) == pytest.approx(0.5)
    # background (16 px each): image 1: pred bg 12, target bg 10, I = 10, U = 12;
    # image 2: I = 14, U = 16; image 3: I = U = 16 -> 40 / 44
    assert mean_iou(pred, target) == pytest.approx((0.5 + 40 / 44) / 2)


def test_perfect_and_complementary_predictions():
    t = np.zeros([2, 5, 5], np.float32)
    t[:, 1:4, 1:4] = 1
    assert iou(t, t) == 1.0 and dice(t, t) == 1.0 and mean_iou(t, t) == 1.0
    assert iou(1 - t, t) == 0.0 and dice(1 - t, t) == 0.0 and foreground_iou(1 - t, t) == 0.0


def test_input_layouts_and_types_agree():
    pred, target = _cases()
    ref = iou(pred, target)
    assert iou(tf.constant(pred), tf.constant(target)) == pytest.approx(ref)
    assert iou(pred[..., 0], target[..., 0]) == pytest.approx(ref)  # [N, H, W]
    assert iou(pred[..., 0] > 0.5, target[..., 0].astype(np.uint8)) == pytest.approx(
        ref
    )  # bool / int 0-1
    assert iou(pred[0, ..., 0], target[0, ..., 0]) == pytest.approx(2 / 3)  # a single [H, W]
    assert binarize(np.array([[0.5, 0.51]], np.float32)).tolist() == [[[False, True]]]


def test_meter_accumulates_like_one_call():
    pred, target = _cases()
    meter = SegmentationMeter()
    meter.update(pred[:2], target[:2])
    meter.update(pred[2:], target[2:])
    r = meter.result()
    assert r["count"] == 3
    assert r["iou"] == pytest.approx(iou(pred, target))
    assert r["dice"] == pytest.approx(dice(pred, target))
    assert r["foreground_iou"] == pytest.approx(foreground_iou(pred, target))
    assert r["mean_iou"] == pytest.approx(mean_iou(pred, target))


def test_bad_inputs_name_the_argument():
    pred, target = _cases()
    with pytest.raises(ValueError, match="target: expected an integer mask of 0 and 1"):
        iou(pred, (target * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"pred: expected values in \[0, 1\]"):
        dice(pred * 3, target)
    with pytest.raises(ValueError, match="target: expected the same shape as pred"):
        iou(pred, target[:, :3])
    with pytest.raises(ValueError, match=r"pred: expected \[N, H, W, 1\]"):
        iou(np.zeros([1, 4, 4, 3], np.float32), target[:1])
    with pytest.raises(ValueError, match="threshold: expected a number in"):
        iou(pred, target, threshold=1.5)
    with pytest.raises(TypeError, match="pred: expected a float, bool or integer mask"):
        iou(np.array([["a"]]), target[0, ..., 0])
