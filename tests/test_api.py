"""The public Python API: models from presets, keras `fit` on dict batches, keras callbacks
(BackupAndRestore resumes an interrupted fit, ModelCheckpoint, TensorBoard), clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import indep_seg
from indep_seg.box_batches import backgrounds_outside_boxes, prepare_box_seg_batch
from indep_seg.presets import UnknownPresetError


def _photos(n=8, h=40, w=48, seed=0):
    """Blue photos with a red object filling a random box each: {"image", "box"} arrays."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, h, w, 3), np.float32)
    images[..., 2] = 1.0
    boxes = []
    for i in range(n):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        images[i, y0:y1, x0:x1] = [1.0, 0.0, 0.0]
        boxes.append([x0, y0, x1, y1])
    return images, np.asarray(boxes, np.float32)


def _batches(batch_size=4, **kw):
    images, boxes = _photos(**kw)
    return (
        tf.data.Dataset.from_tensor_slices({"image": images, "box": boxes})
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )


def _weights(gan):
    return [v.numpy().copy() for v in gan.segmenter.weights + gan.discriminator.weights]


# ----------------------------------------------------------------------------------- presets
def test_presets_list_names_descriptions_and_options():
    presets = indep_seg.ForegroundSegGAN.presets
    assert sorted(presets) == ["box_seg", "box_seg_paper", "box_seg_tiny"]
    for name, p in presets.items():
        assert p["description"] and p["options"]["resolution"] > 0, name


def test_from_preset_builds_the_presets_networks_and_optimizers():
    gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_paper")
    assert gan.segmenter.resolution == 128
    assert list(gan.segmenter.encoder_filters) == [
        64,
        128,
        256,
        512,
        512,
        512,
    ]  # Dai et al. Table 1
    assert gan.segmenter.upsampling == "transpose"
    assert (gan.area_lambda, gan.area_a, gan.prior_weight, gan.pairwise_weight) == (
        1000.0,
        0.25,
        0.0,
        0.0,
    )
    assert float(gan.d_optimizer.learning_rate) == pytest.approx(2e-4)
    assert float(gan.g_optimizer.learning_rate) == pytest.approx(4e-4)
    small = indep_seg.ForegroundSegGAN.from_preset("box_seg", resolution=32, margin=0.25)
    assert small.segmenter.resolution == 32 and small.box_margin == 0.25
    assert small.area_a == pytest.approx(0.35 / 1.5**2)  # a of the box, scaled to the crop
    assert small.prior_weight == 1.0 and small.preset == "box_seg"


def test_from_preset_errors_name_the_preset_or_option():
    with pytest.raises(
        UnknownPresetError, match="'box_seg_huge'.*box_seg, box_seg_paper, box_seg_tiny"
    ):
        indep_seg.ForegroundSegGAN.from_preset("box_seg_huge")
    with pytest.raises(ValueError, match="resolutoin"):
        indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", resolutoin=32)


# ----------------------------------------------------------------------------------- batches
def test_photo_batches_are_cropped_to_the_box_and_backgrounds_come_from_outside_it():
    images, boxes = _photos(n=6)
    out = prepare_box_seg_batch(
        {"image": images, "box": boxes}, 16, 0.0, keras.random.SeedGenerator(1)
    )
    assert out["image"].shape == (6, 16, 16, 3) and out["background"].shape == (6, 16, 16, 3)
    crops, bgs = out["image"].numpy(), out["background"].numpy()
    inner = (slice(None), slice(2, -2), slice(2, -2))  # resampling blends the edge pixels
    assert (
        crops[inner + (0,)].min() > 0.99 and crops[inner + (2,)].max() < 0.01
    )  # the crop is the object
    assert (
        bgs[inner + (0,)].max() < 0.01 and bgs[inner + (2,)].min() > 0.99
    )  # the backgrounds hold none
    assert bgs[..., 0].mean() < 0.02


def test_a_box_leaving_no_background_borrows_the_next_photos():
    images, boxes = _photos(n=2)
    boxes[0] = [0, 0, images.shape[2], images.shape[1]]  # the whole photo
    images[0] = [0.0, 1.0, 0.0]  # green, all object
    bgs = backgrounds_outside_boxes(images, boxes, 8).numpy()
    assert (
        bgs[0, 2:-2, 2:-2, 2].min() > 0.99 and bgs[0, ..., 1].max() < 0.01
    )  # photo 1's blue background


def test_batches_without_a_needed_key_are_errors_naming_it():
    images, boxes = _photos(n=4)
    crops = images[:, :16, :16]
    gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny")
    with pytest.raises(ValueError, match="missing key 'background'"):
        gan.fit(tf.data.Dataset.from_tensors({"image": crops}), verbose=0)
    with pytest.raises(ValueError, match="missing key 'image'"):
        gan.fit(tf.data.Dataset.from_tensors({"photo": images, "box": boxes}), verbose=0)
    with pytest.raises(ValueError, match="'boxes'.*'box'"):
        gan.fit(tf.data.Dataset.from_tensors({"image": images, "boxes": boxes[:, None]}), verbose=0)
    with_prior = indep_seg.ForegroundSegGAN.from_preset(
        "box_seg", resolution=16, unet="tiny", discriminator="tiny", d_downsample=1
    )
    with pytest.raises(ValueError, match="missing key 'prior'.*prior_weight"):
        with_prior.fit(tf.data.Dataset.from_tensors({"image": images, "box": boxes}), verbose=0)


def test_fit_on_crops_with_prior_and_area_trains():
    images, boxes = _photos(n=4)
    crops = prepare_box_seg_batch({"image": images, "box": boxes}, 16)
    batch = {
        **crops,
        "prior": np.ones((4, 16, 16, 1), np.float32),
        "area": np.full([4], 0.9, np.float32),
    }
    gan = indep_seg.ForegroundSegGAN.from_preset(
        "box_seg", resolution=16, unet="tiny", discriminator="tiny", d_downsample=1
    )
    before = _weights(gan)
    history = gan.fit(
        tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=2, epochs=1, verbose=0
    )
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(gan)))


# ----------------------------------------------------------------------------------- callbacks
class _Recorder(keras.callbacks.Callback):
    def __init__(self, crash_at=None):
        super().__init__()
        self.crash_at, self.epochs, self.at_begin, self.after_epoch = crash_at, [], None, {}

    def on_train_begin(self, logs=None):
        gan = self.model
        self.at_begin = (
            _weights(gan),
            int(gan.d_optimizer.iterations),
            int(gan.g_optimizer.iterations),
        )

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if (self.epochs[-1], batch) == self.crash_at:
            raise RuntimeError("simulated crash")

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch[epoch] = _weights(self.model)


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path, recwarn):
    backup = str(tmp_path / "backup")
    first = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", seed=3)
    crashed = _Recorder(crash_at=(1, 1))
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.fit(
            _batches(),
            epochs=3,
            steps_per_epoch=3,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), crashed],
        )
    assert crashed.epochs == [0, 1]

    second = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", seed=3)
    assert any(not np.array_equal(a, b) for a, b in zip(_weights(second), crashed.after_epoch[0]))
    resumed = _Recorder()
    history = second.fit(
        _batches(),
        epochs=3,
        steps_per_epoch=3,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup), resumed],
    )
    assert resumed.epochs == [1, 2]  # epoch 0 is not run again
    weights, d_steps, g_steps = resumed.at_begin
    for a, b in zip(weights, crashed.after_epoch[0]):  # the networks as the first epoch left them
        np.testing.assert_array_equal(a, b)
    assert (d_steps, g_steps) == (3, 3)  # and both optimizers' states
    assert len(history.history["d_loss"]) == 2
    assert not (tmp_path / "backup").exists()  # a finished fit removes its backup
    skipped = [str(w.message) for w in recwarn if "Skipping variable loading" in str(w.message)]
    assert not skipped, skipped  # every saved variable was restored


def test_model_checkpoint_and_tensorboard(tmp_path):
    gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", seed=1)
    path = tmp_path / "gan.weights.h5"
    gan.fit(
        _batches(),
        epochs=1,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(str(path), save_weights_only=True),
            keras.callbacks.TensorBoard(str(tmp_path / "logs"), update_freq=1),
        ],
    )
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))
    fresh = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", seed=2)
    fresh.load_weights(str(path))
    for a, b in zip(_weights(fresh), _weights(gan)):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.g_optimizer.iterations) == 2


def test_lazy_exports_and_the_segmenter_of_a_gan():
    assert {"ForegroundSegGAN", "BoxSegmenter", "Segmenter"} <= set(indep_seg.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        indep_seg.Nope  # noqa: B018
    gan = indep_seg.ForegroundSegGAN.from_preset("box_seg_tiny", margin=0.1)
    seg = indep_seg.BoxSegmenter.from_gan(gan)
    assert isinstance(seg, keras.Model) and (seg.resolution, seg.margin) == (16, 0.1)
    images, boxes = _photos(n=3)
    masks = seg.predict({"image": images, "box": boxes}, verbose=0)
    assert masks.shape == (3, 40, 48, 1) and 0.0 <= masks.min() and masks.max() <= 1.0


def test_fit_the_full_box_seg_preset_on_the_trainers_streamed_shards(tmp_path):
    """The `box_seg` preset's batches with GrabCut priors, per-image a and scale-matched
    backgrounds:
    the trainer's shards (written once from the data) streamed by `box_seg_dataset`."""
    import dataclasses

    from indep_seg.data.box_seg_stream import box_seg_dataset
    from indep_seg.training.experiments.box_seg import box_seg_config, prepare_box_shards

    small = dict(resolution=16, unet="tiny", discriminator="tiny", d_downsample=1)
    cfg = dataclasses.replace(box_seg_config(), **small, evidence_images=0, probe_images=4)
    shards = prepare_box_shards("synthetic:8", cfg, tmp_path / "shards", log=lambda *a: None)
    assert shards["prior"] and shards["boxes"] == 8
    batches = box_seg_dataset(
        shards["crop_files"], shards["background_files"], 4, resolution=16, prior=True, area=True
    )
    assert set(batches.element_spec) == {"image", "background", "prior", "area"}
    gan = indep_seg.ForegroundSegGAN.from_preset("box_seg", **small)
    assert gan.prior_weight == 1.0
    before = _weights(gan)
    history = gan.fit(batches, steps_per_epoch=2, epochs=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(gan)))
