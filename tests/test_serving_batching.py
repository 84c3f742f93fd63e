"""Server-side batching (`indep_seg.serving.batching`) and the text-format configuration files."""

import threading
import time

import grpc
import numpy as np
import pytest

from indep_seg.serving.batching import BatchScheduler
from indep_seg.serving.config import (
    BatchingOptions,
    ConfigError,
    parse_batching_parameters,
    parse_model_server_config,
)
from indep_seg.serving.errors import ServingError
from indep_seg.serving.servables import SignatureInfo


class FakeServable:
    """Doubles its input; records the batch sizes it ran; negative inputs are 'bad'."""

    def __init__(self, delay=0.05):
        self.sizes = []
        self.delay = delay
        self.lock = threading.Lock()

    def run(self, sig, inputs):
        x = inputs["x"]
        with self.lock:
            self.sizes.append(len(x))
        time.sleep(self.delay)
        if x.dtype.kind == "f" and (x < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "x: negative")
        return {"y": x * 2 if x.dtype.kind == "f" else x}


SIG = SignatureInfo("serving_default", None, {}, {})


def _concurrent(scheduler, servable, arrays):
    results, errors = [None] * len(arrays), [None] * len(arrays)

    def go(i):
        try:
            results[i] = scheduler.run(servable, SIG, {"x": arrays[i]})["y"]
        except ServingError as e:
            errors[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results, errors


def test_concurrent_requests_are_merged_and_split_back():
    sched = BatchScheduler(
        BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000, num_batch_threads=1)
    )
    fake = FakeServable()
    arrays = [np.full((1, 3, 3), i, np.float32) for i in range(8)]
    try:
        results, errors = _concurrent(sched, fake, arrays)
    finally:
        sched.stop()
    assert errors == [None] * 8
    for a, r in zip(arrays, results):
        np.testing.assert_array_equal(r, a * 2)
    assert sum(fake.sizes) == 8 and max(fake.sizes) > 1  # merged into fewer model calls
    assert len(fake.sizes) < 8


def test_shapes_do_not_mix_and_bad_example_fails_alone():
    sched = BatchScheduler(
        BatchingOptions(max_batch_size=16, batch_timeout_micros=50_000, num_batch_threads=1)
    )
    fake = FakeServable(delay=0.01)
    arrays = [
        np.ones((1, 2, 2), np.float32),
        np.ones((1, 3, 3), np.float32),
        -np.ones((1, 2, 2), np.float32),
        np.ones((2, 2, 2), np.float32),
    ]
    try:
        results, errors = _concurrent(sched, fake, arrays)
    finally:
        sched.stop()
    assert errors[2] is not None and errors[2].code == grpc.StatusCode.INVALID_ARGUMENT
    assert [e for i, e in enumerate(errors) if i != 2] == [None] * 3
    np.testing.assert_array_equal(results[3], 2 * np.ones((2, 2, 2)))
    np.testing.assert_array_equal(results[1], 2 * np.ones((1, 3, 3)))


def test_allowed_batch_sizes_pad_the_batch():
    sched = BatchScheduler(
        BatchingOptions(
            max_batch_size=4,
            batch_timeout_micros=1000,
            allowed_batch_sizes=[2, 4],
            num_batch_threads=1,
        )
    )
    fake = FakeServable(delay=0.0)
    try:
        out = sched.run(fake, SIG, {"x": np.arange(3, dtype=np.float32)[:, None]})["y"]
    finally:
        sched.stop()
    assert fake.sizes == [4]
    np.testing.assert_array_equal(out[:, 0], [0, 2, 4])


def test_full_queue_is_unavailable_and_strings_bypass():
    sched = BatchScheduler(
        BatchingOptions(
            max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1, batch_timeout_micros=0
        )
    )
    fake = FakeServable(delay=0.3)
    arrays = [np.ones((1, 1), np.float32)] * 8
    try:
        _, errors = _concurrent(sched, fake, arrays)
        assert any(
            e is not None and e.code == grpc.StatusCode.UNAVAILABLE and "queue" in e.message
            for e in errors
        )
        strings = np.array([b"a", b"b"], dtype=object)
        fake.sizes.clear()
        assert list(sched.run(fake, SIG, {"x": strings})["y"]) == [b"a", b"b"]
    finally:
        sched.stop()


def test_batching_parameters_text_format():
    opts = parse_batching_parameters("""
        max_batch_size { value: 16 }
        batch_timeout_micros { value: 2000 }
        num_batch_threads { value: 3 }
        max_enqueued_batches { value: 7 }
        allowed_batch_sizes: 8
        allowed_batch_sizes: 16
        pad_variable_length_inputs: true
    """)
    assert (
        opts.max_batch_size,
        opts.batch_timeout_micros,
        opts.num_batch_threads,
        opts.max_enqueued_batches,
        opts.allowed_batch_sizes,
        opts.pad_variable_length_inputs,
    ) == (16, 2000, 3, 7, [8, 16], True)
    with pytest.raises(ConfigError, match="f.txt: not a valid text-format BatchingParameters"):
        parse_batching_parameters("max_batch_size: 3", "f.txt")
    with pytest.raises(ConfigError, match="must equal max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 16 } allowed_batch_sizes: 8")
    with pytest.raises(ConfigError, match="max_batch_size must be >= 1"):
        parse_batching_parameters("max_batch_size { value: 0 }")


def test_model_server_config_validation():
    cfg = parse_model_server_config(
        'model_config_list { config { name: "a" base_path: "/m/a" '
        "model_version_policy { specific { versions: 2 } } "
        'version_labels { key: "canary" value: 2 } } }'
    )
    mc = cfg.model_config_list.config[0]
    assert mc.model_version_policy.specific.versions == [2] and dict(mc.version_labels) == {
        "canary": 2
    }
    for text, message in [
        ('model_config_list { config { name: "a" } }', "'base_path' is empty"),
        ('model_config_list { config { base_path: "/x" } }', "'name' is empty"),
        (
            'model_config_list { config { name: "a" base_path: "/x" '
            "model_version_policy { specific { } } } }",
            "lists no versions",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/x" '
            'version_labels { key: "s" value: 0 } } }',
            "expected a positive version",
        ),
        ("model_config_list {", "not a valid text-format ModelServerConfig"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_model_server_config(text)
