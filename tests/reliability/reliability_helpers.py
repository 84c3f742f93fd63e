"""Shared pieces of the reliability suite: the CLI, tiny models, a server in a subprocess.

Every process started here runs with a timeout and is killed (its whole process group) in the
fixtures' teardown; servers listen on 127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def child_env(**extra):
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(*args, cwd=None, timeout=180):
    """`indep-seg ARGS...` in a subprocess (python -m indep_seg), bounded in time."""
    return subprocess.run(
        [PY, "-m", "indep_seg", *map(str, args)],
        cwd=cwd or REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def command_status(name: str) -> str | None:
    """None when `indep-seg NAME` is implemented, else the reason it is not (for pytest.skip)."""
    path = REPO / "indep_seg" / "commands" / f"{name}.py"
    if not path.is_file():
        return f"indep_seg/commands/{name}.py does not exist"
    if "not implemented yet" in path.read_text():
        return f"'indep-seg {name}' is still the placeholder in indep_seg/commands/{name}.py"
    return None


def skip_unless_implemented(name: str):
    why = command_status(name)
    if why:
        pytest.skip(why)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tiny_segmenter(resolution=16, bias=0.0, seed=0):
    """A Segmenter whose network is one 3x3 conv + sigmoid (deterministic weights)."""
    import keras

    from indep_seg.segmenter import Segmenter

    model = keras.Sequential(
        [
            keras.layers.Input((resolution, resolution, 3)),
            keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid"),
        ]
    )
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.5, size=(3, 3, 3, 1)).astype(np.float32)
    model.layers[-1].set_weights([kernel, np.array([bias], np.float32)])
    return Segmenter(model, resolution=resolution, margin=0.0, square=False, experiment="tiny")


def export_version(segmenter, base, version):
    from indep_seg.serving.export import export_segmenter

    return export_segmenter(segmenter, base, version=version)


_FALLBACK_SERVER = r"""
import os, sys
from indep_seg.serving.server import ModelServer
name, base, port_file, poll = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = ModelServer.from_base_path(name, base, port=0, host="127.0.0.1",
                               file_system_poll_wait_seconds=poll).start()
tmp = port_file + ".tmp"
open(tmp, "w").write(str(s.port))
os.replace(tmp, port_file)
s.wait()
"""


class ServerProcess:
    """`indep-seg serve` (or, while that command is a placeholder,
    `indep_seg.serving.server.ModelServer`
    run the same way) in its own process group, with an address-space cap so that a request
    that makes it allocate without bound fails there instead of exhausting the shared machine."""

    def __init__(self, name, base, workdir: Path, poll=0.2, address_space_gb=10.0):
        self.name = name
        self.base = Path(base)
        self.workdir = Path(workdir)
        self.poll = poll
        self.address_space_gb = address_space_gb
        self.proc = None
        self.port = None
        self.log_path = self.workdir / "server.log"
        self.via_cli = command_status("serve") is None

    def _limits(self):
        cap = int(self.address_space_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def start(self, timeout=120):
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        if self.via_cli:
            self.port = free_port()
            cmd = [
                PY,
                "-m",
                "indep_seg",
                "serve",
                "--port",
                str(self.port),
                "--model_name",
                self.name,
                "--model_base_path",
                str(self.base),
                "--file_system_poll_wait_seconds",
                str(self.poll),
            ]
        else:
            port_file = self.workdir / "port"
            cmd = [
                PY,
                "-c",
                _FALLBACK_SERVER,
                self.name,
                str(self.base),
                str(port_file),
                str(self.poll),
            ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limits,
        )
        deadline = time.time() + timeout
        if not self.via_cli:
            while not port_file.exists():
                self._check_alive()
                if time.time() > deadline:
                    raise TimeoutError(f"server did not start in {timeout} s; log: {self.log()}")
                time.sleep(0.1)
            self.port = int(port_file.read_text())
        import grpc

        with grpc.insecure_channel(self.address) as ch:
            grpc.channel_ready_future(ch).result(timeout=max(1.0, deadline - time.time()))
        self.wait_available(1, timeout=max(1.0, deadline - time.time()))
        return self

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    def peak_rss_mb(self) -> float:
        """VmHWM of the server process (peak resident memory)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def available_versions(self):
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        with grpc.insecure_channel(self.address) as ch:
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = self.name
            try:
                resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=10)
            except grpc.RpcError:
                return []
        avail = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return sorted(v.version for v in resp.model_version_status if v.state == avail)

    def wait_available(self, version, timeout=60):
        deadline = time.time() + timeout
        while version not in self.available_versions():
            self._check_alive()
            if time.time() > deadline:
                raise TimeoutError(
                    f"version {version} not AVAILABLE after {timeout} s; log: {self.log()}"
                )
            time.sleep(0.1)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=10)
        else:
            kill_group(self.proc, signal.SIGKILL)  # leftover children, if any


def image_request(name, images, signature="serving_default"):
    from tensorflow_serving.apis import predict_pb2

    from indep_seg.serving.tensors import to_tensor_proto

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    req.inputs["image"].CopyFrom(to_tensor_proto(np.asarray(images, np.float32)))
    return req


def saved_model_masks(version_dir, images):
    """The exported signature run directly (no server): the reference answer."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    return loaded.signatures["serving_default"](image=tf.constant(images, tf.float32))[
        "mask"
    ].numpy()


_KWARGS_SERVER = r"""
import json, os, sys
from indep_seg.serving.server import ModelServer
name, base, port_file, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
s = ModelServer.from_base_path(name, base, port=0, host="127.0.0.1", **kwargs).start()
tmp = port_file + ".tmp"
open(tmp, "w").write(f"{s.port} {s.rest_api_port or 0}")
os.replace(tmp, port_file)
s.wait()
"""


class ModelServerProcess(ServerProcess):
    """`indep_seg.serving.server.ModelServer` with keyword arguments that `indep-seg serve` has no
    flag for
    (REST timeouts, limits, `model_base_path_prefix`), in its own process group with the same
    address-space cap as `ServerProcess`; `.rest_port` is its REST port when `rest_api_port=0`."""

    def __init__(self, name, base, workdir: Path, address_space_gb=10.0, **server_kwargs):
        super().__init__(
            name,
            base,
            workdir,
            poll=server_kwargs.get("file_system_poll_wait_seconds", 0),
            address_space_gb=address_space_gb,
        )
        self.server_kwargs = server_kwargs
        self.rest_port = None
        self.via_cli = False

    def start(self, timeout=120):
        import json

        import grpc

        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        port_file = self.workdir / "ports"
        cmd = [
            PY,
            "-c",
            _KWARGS_SERVER,
            self.name,
            str(self.base),
            str(port_file),
            json.dumps(self.server_kwargs),
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limits,
        )
        deadline = time.time() + timeout
        while not port_file.exists():
            self._check_alive()
            if time.time() > deadline:
                raise TimeoutError(f"server did not start in {timeout} s; log: {self.log()}")
            time.sleep(0.1)
        self.port, self.rest_port = map(int, port_file.read_text().split())
        with grpc.insecure_channel(self.address) as ch:
            grpc.channel_ready_future(ch).result(timeout=max(1.0, deadline - time.time()))
        self.wait_available(1, timeout=max(1.0, deadline - time.time()))
        return self

    def rss_mb(self) -> float:
        """VmRSS of the server process (resident memory now)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")
