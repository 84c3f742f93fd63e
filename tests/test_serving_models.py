"""Model management: version policies, labels, hot loading while serving, config files,
confinement."""

import logging
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from indep_seg.serving.config import ConfigError, parse_model_server_config
from indep_seg.serving.errors import ServingError
from indep_seg.serving.export import export_segmenter
from indep_seg.serving.servables import ModelManager, wait_for
from indep_seg.serving.server import ModelServer
from tests._serving_helpers import conv_model, segmenter


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    seg_a = segmenter(conv_model(16, seed=0))
    seg_b = segmenter(conv_model(16, seed=1))
    a = export_segmenter(seg_a, root / "a", version=1)
    b = export_segmenter(seg_b, root / "b", version=1)
    return {"root": root, "seg_a": seg_a, "seg_b": seg_b, "a": a, "b": b}


def _base_with(tmp_path, src, versions, name="m"):
    base = tmp_path / name
    base.mkdir()
    for v in versions:
        shutil.copytree(src, base / str(v))
    return base


def _config(text):
    return parse_model_server_config(text)


def test_version_policies_and_labels(exported, tmp_path):
    base = _base_with(tmp_path, exported["a"], [1, 2, 3])
    cases = {
        "": [3],
        "model_version_policy { latest { num_versions: 2 } }": [2, 3],
        "model_version_policy { all {} }": [1, 2, 3],
        "model_version_policy { specific { versions: 1 versions: 3 } }": [1, 3],
    }
    for policy, expected in cases.items():
        text = f'model_config_list {{ config {{ name: "m" base_path: "{base}" {policy} '
        m = ModelManager(_config(text + "} }"))
        available = [s.version for s in m.status("m") if s.state == "AVAILABLE"]
        assert available == expected, policy
        assert m.get("m").version == expected[-1]
        labelled = _config(text + 'version_labels { key: "stable" value: 1 } } }')
        if 1 in expected:
            assert ModelManager(labelled).get("m", label="stable").version == 1
        else:  # TF Serving labels only available versions
            with pytest.raises(
                ServingError, match="label to version 1 of model m, which is not currently"
            ) as e:
                ModelManager(labelled)
            assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_symlink_outside_base_is_never_loaded(exported, tmp_path, caplog):
    base = _base_with(tmp_path, exported["a"], [1])
    outside = tmp_path / "outside"
    shutil.copytree(exported["b"], outside)
    os.symlink(outside, base / "5")
    with caplog.at_level(logging.WARNING, logger="indep_seg.serving"):
        m = ModelManager(
            _config(
                f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
                "model_version_policy { all {} } } }"
            )
        )
    assert [s.version for s in m.status("m")] == [1]
    assert "outside the base path" in caplog.text


def test_broken_version_reported_and_others_keep_serving(exported, tmp_path):
    base = _base_with(tmp_path, exported["a"], [1])
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"garbage")
    m = ModelManager(_config(f'model_config_list {{ config {{ name: "m" base_path: "{base}" }} }}'))
    states = {s.version: s for s in m.status("m")}
    assert states[2].state == "END" and "load failed" in states[2].error_message
    assert m.get("m").version == 1  # v1 stays served since v2 never became available


def test_malformed_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text('model_config_list { config { name: "m" base_path: 3 } }')
    with pytest.raises(ConfigError, match="models.config.*ModelServerConfig"):
        ModelServer.from_config_file(bad)
    with pytest.raises(ConfigError, match="appears twice"):
        _config(
            'model_config_list { config { name: "m" base_path: "/x" } config { name: "m" '
            'base_path: "/y" } }'
        )
    from indep_seg.cli import main

    assert main(["serve", "--model_config_file", str(bad), "--port", "0"]) == 2


def _predict(stub, image, name="m"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
    resp = stub.Predict(req, timeout=60)
    return resp.model_spec.version.value, tf.make_ndarray(resp.outputs["mask"])


@pytest.mark.parametrize("batching", [False, True])
def test_hot_load_new_version_while_requests_in_flight(exported, tmp_path, batching):
    from indep_seg.serving.config import BatchingOptions

    base = _base_with(tmp_path, exported["a"], [1])
    server = ModelServer.from_base_path(
        "m",
        base,
        port=0,
        file_system_poll_wait_seconds=0.05,
        batching=BatchingOptions(batch_timeout_micros=2000) if batching else None,
    )
    server.start()
    img = np.random.default_rng(0).random((1, 20, 24, 3), dtype=np.float32)
    ref = {1: exported["seg_a"].predict([img[0]])[0], 2: exported["seg_b"].predict([img[0]])[0]}
    results, errors, stop = [], [], threading.Event()

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            while not stop.is_set():
                try:
                    results.append(_predict(stub, img))
                except grpc.RpcError as e:
                    errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=client) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        assert wait_for(lambda: len(results) >= 5, timeout=60)
        # Drop version 2 in place the way `indep-seg export` does (temporary name, then rename).
        tmp = base / ".tmp-incoming"
        shutil.copytree(exported["b"], tmp)
        os.replace(tmp, base / "2")
        assert wait_for(lambda: any(v == 2 for v, _ in results[-3:]), timeout=60), (
            "version 2 never served"
        )
        n = len(results)
        assert wait_for(lambda: len(results) >= n + 5, timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    try:
        assert not errors, errors[:3]
        versions = [v for v, _ in results]
        assert versions[0] == 1 and versions[-1] == 2
        for v, out in results:
            np.testing.assert_allclose(out[0, ..., 0], ref[v], atol=1e-5)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = "m"
            st = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=30)
            states = {s.version: s.state for s in st.model_version_status}
            assert states == {
                1: get_model_status_pb2.ModelVersionStatus.END,
                2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
            }
    finally:
        server.stop()


def test_config_file_with_two_models_and_polling(exported, tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text(
        f'model_config_list {{ config {{ name: "a" base_path: "{exported["a"].parent}" }} }}'
    )
    server = ModelServer.from_config_file(
        cfg, port=0, file_system_poll_wait_seconds=0, model_config_file_poll_wait_seconds=0.05
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            img = np.random.default_rng(1).random((1, 9, 11, 3), dtype=np.float32)
            _, out_a = _predict(stub, img, "a")
            with pytest.raises(grpc.RpcError) as info:
                _predict(stub, img, "b")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            cfg.write_text(
                cfg.read_text().replace("}} }", "") + ""
            )  # malformed: kept the old config
            time.sleep(0.3)
            assert _predict(stub, img, "a")[0] == 1
            cfg.write_text(
                f'model_config_list {{ config {{ name: "a" base_path: "{exported["a"].parent}" }}\n'
                f'  config {{ name: "b" base_path: "{exported["b"].parent}" }} }}'
            )

            def b_served():
                try:
                    return _predict(stub, img, "b")
                except grpc.RpcError:
                    return None

            assert wait_for(lambda: b_served() is not None, timeout=60)
            _, out_b = _predict(stub, img, "b")
            np.testing.assert_allclose(
                out_a[0, ..., 0], exported["seg_a"].predict([img[0]])[0], atol=1e-5
            )
            np.testing.assert_allclose(
                out_b[0, ..., 0], exported["seg_b"].predict([img[0]])[0], atol=1e-5
            )
    finally:
        server.stop()


def test_serve_command_end_to_end(exported, tmp_path):
    """`indep-seg serve` as users run it: a separate process, TF Serving's flags, SIGTERM to
    stop."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    from tests._serving_helpers import free_port

    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1000 }\n")
    ready = tmp_path / "ready"
    rest_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indep_seg.cli",
            "serve",
            "--port",
            "0",
            "--rest_api_port",
            str(rest_port),
            "--model_name",
            "horse",
            "--model_base_path",
            str(exported["a"].parent),
            "--batching_parameters_file",
            str(batching),
            "--ready_file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=180), (
            "server did not start"
        )
        assert proc.poll() is None, proc.stderr.read()
        grpc_port, got_rest = map(int, ready.read_text().split())
        assert got_rest == rest_port
        with urllib.request.urlopen(
            f"http://127.0.0.1:{rest_port}/v1/models/horse", timeout=30
        ) as r:
            assert json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE"
        img = np.random.default_rng(4).random((1, 10, 12, 3), dtype=np.float32)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            version, out = _predict(
                prediction_service_pb2_grpc.PredictionServiceStub(ch), img, "horse"
            )
        assert version == 1
        np.testing.assert_allclose(
            out[0, ..., 0], exported["seg_a"].predict([img[0]])[0], atol=1e-5
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "serving gRPC on 127.0.0.1:" in out and "server stopped" in err
    assert "Traceback" not in err


def test_base_path_prefix_confines_configs_and_polls(exported, tmp_path, monkeypatch):
    """`model_base_path_prefix` (or INDEP_SEG_MODEL_BASE_PATH_PREFIX): a config naming a base path
    outside the root is refused, and a base path swapped for a symlink leading outside is no longer
    loaded from at the next poll."""
    from indep_seg.serving.config import model_server_config_from_flags

    root = tmp_path / "root"
    root.mkdir()
    base = _base_with(root, exported["a"], [1])
    outside = _base_with(tmp_path, exported["b"], [1], name="outside")
    monkeypatch.setenv("INDEP_SEG_MODEL_BASE_PATH_PREFIX", str(root))
    with pytest.raises(ServingError) as e:
        ModelServer.from_base_path("m", outside, port=0)
    assert (
        e.value.code == grpc.StatusCode.PERMISSION_DENIED
        and "--model_base_path_prefix" in e.value.message
    )
    with pytest.raises(ServingError):
        ModelServer.from_base_path("m", root / ".." / "outside", port=0)
    monkeypatch.delenv("INDEP_SEG_MODEL_BASE_PATH_PREFIX")
    manager = ModelManager(model_server_config_from_flags("m", str(base)), base_path_prefix=root)
    assert manager.get("m").version == 1
    shutil.rmtree(base)
    base.symlink_to(outside, target_is_directory=True)
    manager.poll()
    with pytest.raises(ServingError) as e:
        manager.get("m")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    unconfined = ModelManager(model_server_config_from_flags("m", str(base)))
    assert unconfined.get("m").version == 1  # without the option, as TF Serving: any folder
