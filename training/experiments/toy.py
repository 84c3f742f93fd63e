"""`toy`: a 2-layer GAN on synthetic 8x8 squares, the training infrastructure's own test subject.

It exercises everything the application trainers rely on, in seconds on a CPU: a GAN wrapper
without `call()` (`self.built = True`), two optimizers built in scope, a spectrally normalised
discriminator (its `u` vectors are checkpointed state), a `keras.random.SeedGenerator` for the
latent codes (checkpointed RNG state), hand-written losses scaled with
`indep_seg.distribute.scale_loss`, step outputs shaped for every strategy
(`indep_seg.training.loop.step_outputs`),
and a
data stream that is a pure function of the example index (`dataset_fn(start_step)`), so a resumed
run repeats an uninterrupted one exactly, and 1 or N replicas give the same updates.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from indep_seg.distribute import scale_loss
from indep_seg.optimizers import FusedAdam
from indep_seg.training.loop import image_grid, run_fit, step_outputs
from indep_seg.training.registry import register_experiment
from indep_seg.training.strategy import global_batch_draw


@dataclasses.dataclass
class ToyConfig:
    resolution: int = 8
    latent_dim: int = 8
    hidden: int = 32
    batch_size: int = 8  # global batch, split across replicas
    steps: int = 200
    g_learning_rate: float = 1e-3
    d_learning_rate: float = 1e-3
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    log_every: int = 10
    image_every: int = 100


def toy_example(index, resolution: int, seed: int):
    """Example `index` of the synthetic stream: one coloured square on black, [R, R, 3] in [0, 1]
    (a pure function of (seed, index): stateless random draws)."""
    s = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
    u = tf.random.stateless_uniform([6], seed=s)
    size = 2.0 + u[0] * (resolution / 2.0)
    x0 = u[1] * (resolution - size)
    y0 = u[2] * (resolution - size)
    coords = tf.range(resolution, dtype=tf.float32) + 0.5
    inside_x = tf.cast((coords >= x0) & (coords < x0 + size), tf.float32)
    inside_y = tf.cast((coords >= y0) & (coords < y0 + size), tf.float32)
    mask = inside_y[:, None] * inside_x[None, :]
    colour = 0.3 + 0.7 * u[3:6]
    return mask[:, :, None] * colour[None, None, :]


def toy_dataset(
    batch_size: int, resolution: int, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """Infinite stream of global batches, starting at batch `start_step`."""
    ds = tf.data.Dataset.range(int(start_step) * batch_size, 2**62)
    ds = ds.map(lambda i: toy_example(i, resolution, seed))
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


class ToyGAN(keras.Model):
    """Generator z -> Dense -> Dense -> [R, R, 3]; SN discriminator Dense -> Dense -> logit."""

    def __init__(self, config: ToyConfig, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        r = config.resolution
        self.generator = keras.Sequential(
            [
                keras.layers.Input((config.latent_dim,)),
                keras.layers.Dense(config.hidden, activation="relu"),
                keras.layers.Dense(r * r * 3, activation="sigmoid"),
                keras.layers.Reshape((r, r, 3)),
            ],
            name="generator",
        )
        self.discriminator = keras.Sequential(
            [
                keras.layers.Input((r, r, 3)),
                keras.layers.Flatten(),
                keras.layers.SpectralNormalization(keras.layers.Dense(config.hidden)),
                keras.layers.LeakyReLU(0.2),
                keras.layers.Dense(1),
            ],
            name="discriminator",
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.preview_z = (
            np.random.default_rng(seed + 1)
            .standard_normal((16, config.latent_dim))
            .astype("float32")
        )
        self.built = True  # a GAN wrapper has no call() (DESIGN.md section 4)

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        kwargs.setdefault("jit_compile", False)  # XLA compiles slower than this tiny model runs
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def build_optimizers(self):
        """Create both optimizers' slots now (inside strategy.scope())."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    def _latents(self, local_batch):
        return global_batch_draw(
            lambda n: keras.random.normal((n, self.config.latent_dim), seed=self.seed_generator),
            local_batch,
        )

    def train_step(self, real):
        local = tf.shape(real)[0]
        global_batch = (
            local * tf.distribute.get_replica_context().num_replicas_in_sync
            if tf.distribute.get_replica_context()
            else local
        )

        z = self._latents(local)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            d_real = self.discriminator(real, training=True)
            d_fake = self.discriminator(fake, training=True)
            d_loss_ex = tf.nn.softplus(-d_real) + tf.nn.softplus(d_fake)  # [b, 1]
            d_loss = scale_loss(d_loss_ex, global_batch)
        grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))

        z = self._latents(local)
        with tf.GradientTape() as tape:
            g_loss_ex = tf.nn.softplus(
                -self.discriminator(self.generator(z, training=True), training=True)
            )
            g_loss = scale_loss(g_loss_ex, global_batch)
        grads = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        return step_outputs(
            {"d_loss": tf.reduce_mean(d_loss_ex), "g_loss": tf.reduce_mean(g_loss_ex)}
        )

    def checkpoint_items(self):
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
            "seed_generator": self.seed_generator,
        }

    def image_grid(self, batch):
        """Row-major grid of 16 samples from fixed latents (does not touch the training RNG)."""
        return image_grid(self.generator(self.preview_z, training=False).numpy(), columns=8)

    def real_grid(self, batch):
        return image_grid(np.asarray(batch)[:16], columns=8)


def build_toy(config: ToyConfig, ctx) -> ToyGAN:
    with ctx.strategy.scope():
        model = ToyGAN(config, seed=ctx.seed)
        model.compile(
            d_optimizer=FusedAdam(config.d_learning_rate, beta_1=0.5),
            g_optimizer=FusedAdam(config.g_learning_rate, beta_1=0.5),
        )
        model.build_optimizers()
    return model


def train_toy(config: ToyConfig, ctx) -> dict:
    model = build_toy(config, ctx)
    ctx.extra["model"] = model  # tests read the weights back
    return run_fit(
        model,
        lambda start: toy_dataset(config.batch_size, config.resolution, ctx.seed, start),
        ctx,
        total_steps=ctx.resolve_steps(config.steps),
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints,
        log_every=config.log_every,
        image_every=config.image_every,
        metric_fns={"mean_intensity": lambda m: float(np.mean(m.generator(m.preview_z).numpy()))},
        verbose=ctx.extra.get("verbose", True),
    )


register_experiment(
    "toy",
    ToyConfig(),
    train_toy,
    "2-layer GAN on synthetic 8x8 squares (tests of the training infrastructure)",
)
