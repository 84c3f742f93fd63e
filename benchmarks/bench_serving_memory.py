"""Resident memory of the model server with one small model (issue 23: 3.2 GB at idle, 4.2 GB
under load; goal under 1 GB at idle).

Exports a small box-level segmenter (`indep_seg.networks.unet` preset, default `small` at 128),
starts `indep-seg serve` on it (a separate process, loopback ports, gRPC and REST) and reads the
server's /proc status:

- idle after start (the model loaded, no request yet),
- after a load phase (`--requests` gRPC Predicts of 1-2 images of random sizes from `--clients`
  threads, with a hot reload: version 2 loaded and 1 unloaded while they run; then REST
  predicts and a few `segment_bytes` PNGs),
- idle again after the load (`--settle` seconds),

as VmRSS, RssAnon (heap: what malloc holds), RssFile (mapped libraries, mostly TensorFlow's
shared objects) and VmHWM (peak), with the thread count. `--env K=V` runs the server once more
with extra environment variables (e.g. `--env INDEP_SEG_SERVING_MALLOC=default` leaves glibc's
malloc as it is, without the server's 2 arenas and trimming), to compare configurations.

A second part (`--breakdown`) measures one fresh process step by step: Python alone, `import
tensorflow`, `import indep_seg.serving.server`, the model loaded, the first Predict.

    .venv/bin/python benchmarks/bench_serving_memory.py --out benchmarks/results/serving_memory.json

Numbers move with the neighbours' load only a little (memory, not time), but the machine's
load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "VmSize", "Threads")


def proc_status(pid) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            v = value.split()[0]
            out[key if key == "Threads" else f"{key}_mb"] = (
                int(v) if key == "Threads" else round(int(v) / 1024, 1)
            )
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_model(preset, resolution, folder):
    from indep_seg.networks.unet import unet_preset
    from indep_seg.segmenter import Segmenter
    from indep_seg.serving.export import export_segmenter

    net = unet_preset(preset, resolution=resolution)
    seg = Segmenter(
        net, resolution=resolution, margin=0.0, square=False, experiment=f"bench-mem-{preset}"
    )
    export_segmenter(seg, folder, version=1)
    return int(net.count_params())


def start_server(base, env_extra, workdir):
    port, rest = _free_port(), _free_port()
    ready = Path(workdir) / f"ready-{port}"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(env_extra)
    log = open(Path(workdir) / f"server-{port}.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "indep_seg",
            "serve",
            "--port",
            str(port),
            "--rest_api_port",
            str(rest),
            "--model_name",
            "m",
            "--model_base_path",
            str(base),
            "--file_system_poll_wait_seconds",
            "0",
            "--ready_file",
            str(ready),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(
                "server did not start: "
                f"{(Path(workdir) / f'server-{port}.log').read_text()[-2000:]}"
            )
        time.sleep(0.2)
    return proc, port, rest


def hot_reload(port, base):
    """Version 2 (a copy of 1) dropped into the base path and a ReloadConfigRequest: the server
    loads 2 and unloads 1 while requests run."""
    import shutil

    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    shutil.copytree(Path(base) / "1", Path(base) / "2.tmp")
    os.replace(Path(base) / "2.tmp", Path(base) / "2")
    req = model_management_pb2.ReloadConfigRequest()
    mc = req.config.model_config_list.config.add()
    mc.name, mc.base_path, mc.model_platform = "m", str(base), "tensorflow"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(req, timeout=300)


def load(port, rest, resolution, requests, threads=16, base=None):
    import base64
    import io
    import urllib.request

    import grpc
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from indep_seg.serving.tensors import to_tensor_proto

    rng = np.random.default_rng(0)
    image = rng.random((1, resolution, resolution, 3), dtype=np.float32)
    errors = []

    def worker(n, seed):
        r = np.random.default_rng(seed)
        with grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 2**26)]
        ) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for _ in range(n):
                # images of the size a client has at hand (64..512 px a side, batch 1-2): the
                # graph crops and resizes them to the model's resolution
                h, w = (int(v) for v in r.integers(64, 513, size=2))
                req = predict_pb2.PredictRequest()
                req.model_spec.name = "m"
                req.inputs["image"].CopyFrom(
                    to_tensor_proto(r.random((int(r.integers(1, 3)), h, w, 3), dtype=np.float32))
                )
                try:
                    stub.Predict(req, timeout=120)
                except grpc.RpcError as e:  # pragma: no cover
                    errors.append(e.code().name)

    ts = [threading.Thread(target=worker, args=(requests // threads, i)) for i in range(threads)]
    for t in ts:
        t.start()
    if base is not None:
        time.sleep(1.0)
        hot_reload(port, base)
    for t in ts:
        t.join()
    body = json.dumps({"instances": image.tolist()}).encode()
    buf = io.BytesIO()
    Image.fromarray((image[0] * 255).astype(np.uint8)).save(buf, format="PNG")
    png = json.dumps(
        {
            "signature_name": "segment_bytes",
            "instances": [{"b64": base64.b64encode(buf.getvalue()).decode()}],
        }
    ).encode()
    for payload in [body] * 10 + [png] * 10:
        r = urllib.request.Request(
            f"http://127.0.0.1:{rest}/v1/models/m:predict",
            data=payload,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(r, timeout=60) as resp:
            resp.read()
    return errors


def measure_server(base, env_extra, resolution, requests, settle, workdir, clients=16):
    import shutil

    if (Path(base) / "2").exists():
        shutil.rmtree(Path(base) / "2")
    proc, port, rest = start_server(base, env_extra, workdir)
    try:
        time.sleep(settle)
        idle = proc_status(proc.pid)
        t0 = time.time()
        errors = load(port, rest, resolution, requests, threads=clients, base=base)
        loaded = proc_status(proc.pid)
        took = time.time() - t0
        time.sleep(settle)
        after = proc_status(proc.pid)
        return {
            "env": env_extra,
            "idle_after_start": idle,
            "after_load": loaded,
            "idle_after_load": after,
            "load_seconds": round(took, 1),
            "load_errors": errors,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


_BREAKDOWN = r"""
import json, os, sys
sys.path.insert(0, sys.argv[2])
def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
steps = {"python": rss()}
import numpy as np
import tensorflow as tf
steps["import tensorflow"] = rss()
import indep_seg.serving.server
steps["import indep_seg.serving.server"] = rss()
from indep_seg.serving.servables import Servable
s = Servable("m", 1, sys.argv[1])
steps["model loaded (Servable)"] = rss()
sig = s.signature("serving_default")
r = int(sys.argv[3])
s.run(sig, {"image": np.random.default_rng(0).random((1, r, r, 3), dtype=np.float32)})
steps["first Predict"] = rss()
for _ in range(20):
    s.run(sig, {"image": np.random.default_rng(0).random((1, r, r, 3), dtype=np.float32)})
steps["21 Predicts"] = rss()
import keras
steps["import keras (not done by the server)"] = rss()
print("STEPS " + json.dumps(steps))
"""


def breakdown(version_dir, resolution, env_extra):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", _BREAKDOWN, str(version_dir), str(REPO), str(resolution)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    for line in out.stdout.splitlines():
        if line.startswith("STEPS "):
            return json.loads(line[6:])
    raise RuntimeError(out.stderr[-2000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unet", default="small", help="indep_seg.networks.unet preset")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--requests", type=int, default=320, help="gRPC Predicts in the load phase")
    ap.add_argument(
        "--clients", type=int, default=16, help="concurrent gRPC clients in the load phase"
    )
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading memory")
    ap.add_argument(
        "--env", action="append", default=[], help="K=V for the server (several: one run each)"
    )
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serving_memory.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "m"
        params = export_model(args.unet, args.resolution, base)
        runs = [
            measure_server(base, {}, args.resolution, args.requests, args.settle, tmp, args.clients)
        ]
        for spec in args.env:
            env = dict(kv.split("=", 1) for kv in spec.split(","))
            runs.append(
                measure_server(
                    base, env, args.resolution, args.requests, args.settle, tmp, args.clients
                )
            )
        steps = None if args.no_breakdown else breakdown(base / "1", args.resolution, {})
        saved_model_mb = round(
            sum(f.stat().st_size for f in (base / "1").rglob("*") if f.is_file()) / 2**20, 2
        )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:  # pragma: no cover
        commit = ""
    result = {
        "benchmark": "serving_memory",
        "unet": args.unet,
        "resolution": args.resolution,
        "params": params,
        "saved_model_mb": saved_model_mb,
        "requests": args.requests,
        "clients": args.clients,
        "load": "gRPC Predicts of 1-2 random images of 64..512 px a side from --clients threads, a "
        "hot "
        "reload (version 2 loaded, 1 unloaded) 1 s in, then 10 REST predicts and 10 "
        "segment_bytes PNGs",
        "commit": commit,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "runs": runs,
        "breakdown_rss_mb": steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
