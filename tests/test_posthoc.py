"""Post-hoc UNet (indep_seg/posthoc.py): synthetic pairs, 90/10 training with best-IoU, the
artifact."""

import numpy as np
import pytest
import tensorflow as tf

from indep_seg.posthoc import (
    generate_pairs,
    save_posthoc_segmenter,
    small_unet,
    train_posthoc_unet,
    zoom_out_pairs,
)


def _squares(n, r=16, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.random((n, r, r, 3)).astype(np.float32) * 0.3
    masks = np.zeros((n, r, r, 1), np.float32)
    for i in range(n):
        s = rng.integers(4, 9)
        y, x = rng.integers(0, r - s, size=2)
        masks[i, y : y + s, x : x + s] = 1
        imgs[i, y : y + s, x : x + s] += 0.6
    return imgs, masks


class _StubGAN:
    class generator:  # noqa: N801
        z_dim = 3

    def generate(self, z):
        n = z.shape[0]
        m = np.zeros((n, 8, 8, 1), np.float32)
        m[:, :4] = 0.7
        m[:, 4:] = 0.2
        comp = np.full((n, 8, 8, 3), 1.3, np.float32)
        return {"composite": tf.constant(comp), "mask": tf.constant(m)}


def test_generate_pairs_binarises_masks_and_clips_images():
    imgs, masks = generate_pairs(_StubGAN(), 10, batch_size=4)
    assert imgs.shape == (10, 8, 8, 3) and masks.shape == (10, 8, 8, 1)
    assert imgs.max() == 1.0
    assert set(np.unique(masks)) == {0.0, 1.0} and masks[:, :4].all() and not masks[:, 4:].any()


def test_zoom_out_keeps_image_and_mask_aligned():
    imgs, masks = _squares(6)
    zi, zm = zoom_out_pairs(imgs, masks, min_scale=0.5, seed=1)
    assert zi.shape == imgs.shape and zm.shape == masks.shape
    for i in range(6):
        black = zi[i].sum(-1) == 0
        assert black.any() or zm[i].sum() > 0
        assert not zm[i][black].any()  # no mask outside the pasted image
        assert zm[i].sum() <= masks[i].sum() + 1e-6  # shrinking never grows the object


def test_posthoc_unet_learns_and_keeps_best_epoch(tmp_path):
    imgs, masks = _squares(200)
    unet = small_unet(16, widths=(8, 16))
    unet, hist = train_posthoc_unet(
        imgs, masks, unet, epochs=4, batch_size=16, learning_rate=3e-3, log=lambda *_: None
    )
    assert hist["val_pairs"] == 20 and hist["train_pairs"] == 180  # 90/10
    assert hist["best_val_iou"] == max(hist["val_iou"])
    assert hist["best_val_iou"] > 0.5
    # the kept weights are the best epoch's: re-evaluating on the same validation split gives it
    # back
    rng = np.random.default_rng(0)
    val = rng.permutation(200)[:20]
    pred = unet(imgs[val], training=False).numpy() > 0.5
    t = masks[val] > 0.5
    inter = np.logical_and(pred, t).sum((1, 2, 3))
    union = np.logical_or(pred, t).sum((1, 2, 3))
    np.testing.assert_allclose(
        np.mean(inter / np.maximum(union, 1)), hist["best_val_iou"], atol=1e-6
    )
    path = save_posthoc_segmenter(
        unet, tmp_path, 16, extra={"posthoc_best_val_iou": hist["best_val_iou"]}
    )
    from indep_seg.segmenter import Segmenter

    seg = Segmenter.load(tmp_path)
    assert path == tmp_path / "segmenter" and seg.resolution == 16 and seg.extra["box_free"]
    assert (seg.margin, seg.square) == (0.25, True)
    out = seg.predict([np.zeros((20, 30, 3), np.uint8)])
    assert out[0].shape == (20, 30)


def test_train_validation():
    with pytest.raises(ValueError, match="masks"):
        train_posthoc_unet(np.zeros((20, 8, 8, 3)), np.zeros((19, 8, 8, 1)))


def test_top_k_pairs_keeps_the_highest_scores_in_order():
    from indep_seg.posthoc import top_k_pairs

    imgs = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) * np.ones((5, 2, 2, 3), np.float32)
    masks = imgs[..., :1] * 10
    scores = np.array([0.3, -1.0, 2.0, 0.3, 1.0])
    ki, km = top_k_pairs(imgs, masks, scores, 3)
    assert ki[:, 0, 0, 0].tolist() == [0.0, 2.0, 4.0]  # 2.0, 1.0, then the first of the tied 0.3s
    assert km[:, 0, 0, 0].tolist() == [0.0, 20.0, 40.0]
    with pytest.raises(ValueError, match="k"):
        top_k_pairs(imgs, masks, scores, 6)
    with pytest.raises(ValueError, match="scores"):
        top_k_pairs(imgs, masks, scores[:4], 2)


def test_discriminator_scores_are_the_logits_per_image():
    from indep_seg.posthoc import discriminator_scores

    imgs = np.random.default_rng(0).random((7, 4, 4, 3)).astype(np.float32)
    d = lambda x, training=None: tf.reduce_mean(x, axis=[1, 2, 3])[:, None] * 3.0  # noqa: E731
    np.testing.assert_allclose(
        discriminator_scores(d, imgs, batch_size=3), imgs.mean(axis=(1, 2, 3)) * 3.0, rtol=1e-6
    )


def test_time_budget_is_checked_within_an_epoch():
    imgs, masks = _squares(120)
    unet = small_unet(16, (4, 8))
    _, hist = train_posthoc_unet(
        imgs, masks, unet, epochs=3, batch_size=8, budget_seconds=0.0, log=lambda m: None
    )
    assert (
        hist["steps"] == 1 and len(hist["val_iou"]) == 1
    )  # one step, then the budget stops the epoch
    _, full = train_posthoc_unet(
        imgs, masks, small_unet(16, (4, 8)), epochs=1, batch_size=8, log=lambda m: None
    )
    assert full["steps"] == 108 // 8  # 108 training pairs (90 %), whole batches only


def test_the_trainer_is_a_keras_model_whose_fit_lowers_the_loss():
    """`PosthocUNetTrainer.fit` on a tiny fixed set: the step's loss is the binary cross-entropy
    of the UNet's mask, and it falls epoch after epoch."""
    import keras

    from indep_seg.posthoc import PosthocUNetTrainer

    keras.utils.set_random_seed(0)
    imgs, masks = _squares(32)
    trainer = PosthocUNetTrainer(small_unet(16, (4, 8)))
    trainer.compile(learning_rate=3e-3)
    assert isinstance(trainer, keras.Model) and trainer(imgs[:2]).shape == (2, 16, 16, 1)
    before = float(keras.losses.BinaryCrossentropy()(masks, trainer(imgs, training=True)))
    first = trainer.train_step((tf.constant(imgs), tf.constant(masks)))["loss"]
    np.testing.assert_allclose(float(first), before, rtol=1e-4)  # the loss before the update
    losses = trainer.fit(imgs, masks, batch_size=8, epochs=6, shuffle=False, verbose=0)
    losses = losses.history["loss"]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.6 * before
