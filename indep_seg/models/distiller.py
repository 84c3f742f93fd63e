"""Data distillation of the box-level segmenter (Dai et al. 2019, appendix "Data Distillation").

"We feed the student network with the augmented input images that are composited from carved
foregrounds (by raw results) and random backgrounds, and the label for training is directly the
prediction of teacher network. Additional horizontal flip augmentation is used. We adopt smooth
L1 loss for each pixel" (eq. 8).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from indep_seg import checks
from indep_seg.distribute import global_batch_draw, scale_loss, step_outputs
from indep_seg.gallery import tile_rows
from indep_seg.optimizers import FusedAdam

__all__ = ["Distiller", "smooth_l1"]


def smooth_l1(x):
    """Dai et al. 2019, eq. (8): 4 x^2 if |x| < 0.25 else |x| (per element)."""
    ax = tf.abs(x)
    return tf.where(ax < 0.25, 4.0 * tf.square(x), ax)


class Distiller(keras.Model):
    """Trains a student segmenter on composites labelled by a frozen teacher.

    For a batch ``{"image": x, "background": bg}``: the teacher's mask ``m_t = T(x)`` carves x,
    the composite is ``c = m_t x + (1 - m_t) bg`` (random horizontal flip), the label is the
    teacher's prediction ``T(c)`` on that same composite (`label="composite"`, the default) or
    the carving mask ``m_t`` itself (`label="carve"`), and the student minimises the mean
    smooth-L1 (eq. 8) between its prediction ``S(c)`` and the label.

    Args:
        teacher: trained segmentation network (frozen; called with training=False).
        student: segmentation network to train (same input/output shapes).
        label: "composite" or "carve" (see above).
        real_fraction: fraction of each batch fed as the real crop x with label T(x) instead of
            a composite (0 = the paper's recipe).
        seed: seed of the flips.
    """

    def __init__(self, teacher, student, label="composite", real_fraction=0.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        checks.check_choice(label, "label", ("composite", "carve"))
        checks.check_fraction(real_fraction, "real_fraction")
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self.label = label
        self.real_fraction = float(real_fraction)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="distill_loss")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def compile(self, optimizer=None, **kwargs):
        super().compile(optimizer=optimizer or FusedAdam(4e-4, beta_1=0.5, beta_2=0.999), **kwargs)
        self.optimizer.build(self.student.trainable_variables)

    def checkpoint_items(self):
        return {
            "student": self.student,
            "teacher": self.teacher,
            "optimizer": self.optimizer,
            "seed_generator": self.seed_generator,
        }

    def make_samples(self, image, background):
        """(student inputs, labels): teacher-carved composites (flipped at random), teacher
        labels."""
        image = tf.convert_to_tensor(image, tf.float32)
        background = tf.convert_to_tensor(background, tf.float32)
        m_t = self.teacher(image, training=False)
        comp = m_t * image + (1.0 - m_t) * background
        n = tf.shape(image)[0]
        flip = (
            global_batch_draw(
                lambda k: keras.random.uniform((k, 1, 1, 1), seed=self.seed_generator), n
            )
            < 0.5
        )
        comp = tf.where(flip, tf.reverse(comp, [2]), comp)
        carve = tf.where(flip, tf.reverse(m_t, [2]), m_t)
        if self.real_fraction > 0:
            use_real = (
                global_batch_draw(
                    lambda k: keras.random.uniform((k, 1, 1, 1), seed=self.seed_generator), n
                )
                < self.real_fraction
            )
            real = tf.where(flip, tf.reverse(image, [2]), image)
            comp = tf.where(use_real, real, comp)
        if self.label == "composite":
            labels = self.teacher(comp, training=False)
        else:
            labels = carve
            if self.real_fraction > 0:
                labels = tf.where(use_real, self.teacher(comp, training=False), labels)
        return comp, tf.stop_gradient(labels)

    def train_step(self, data):
        if isinstance(data, tuple):
            data = data[0]
        inputs, labels = self.make_samples(data["image"], data["background"])
        with tf.GradientTape() as tape:
            pred = self.student(inputs, training=True)
            loss = tf.reduce_mean(smooth_l1(pred - labels))
            scaled = scale_loss(loss)
        grads = tape.gradient(scaled, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        self.loss_tracker.update_state(loss)
        return step_outputs({"distill_loss": self.loss_tracker.result()})

    def image_grid(self, batch, max_images=8):
        """uint8 grid, rows: inputs | teacher masks | student masks on the inputs."""
        image = np.asarray(batch["image"], np.float32)[:max_images]
        t = self.teacher(image, training=False).numpy()
        s = self.student(image, training=False).numpy()
        return tile_rows([image, t, s], titles=["input", "teacher mask", "student mask"])
