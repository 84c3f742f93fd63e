"""Generation metrics of ILSGAN's evaluation (Zou et al. 2023, "Evaluation"): FID, KID and a MINE
estimate of the mutual information between the separated regions.

- FID (Heusel et al. 2017): `|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))` on InceptionV3
pool
  features. The matrix square root is taken as `S_a^(1/2) (S_a^(1/2) S_b S_a^(1/2))^(1/2)
  S_a^(-1/2)`'s
  trace, i.e. `Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))`, by symmetric eigendecompositions (stable, and
  independent of `scipy.linalg.sqrtm`, which the tests use as the reference).
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  `k(x, y) = (x.y / d + 1)^3`, averaged over random subsets.
- InceptionV3 weights cannot be downloaded here. `inception_feature_extractor` loads them from a
  local file or the Keras cache and raises `InceptionWeightsUnavailable` (saying where it looked)
  when they are absent; every metric takes a `feature_extractor` argument, so tests and weight-less
  runs pass another network (`random_feature_extractor`: a fixed, seeded random conv net; its
  scores are comparable between runs of this project only, never with published numbers).
- MINE (Belghazi et al. 2018): the Donsker-Varadhan lower bound
  `I(X; Y) >= E_p(x,y)[T] - log E_p(x)p(y)[e^T]`, with a statistics network T trained by gradient
  ascent (moving-average correction of the biased gradient) and evaluated on held-out pairs.
  `layer_mutual_information` applies it as the paper does: `MI(b_inv; f_vis) + MI(b_vis; f_inv)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from indep_seg import checks
from indep_seg.optimizers import FusedAdam

__all__ = [
    "InceptionWeightsUnavailable",
    "inception_feature_extractor",
    "find_inception_weights",
    "random_feature_extractor",
    "compute_features",
    "frechet_distance",
    "fid_from_features",
    "kid_from_features",
    "fid",
    "kid",
    "mine_mutual_information",
    "layer_mutual_information",
]

INCEPTION_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


class InceptionWeightsUnavailable(FileNotFoundError):
    """The InceptionV3 weights are not on this machine (they cannot be downloaded here)."""


def find_inception_weights(weights_path=None):
    """Path of InceptionV3 (no top) weights: `weights_path`, `$INDEP_SEG_INCEPTION_WEIGHTS`, or the
    Keras cache (`$KERAS_HOME` or `~/.keras`)/models. Raises `InceptionWeightsUnavailable`."""
    candidates = []
    if weights_path is not None:
        candidates.append(Path(weights_path))
    if os.environ.get("INDEP_SEG_INCEPTION_WEIGHTS"):
        candidates.append(Path(os.environ["INDEP_SEG_INCEPTION_WEIGHTS"]))
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    candidates.append(keras_home / "models" / INCEPTION_NOTOP_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise InceptionWeightsUnavailable(
        "InceptionV3 weights for FID/KID are not available (looked for: "
        + ", ".join(str(c) for c in candidates)
        + "); they cannot be downloaded here. Put the Keras file "
        f"{INCEPTION_NOTOP_FILE} there or pass weights_path, or use another feature_extractor."
    )


def inception_feature_extractor(weights_path=None, batch_size=50):
    """InceptionV3 pool features (2048-D) of images in [0, 1] (resized to 299, scaled to [-1,
    1])."""
    path = find_inception_weights(weights_path)
    net = keras.applications.InceptionV3(
        include_top=False, weights=str(path), pooling="avg", input_shape=(299, 299, 3)
    )

    def extract(images):
        x = tf.image.resize(tf.convert_to_tensor(images, tf.float32), [299, 299], method="bilinear")
        return net(x * 2.0 - 1.0, training=False)

    extract.name = "inception_v3_pool3"
    return extract


def random_feature_extractor(seed=0, width=64, feature_dim=256, resolution=64):
    """A fixed random conv net (seeded), for tests and for runs without Inception weights."""
    init = keras.initializers.HeNormal(seed=seed)
    layers = [keras.layers.Resizing(resolution, resolution)]
    for i, f in enumerate((width, width * 2, width * 4)):
        layers.append(
            keras.layers.Conv2D(
                f,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kernel_initializer=keras.initializers.HeNormal(seed=seed + i),
            )
        )
    layers += [
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(feature_dim, kernel_initializer=init),
    ]
    net = keras.Sequential(layers)
    net.build((None, resolution, resolution, 3))

    def extract(images):
        return net(tf.convert_to_tensor(images, tf.float32) * 2.0 - 1.0, training=False)

    extract.name = f"random_conv_seed{seed}"
    return extract


def compute_features(images, feature_extractor, batch_size=100):
    """Features `[N, D]` (float64 NumPy) of images `[N, H, W, 3]` in [0, 1] (array or iterable of
    batches)."""
    if not callable(feature_extractor):
        raise TypeError(
            f"feature_extractor: expected a callable images -> features, "
            f"got {type(feature_extractor).__name__}"
        )
    feats = []
    if isinstance(images, (np.ndarray, tf.Tensor)):
        checks.check_rank(images, "images", 4, "[N, H, W, 3]")
        for i in range(0, int(images.shape[0]), batch_size):
            feats.append(np.asarray(feature_extractor(images[i : i + batch_size]), np.float64))
    else:
        for batch in images:
            feats.append(np.asarray(feature_extractor(batch), np.float64))
    return np.concatenate(feats, axis=0)


def _sqrt_psd(m):
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """`|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))` (Heusel et al. 2017)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = (
        np.atleast_2d(sigma1).astype(np.float64),
        np.atleast_2d(sigma2).astype(np.float64),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape[0] != mu1.shape[0]:
        raise ValueError(
            f"mu2/sigma2: expected shapes matching mu1 {mu1.shape} / sigma1 {sigma1.shape}, "
            f"got {mu2.shape} / {sigma2.shape}"
        )
    s1h = _sqrt_psd(sigma1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(s1h @ sigma2 @ s1h), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _check_feats(a, name):
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name}: expected features [N >= 2, D], got shape {a.shape}")
    return a


def fid_from_features(feats_a, feats_b):
    """FID between two feature sets `[N, D]`."""
    a, b = _check_feats(feats_a, "feats_a"), _check_feats(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feats_b: expected {a.shape[1]} features per row as feats_a, got {b.shape[1]}"
        )
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid_from_features(feats_a, feats_b, num_subsets=100, subset_size=1000, seed=0):
    """KID: mean (and std) over subsets of the unbiased MMD^2 with kernel `(x.y/d + 1)^3`.

    Returns `(mean, std)`. `subset_size` is capped at the smaller set's size.
    """
    a, b = _check_feats(feats_a, "feats_a"), _check_feats(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feats_b: expected {a.shape[1]} features per row as feats_a, got {b.shape[1]}"
        )
    checks.check_int(num_subsets, "num_subsets", minimum=1)
    m = min(int(subset_size), a.shape[0], b.shape[0])
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def fid(images_a, images_b, feature_extractor, batch_size=100):
    """FID of two image sets in [0, 1] with `feature_extractor` (e.g.
    `inception_feature_extractor()`)."""
    return fid_from_features(
        compute_features(images_a, feature_extractor, batch_size),
        compute_features(images_b, feature_extractor, batch_size),
    )


def kid(images_a, images_b, feature_extractor, batch_size=100, **kwargs):
    """KID `(mean, std)` of two image sets in [0, 1] with `feature_extractor`."""
    return kid_from_features(
        compute_features(images_a, feature_extractor, batch_size),
        compute_features(images_b, feature_extractor, batch_size),
        **kwargs,
    )


# ----------------------------------------------------------------------------- MINE
def _flatten(x, name):
    x = np.asarray(x, np.float32)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected [N, ...] samples, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def mine_mutual_information(
    x,
    y,
    steps=500,
    batch_size=256,
    hidden=256,
    learning_rate=1e-3,
    holdout=0.2,
    ema_decay=0.99,
    eval_every=50,
    seed=0,
    reduce="max",
    return_evaluations=False,
):
    """MINE estimate (nats) of I(X; Y) from paired samples (Belghazi et al. 2018).

    A statistics network `T(x, y)` (MLP, two hidden layers) is trained to maximise the
    Donsker-Varadhan bound `E_joint[T] - log E_marginal[e^T]` (marginal pairs by shuffling y), with
    the
    moving-average correction of the gradient's denominator. The bound is evaluated on the held-out
    fraction `holdout` of the pairs every `eval_every` steps and the largest value is returned (each
    is
    a valid lower bound for its T; held-out pairs keep a network that memorises the training pairs
    from being rewarded, and the maximum over time is early stopping: late, over-fitted T can make
    the
    held-out bound collapse to large negative values).

    `reduce="mean"` returns instead the mean of the held-out evaluations of the second half of the
    training (T past its first half of steps), which does not pick the luckiest evaluation; with
    `return_evaluations=True` the function returns `(value, [(step, held-out bound), ...])`.

    Args:
        x, y: `[N, ...]` paired samples (flattened).
    """
    checks.check_choice(reduce, "reduce", ("max", "mean"))
    x, y = _flatten(x, "x"), _flatten(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y: expected {x.shape[0]} samples as x, got {y.shape[0]}")
    n = x.shape[0]
    if n < 20:
        raise ValueError(f"x: expected at least 20 paired samples, got {n}")
    checks.check_int(steps, "steps", minimum=1)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = max(10, int(round(holdout * n)))
    test, train = perm[:n_test], perm[n_test:]
    # standardise with training statistics
    mx, sx = x[train].mean(0), x[train].std(0) + 1e-6
    my, sy = y[train].mean(0), y[train].std(0) + 1e-6
    x, y = (x - mx) / sx, (y - my) / sy
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731
    net = keras.Sequential(
        [
            keras.layers.Dense(hidden, activation="elu", kernel_initializer=init(0)),
            keras.layers.Dense(hidden, activation="elu", kernel_initializer=init(1)),
            keras.layers.Dense(1, kernel_initializer=init(2)),
        ]
    )
    net.build((None, x.shape[1] + y.shape[1]))
    opt = FusedAdam(learning_rate)
    ema = tf.Variable(1.0)

    @tf.function
    def step(xj, yj, ym):
        with tf.GradientTape() as tape:
            t_joint = net(tf.concat([xj, yj], 1))
            t_marg = net(tf.concat([xj, ym], 1))
            et = tf.reduce_mean(tf.exp(tf.clip_by_value(t_marg, -50.0, 50.0)))
            ema.assign(ema_decay * ema + (1 - ema_decay) * tf.stop_gradient(et))
            # biased-corrected gradient: d/dθ [E T_joint - E e^T / ema]
            loss = -(tf.reduce_mean(t_joint) - et / ema)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))

    xt, yt = tf.constant(x[test]), y[test]
    shuffles = [
        tf.constant(yt[np.random.default_rng(seed + 100 + r).permutation(len(test))])
        for r in range(10)
    ]

    def heldout_bound():
        t_joint = net(tf.concat([xt, tf.constant(yt)], 1)).numpy()[:, 0].astype(np.float64)
        vals = []
        for ym in shuffles:  # average the marginal term over several shuffles
            t_marg = net(tf.concat([xt, ym], 1)).numpy()[:, 0].astype(np.float64)
            tmax = t_marg.max()
            vals.append(tmax + np.log(np.mean(np.exp(t_marg - tmax))))
        return float(np.mean(t_joint) - np.mean(vals))

    bs = min(batch_size, len(train))
    evaluations = []
    for i in range(steps):
        idx = rng.choice(train, bs, replace=False)
        idm = rng.choice(train, bs, replace=False)
        step(tf.constant(x[idx]), tf.constant(y[idx]), tf.constant(y[idm]))
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            evaluations.append((i + 1, heldout_bound()))
    if reduce == "max":
        value = max(v for _, v in evaluations)
    else:
        late = [v for s, v in evaluations if s > steps / 2] or [evaluations[-1][1]]
        value = float(np.mean(late))
    return (value, evaluations) if return_evaluations else value


def layer_mutual_information(foreground, background, mask, downsample=8, **mine_kwargs):
    """The paper's "MI": `MINE(b_inv; f_vis) + MINE(b_vis; f_inv)` with the regions of eq. (10),
    each region average-pooled by `downsample` before flattening. Returns a dict with both terms
    and their sum."""
    f = tf.convert_to_tensor(foreground, tf.float32)
    b = tf.convert_to_tensor(background, tf.float32)
    m = tf.convert_to_tensor(mask, tf.float32)
    checks.check_same_shape(f, b, "foreground", "background")

    def pool(t):
        return (
            tf.nn.avg_pool2d(t, downsample, downsample, "VALID").numpy()
            if downsample > 1
            else t.numpy()
        )

    f_vis, f_inv = pool(f * m), pool(f * (1 - m))
    b_vis, b_inv = pool(b * (1 - m)), pool(b * m)
    if mine_kwargs.get("return_evaluations"):
        a, ea = mine_mutual_information(b_inv, f_vis, **mine_kwargs)
        c, ec = mine_mutual_information(b_vis, f_inv, **mine_kwargs)
        return {
            "mi_binv_fvis": a,
            "mi_bvis_finv": c,
            "mi": a + c,
            "evaluations_binv_fvis": ea,
            "evaluations_bvis_finv": ec,
        }
    a = mine_mutual_information(b_inv, f_vis, **mine_kwargs)
    c = mine_mutual_information(b_vis, f_inv, **mine_kwargs)
    return {"mi_binv_fvis": a, "mi_bvis_finv": c, "mi": a + c}
