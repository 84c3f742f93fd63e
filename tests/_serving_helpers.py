"""Tiny models and helpers shared by the serving / export / segment / evaluate tests."""

from __future__ import annotations

import numpy as np


def red_model(resolution=16, gain=20.0):
    """mask = sigmoid(gain * (red - 0.5)): a hand-checkable 'segmenter' of red objects."""
    import keras

    inp = keras.Input((resolution, resolution, 3), name="image")
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")
    out = conv(inp)
    model = keras.Model(inp, out)
    conv.set_weights(
        [
            np.array([gain, 0.0, 0.0], np.float32).reshape(1, 1, 3, 1),
            np.array([-gain / 2], np.float32),
        ]
    )
    return model


def conv_model(resolution=16, seed=0):
    """A tiny UNet-like conv net [N,R,R,3] -> [N,R,R,1] sigmoid with random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((resolution, resolution, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    d = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    u = keras.layers.UpSampling2D(interpolation="bilinear")(d)
    x = keras.layers.Concatenate()([x, u])
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inp, out)


def segmenter(model=None, resolution=16, margin=0.0, square=False):
    from indep_seg.segmenter import Segmenter

    return Segmenter(
        model if model is not None else conv_model(resolution),
        resolution=resolution,
        margin=margin,
        square=square,
        experiment="test",
    )


def png_bytes(image_uint8) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_uint8).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
