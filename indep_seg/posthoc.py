"""ILSGAN's evaluation step (Zou et al. 2023, "Evaluation"): "we train a post hoc UNet on these
synthetic data ... The trained UNet is tested on real test set".

1. `generate_pairs(model, n)`: (composite, mask) pairs from a trained ILSGAN, the composite of
   eq. (1) (unperturbed) and the generated mask binarised at 0.5.
2. `train_posthoc_unet(images, masks)`: a UNet (`indep_seg.networks.unet.UNet`) trained on them
   with a 90/10 split, keeping the weights of the best validation IoU. The step is
   `PosthocUNetTrainer.train_step` (binary cross-entropy against the generated mask), run by
   Keras' `fit`.
3. `save_posthoc_segmenter(...)`: the `indep_seg.segmenter.Segmenter` artifact that
   `indep-seg segment / evaluate / export` load.

Optional top-k filtering (`discriminator_scores`, `top_k_pairs`; off in both presets): draw a
larger pool of pairs and keep the k whose composites the GAN's discriminator scores most real.
This is NOT what the authors' `--topk` does: in qrzou/ILSGAN `generate_segmentation_samples.py
--n=50000 --topk=8000` keeps all 50,000 samples and `--topk` only restricts the checkpoint choice
to the snapshots at <= 8000 kimg (the lowest-FID one among them). Discriminator scores as a
sample-quality filter follow discriminator rejection sampling (Azadi et al. 2019), not the ILSGAN
paper.

Optional `zoom_out` augmentation (off in the paper preset): each synthetic pair is shrunk by a
random factor in [zoom_out, 1] and pasted at a random place on a black canvas. Generated images
look like the training photos (centre crops), while evaluation crops (../shared/datasets/README.md)
show the object smaller, centred, with black where the crop leaves the photo; this only changes the
synthetic data.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from indep_seg import checks
from indep_seg.optimizers import FusedAdam

__all__ = [
    "generate_pairs",
    "discriminator_scores",
    "top_k_pairs",
    "zoom_out_pairs",
    "train_posthoc_unet",
    "PosthocUNetTrainer",
    "save_posthoc_segmenter",
    "small_unet",
]


def generate_pairs(model, num_pairs, batch_size=64, threshold=0.5, seed=0):
    """`(images [N, R, R, 3] float32 in [0, 1], masks [N, R, R, 1] float32 in {0, 1})` from an
    ILSGAN.

    Args:
        model: an `indep_seg.models.ilsgan.ILSGAN` (or any object with `generate(z)` and
            `generator.z_dim`).
    """
    num_pairs = checks.check_int(num_pairs, "num_pairs", minimum=1)
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for i in range(0, num_pairs, batch_size):
        n = min(batch_size, num_pairs - i)
        z = tf.constant(rng.standard_normal((n, model.generator.z_dim)).astype(np.float32))
        out = model.generate(z)
        images.append(np.clip(out["composite"].numpy(), 0.0, 1.0))
        masks.append((out["mask"].numpy() > threshold).astype(np.float32))
    return np.concatenate(images), np.concatenate(masks)


def discriminator_scores(discriminator, images, batch_size=256):
    """The discriminator's logit for each image `[N, R, R, 3]` (float32 `[N]`; higher = judged more
    real)."""
    out = []
    for i in range(0, len(images), batch_size):
        logits = discriminator(tf.constant(images[i : i + batch_size]), training=True)
        out.append(
            np.asarray(logits, np.float32).reshape(len(images[i : i + batch_size]), -1).mean(axis=1)
        )
    return np.concatenate(out)


def top_k_pairs(images, masks, scores, k):
    """The `k` pairs with the highest `scores` (ties: the earlier pair), in their original order."""
    k = checks.check_int(k, "k", minimum=1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(images) or len(images) != len(masks):
        raise ValueError(
            f"scores: expected one per pair ({len(images)} images, {len(masks)} masks), "
            f"got {len(scores)}"
        )
    if k > len(images):
        raise ValueError(f"k: expected at most the {len(images)} pairs, got {k}")
    keep = np.sort(np.argsort(-scores, kind="stable")[:k])
    return images[keep], masks[keep]


def zoom_out_pairs(images, masks, min_scale=0.6, seed=0):
    """Shrink each pair by a factor in [min_scale, 1] and paste it at a random place on black."""
    checks.check_fraction(min_scale, "min_scale", 0.05, 1.0)
    rng = np.random.default_rng(seed)
    n, r = images.shape[0], images.shape[1]
    out_i = np.zeros_like(images)
    out_m = np.zeros_like(masks)
    for k in range(n):
        s = int(round(r * rng.uniform(min_scale, 1.0)))
        s = max(4, min(r, s))
        im = tf.image.resize(images[k : k + 1], [s, s], antialias=True).numpy()[0]
        mk = tf.image.resize(masks[k : k + 1], [s, s], antialias=True).numpy()[0]
        y, x = rng.integers(0, r - s + 1), rng.integers(0, r - s + 1)
        out_i[k, y : y + s, x : x + s] = im
        out_m[k, y : y + s, x : x + s] = mk > 0.5
    return out_i, out_m


def small_unet(resolution, widths=(32, 64, 128, 128)):
    """The post-hoc UNet: `indep_seg.networks.unet.UNet` with bilinear up-sampling (no
    checkerboards)."""
    from indep_seg.networks.unet import UNet

    return UNet(
        resolution=resolution,
        encoder_filters=tuple(widths),
        encoder_kernels=(4,) * len(widths),
        upsampling="bilinear",
        bn_momentum=0.9,
        name="posthoc_unet",
    )


def _batch_iou(pred, target):
    p, t = pred > 0.5, target > 0.5
    inter = np.logical_and(p, t).sum(axis=(1, 2, 3))
    union = np.logical_or(p, t).sum(axis=(1, 2, 3))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


class PosthocUNetTrainer(keras.Model):
    """The post-hoc UNet's training step as a `keras.Model` (Zou et al. 2023, "Evaluation"):
    binary cross-entropy between the UNet's mask of a synthetic composite and the generated mask.

    Batches are `(images [B, R, R, 3], masks [B, R, R, 1])`; `fit` reports the epoch's mean
    `loss`. Calling it runs the UNet.

    Args:
        unet: the network to train (`small_unet`).
    """

    def __init__(self, unet, **kwargs):
        super().__init__(**kwargs)
        self.unet = unet
        self.bce = keras.losses.BinaryCrossentropy()
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def compile(self, optimizer=None, learning_rate=1e-3, **kwargs):
        """`FusedAdam(learning_rate)` unless an optimizer is given; no XLA unless asked
        (`jit_compile=True`): the step runs as the graph it always ran as, on every device."""
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer or FusedAdam(learning_rate), **kwargs)

    def call(self, images, training=False):
        return self.unet(images, training=training)

    def train_step(self, data):
        images, masks = data
        with tf.GradientTape() as tape:
            loss = self.bce(masks, self.unet(images, training=True))
        variables = self.unet.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def _train_batches(images, masks, train, batch_size, flip, rng):
    """Endless `(x, y)` batches of the `train` pairs: a fresh permutation each epoch, whole batches
    only, each pair flipped left-right with probability 1/2 when `flip`."""
    while True:
        order = rng.permutation(train)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            x, y = images[idx], masks[idx]
            if flip:
                f = rng.random(len(idx)) < 0.5
                x, y = x.copy(), y.copy()
                x[f], y[f] = x[f, :, ::-1], y[f, :, ::-1]
            yield x, y


class _BestValidationIoU(keras.callbacks.Callback):
    """Per epoch: the validation IoU, the weights of the best one, the log line; stops `fit` when
    the time budget is spent (checked after every step: on a loaded machine one epoch can outlast
    the budget)."""

    def __init__(self, unet, images, masks, epochs, budget_seconds, log):
        super().__init__()
        self.unet, self.images, self.masks = unet, images, masks
        self.epochs, self.budget_seconds, self.log = epochs, budget_seconds, log
        self.best, self.best_weights, self.history, self.steps = -1.0, None, [], 0
        self.t0 = time.time()

    def _out_of_time(self):
        return self.budget_seconds is not None and time.time() - self.t0 > self.budget_seconds

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self._out_of_time():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        preds = np.concatenate(
            [
                self.unet(self.images[i : i + 128], training=False).numpy()
                for i in range(0, len(self.images), 128)
            ]
        )
        v = float(_batch_iou(preds, self.masks).mean())
        self.history.append(v)
        if v > self.best:
            self.best, self.best_weights = v, [w.numpy() for w in self.unet.weights]
        self.log(
            f"post-hoc UNet epoch {epoch + 1}/{self.epochs}: loss {float(logs['loss']):.4f}, "
            f"val IoU {v:.4f} (best {self.best:.4f})"
        )
        if self.model.stop_training or self._out_of_time():
            self.model.stop_training = True
            self.log(
                f"post-hoc UNet: time budget of {self.budget_seconds:.0f} s reached in epoch "
                f"{epoch + 1} ({self.steps} steps)"
            )


def train_posthoc_unet(
    images,
    masks,
    unet=None,
    epochs=10,
    batch_size=32,
    learning_rate=1e-3,
    val_fraction=0.1,
    budget_seconds=None,
    seed=0,
    flip=True,
    log=print,
):
    """Train a UNet on synthetic pairs; 90/10 split; keep the best validation IoU.

    `PosthocUNetTrainer.fit` on random left-right flips of the training pairs (whole batches
    only), the validation IoU after each epoch; stops early when `budget_seconds` is spent.

    Returns `(unet, history)` with `history = {"val_iou": [...], "best_val_iou": x, "best_epoch":
    k, "train_pairs": n, "val_pairs": m, "steps": s}`.
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks, np.float32)
    checks.check_rank(images, "images", 4, "[N, R, R, 3]")
    checks.check_rank(masks, "masks", 4, "[N, R, R, 1]")
    if images.shape[0] != masks.shape[0] or images.shape[0] < 10:
        raise ValueError(
            f"masks: expected as many pairs as images (>= 10), got {masks.shape[0]} and "
            f"{images.shape[0]}"
        )
    checks.check_fraction(val_fraction, "val_fraction", 0.01, 0.5)
    epochs = checks.check_int(epochs, "epochs", minimum=1)
    batch_size = checks.check_int(batch_size, "batch_size", minimum=1)
    n = images.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    val, train = perm[:n_val], perm[n_val:]
    if len(train) < batch_size:
        raise ValueError(
            f"batch_size: expected at most the {len(train)} training pairs, got {batch_size}"
        )
    unet = unet if unet is not None else small_unet(images.shape[1])
    trainer = PosthocUNetTrainer(unet)
    trainer.compile(learning_rate=learning_rate)
    best = _BestValidationIoU(unet, images[val], masks[val], epochs, budget_seconds, log)
    trainer.fit(
        _train_batches(images, masks, train, batch_size, flip, rng),
        epochs=epochs,
        steps_per_epoch=len(train) // batch_size,
        callbacks=[best],
        shuffle=False,  # the generator shuffles (a fresh permutation each epoch)
        verbose=0,
    )
    for w, v in zip(unet.weights, best.best_weights):
        w.assign(v)
    return unet, {
        "val_iou": best.history,
        "best_val_iou": best.best,
        "best_epoch": int(np.argmax(best.history)) + 1,
        "train_pairs": int(len(train)),
        "val_pairs": int(n_val),
        "steps": best.steps,
    }


def save_posthoc_segmenter(unet, model_dir, resolution, experiment="ilsgan", extra=None):
    """Save the UNet as the segmenter artifact `model_dir/segmenter` (box-free model: without a box
    the network sees the whole image, resized with antialiasing as the GAN's training photos were;
    when a box is given, the crop is the evaluation protocol's square of half-side 0.75 max(w, h);
    `indep_seg.segmenter.Segmenter.box_free`)."""
    from indep_seg.segmenter import Segmenter

    seg = Segmenter(
        unet,
        resolution=int(resolution),
        margin=0.25,
        square=True,
        experiment=experiment,
        extra={"box_free": True, **(extra or {})},
    )
    return seg.save(Path(model_dir) / "segmenter")
