"""`indep_seg.refine`: GrabCut from a box-free network's confidence (hand-built images)."""

import cv2
import numpy as np
import pytest

from indep_seg.box_prior import grabcut_image
from indep_seg.metrics import iou
from indep_seg.refine import confidence_trimap, refine_unboxed


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r


def _photo(h=96, w=128, seed=0):
    """An orange disc on a noisy blue-grey ground, and its true mask."""
    rng = np.random.default_rng(seed)
    disc = _disc(h, w, 40 * h / 96, 70 * w / 128, 22 * h / 96)
    img = np.where(disc[..., None], [230, 140, 40], [70, 90, 120]).astype(np.float64)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), disc


def test_confidence_trimap_labels_by_hand():
    m = np.array([[0.0, 0.04, 0.2, 0.5], [0.51, 0.8, 0.96, 1.0]], np.float32)
    expected = np.array(
        [
            [cv2.GC_BGD, cv2.GC_BGD, cv2.GC_PR_BGD, cv2.GC_PR_BGD],
            [cv2.GC_PR_FGD, cv2.GC_PR_FGD, cv2.GC_FGD, cv2.GC_FGD],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(confidence_trimap(m, 0.05), expected)
    with pytest.raises(ValueError, match="confident"):
        confidence_trimap(m, 0.5)


def test_a_coarse_mask_moves_to_the_colour_edge():
    img, disc = _photo()
    # a coarse network answer: sure in the disc's middle and far away, unsure in a wide band
    # around its outline, and shifted by 5 px as a low-resolution mask is
    coarse = np.full(disc.shape, 0.3, np.float32)
    coarse[_disc(*disc.shape, 45, 75, 30)] = 0.7
    coarse[_disc(*disc.shape, 42, 72, 12)] = 1.0
    coarse[~_disc(*disc.shape, 45, 75, 38)] = 0.0
    before = iou((coarse > 0.5)[None, ..., None], disc[None, ..., None])
    out = refine_unboxed(img, coarse)
    after = iou((out > 0.5)[None, ..., None], disc[None, ..., None])
    assert before < 0.75 and after > 0.95
    assert set(np.unique(out)) <= {0.0, 1.0}  # binary at the image's own size
    # uint8 and float images give the same answer
    np.testing.assert_array_equal(refine_unboxed(img.astype(np.float32) / 255.0, coarse), out)


def test_a_dark_photo_is_stretched_before_grabcut(monkeypatch):
    """Four times darker (levels 0-63), the photo reaches GrabCut stretched to the full range, as
    the box prior's window (`stretch_low_range`), and is refined as the photo."""
    import indep_seg.refine as refine

    img, disc = _photo()
    coarse = np.full(disc.shape, 0.3, np.float32)
    coarse[_disc(*disc.shape, 45, 75, 30)] = 0.7
    coarse[_disc(*disc.shape, 42, 72, 12)] = 1.0
    coarse[~_disc(*disc.shape, 45, 75, 38)] = 0.0
    dark = (img.astype(np.float32) * 0.25).astype(np.uint8)
    seen = []

    def spy(image, colour="rgb"):
        seen.append(np.percentile(image, 99) - np.percentile(image, 1))
        return grabcut_image(image, colour)

    monkeypatch.setattr(refine, "grabcut_image", spy)
    out = refine_unboxed(dark, coarse)
    assert np.percentile(dark, 99) - np.percentile(dark, 1) < 64 and seen[0] >= 250
    assert iou((out > 0.5)[None, ..., None], disc[None, ..., None]) > 0.95


def test_a_large_image_is_refined_small_and_scaled_back():
    img, disc = _photo(384, 512)
    # a blurred answer 20 px off: sure only near its middle
    coarse = cv2.GaussianBlur(np.roll(disc, 20, axis=1).astype(np.float32), (0, 0), 12)
    before = iou((coarse > 0.5)[None, ..., None], disc[None, ..., None])
    out = refine_unboxed(img, coarse, max_side=128)
    assert out.shape == disc.shape and out.dtype == np.float32
    assert before < 0.85 and iou((out > 0.5)[None, ..., None], disc[None, ..., None]) > 0.93


def test_nothing_to_decide_keeps_the_network_mask():
    img, disc = _photo()
    sure = disc.astype(np.float32)  # every pixel certain: GrabCut has nothing to move
    np.testing.assert_array_equal(refine_unboxed(img, sure), sure)
    unsure = np.full(disc.shape, 0.3, np.float32)  # no foreground at all
    np.testing.assert_array_equal(refine_unboxed(img, unsure), unsure)


def test_shapes_are_checked():
    img, disc = _photo()
    with pytest.raises(ValueError, match=r"\[H, W, 3\] image and an \[H, W\] mask"):
        refine_unboxed(img, disc[:10].astype(np.float32))
    with pytest.raises(ValueError, match="refine_unboxed"):
        refine_unboxed(img[..., 0], disc.astype(np.float32))
