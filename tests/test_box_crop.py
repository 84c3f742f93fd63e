import numpy as np
import pytest
import tensorflow as tf

from indep_seg.box_crop import box_window, crop_to_window, paste_back


def test_box_window_paper_rule_is_the_box():
    np.testing.assert_allclose(box_window([[10, 20, 50, 40]]).numpy(), [[10, 20, 50, 40]])


def test_box_window_evaluation_protocol_square():
    # w=40, h=20 -> half-side 0.75 * 40 = 30 around centre (30, 30)
    np.testing.assert_allclose(box_window([[10, 20, 50, 40]], 0.25, True).numpy(), [[0, 0, 60, 60]])


def test_box_window_margin_per_axis():
    np.testing.assert_allclose(box_window([[10, 20, 50, 40]], 0.5).numpy(), [[-10, 10, 70, 50]])


@pytest.mark.parametrize("box", [[5, 5, 5, 9], [9, 5, 3, 9], [0, 0, np.nan, 3]])
def test_box_window_rejects_empty_boxes(box):
    with pytest.raises(ValueError, match="boxes: box 0"):
        box_window([box])


def test_crop_is_exact_for_a_same_size_window():
    img = np.random.rand(1, 40, 60, 3).astype("float32")
    crop = crop_to_window(img, [[10, 5, 30, 25]], 20, supersample=1).numpy()
    np.testing.assert_allclose(crop[0], img[0, 5:25, 10:30], atol=1e-5)


def test_crop_fills_black_outside_the_image():
    img = np.random.rand(1, 40, 60, 3).astype("float32") + 0.1
    crop = crop_to_window(img, [[-10, -10, 10, 10]], 20, supersample=1).numpy()
    assert crop[0, :10, :10].max() == 0.0
    np.testing.assert_allclose(crop[0, 10:, 10:], img[0, :10, :10], atol=1e-5)


def test_crop_downsampling_averages_2x2_blocks():
    img = np.random.rand(1, 8, 8, 1).astype("float32")
    crop = crop_to_window(img, [[0, 0, 8, 8]], 4, supersample=2).numpy()
    expected = img[0].reshape(4, 2, 4, 2, 1).mean(axis=(1, 3))
    np.testing.assert_allclose(crop[0], expected, atol=1e-5)


def test_paste_back_is_the_inverse_of_crop():
    m = np.random.rand(1, 20, 20, 1).astype("float32")
    full = paste_back(m, [[10, 5, 30, 25]], (40, 60)).numpy()
    np.testing.assert_allclose(full[0, 5:25, 10:30], m[0], atol=1e-5)
    outside = full.copy()
    outside[0, 5:25, 10:30] = 0
    assert outside.max() == 0.0


def test_paste_back_upsamples_into_the_window():
    m = np.zeros((1, 4, 4, 1), "float32")
    m[0, :2, :, 0] = 1.0  # top half of the window
    full = paste_back(m, [[0, 0, 40, 40]], (40, 40)).numpy()[0, :, :, 0]
    # bilinear: mask pixel centres 1 and 2 land on rows 14.5 and 24.5; linear ramp between
    assert full[:15].min() > 0.99 and full[25:].max() < 0.01
    np.testing.assert_allclose(full[19:21, 0], [0.55, 0.45], atol=1e-5)
    # the border half pixels keep the edge value (no dark rim)
    assert full[:, 0].max() == 1.0 and full[0].min() > 0.99


def test_round_trip_in_graph_with_dynamic_sizes():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, 4])])
    def roundtrip(x, boxes):
        window = box_window(boxes, 0.25, True)
        crop = crop_to_window(x, window, 16)
        return paste_back(crop[..., :1], window, (tf.shape(x)[1], tf.shape(x)[2]))

    img = np.random.rand(2, 30, 50, 3).astype("float32")
    out = roundtrip(img, tf.constant([[10.0, 5, 30, 25], [0, 0, 50, 30]]))
    assert out.shape == (2, 30, 50, 1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="size"):
        crop_to_window(np.zeros((1, 4, 4, 3)), [[0, 0, 4, 4]], 0)
    with pytest.raises(ValueError, match="images"):
        crop_to_window(np.zeros((4, 4, 3)), [[0, 0, 4, 4]], 4)
    with pytest.raises(ValueError, match="margin"):
        box_window([[0, 0, 4, 4]], -1)


def test_mask_box_is_the_tight_exclusive_box_or_none():
    from indep_seg.box_crop import mask_box

    m = np.zeros((6, 8), bool)
    m[2:4, 3:7] = True
    assert mask_box(m) == [3.0, 2.0, 7.0, 4.0]
    assert mask_box(m[..., None].astype(np.uint8)) == [3.0, 2.0, 7.0, 4.0]
    assert mask_box(np.zeros((4, 4))) is None
    with pytest.raises(ValueError, match=r"mask: expected \[H, W\] or \[H, W, 1\]"):
        mask_box(np.zeros((2, 4, 4)))
