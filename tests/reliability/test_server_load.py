"""Load: 16 concurrent clients x 500 Predict requests with zero errors while a new model version
is moved into the served base path and hot-loaded by the server's polling (issue 9).

Version 2 is exported beforehand (into a staging folder, as a deployment would) and renamed into
the base path once a tenth of the requests are answered; each client goes on past its 500 requests
(at most 5 minutes in all) until version 2 has answered, so that a machine too busy to load v2
before the 8,000th request still sees the swap happen under load.

Every answer must be exactly the mask of the version it names (v1 or v2: no request is answered
by a half-loaded model), both versions must have answered (the swap happened under load), and
after the swap version 2 is the one served.
"""

import os
import threading
import time

import grpc
import numpy as np
import pytest
from reliability_helpers import (
    ServerProcess,
    export_version,
    image_request,
    saved_model_masks,
    tiny_segmenter,
)
from tensorflow_serving.apis import prediction_service_pb2_grpc

pytestmark = pytest.mark.reliability

NAME = "loaded"
CLIENTS = 16
REQUESTS = 500


def test_16_clients_x_500_requests_during_hot_reload(tmp_path):
    base = tmp_path / "models" / NAME
    v1_dir = export_version(tiny_segmenter(bias=-3.0, seed=0), base, 1)
    v2_staged = export_version(tiny_segmenter(bias=3.0, seed=1), tmp_path / "staging", 2)
    rng = np.random.default_rng(0)
    images = rng.random((1, 12, 12, 3), dtype=np.float32)
    expected = {1: saved_model_masks(v1_dir, images), 2: saved_model_masks(v2_staged, images)}
    server = ServerProcess(NAME, base, tmp_path / "server", poll=0.2).start()
    request = image_request(NAME, images)
    errors, answered = [], {1: 0, 2: 0}
    lock = threading.Lock()
    done = [0]
    start_barrier = threading.Barrier(CLIENTS)
    deadline = time.time() + 300

    def client(i):
        with grpc.insecure_channel(server.address) as ch:  # one connection per client
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            start_barrier.wait(timeout=60)
            sent = 0
            while sent < REQUESTS or (answered[2] == 0 and time.time() < deadline):
                sent += 1
                try:
                    resp = stub.Predict(request, timeout=30)
                    version = resp.model_spec.version.value
                    t = resp.outputs["mask"]
                    got = np.array(t.float_val, np.float32).reshape(
                        [d.size for d in t.tensor_shape.dim]
                    )
                    with lock:
                        done[0] += 1
                        answered[version] = answered.get(version, 0) + 1
                    if not np.allclose(got, expected[version], atol=1e-5):
                        raise AssertionError(
                            f"a v{version} answer differs from the v{version} model"
                        )
                except Exception as e:  # noqa: BLE001 - every failure is recorded
                    with lock:
                        code = getattr(e, "code", lambda: "")()
                        errors.append(f"client {i}: {type(e).__name__}: {code} {e}"[:300])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    try:
        t0 = time.time()
        for t in threads:
            t.start()
        while done[0] < CLIENTS * REQUESTS // 10 and time.time() - t0 < 120:
            time.sleep(0.05)
        os.replace(v2_staged, base / "2")  # hot load while the clients keep going
        for t in threads:
            t.join(timeout=600)
        elapsed = time.time() - t0
        assert not any(t.is_alive() for t in threads), "clients still running after 600 s"
        assert not errors, f"{len(errors)} errors, first: {errors[:3]}"
        assert sum(answered.values()) >= CLIENTS * REQUESTS
        assert answered[1] > 0 and answered[2] > 0, (
            f"the swap did not happen under load: {answered}"
        )
        server.wait_available(2, timeout=30)
        with grpc.insecure_channel(server.address) as ch:
            resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
                request, timeout=30
            )
        assert resp.model_spec.version.value == 2
        got = np.array(resp.outputs["mask"].float_val, np.float32).reshape(expected[2].shape)
        np.testing.assert_allclose(got, expected[2], atol=1e-5)
        assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the versions do differ
        print(
            f"{sum(answered.values())} requests in {elapsed:.1f} s "
            f"({sum(answered.values()) / elapsed:.0f}/s); "
            f"answered by version: {answered}"
        )
    finally:
        server.stop()
