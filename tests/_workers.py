"""Worker processes on 127.0.0.1 for MultiWorkerMirroredStrategy tests: each gets its own
TF_CONFIG, runs in its own session (so a kill reaches its children), logs to
`tmp_path/worker<i>.log`, and is always killed when the wait ends or times out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


def free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def kill_workers(procs):
    """SIGKILL every still-running worker's process group, then reap them."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def start_workers(tmp_path, argv, num_workers=2):
    """`python ARGV...` once per worker of a loopback cluster (TF_CONFIG, no GPU).

    Returns `(procs, logs)` for `wait_workers`."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(num_workers)]}
    procs, logs = [], []
    try:
        for index in range(num_workers):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
                TF_CPP_MIN_LOG_LEVEL="2",
                CUDA_VISIBLE_DEVICES="",
            )
            log = open(tmp_path / f"worker{index}.log", "w")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, *map(str, argv)],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    except BaseException:
        kill_workers(procs)
        for log in logs:
            log.close()
        raise
    return procs, logs


def wait_workers(tmp_path, procs, logs, timeout_s=TIMEOUT_S):
    """Waits for every worker (at most `timeout_s`), kills what is left, asserts they all exited
    0 (showing their logs' tails if not) and returns the last JSON line each printed."""
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.5)
        codes = [p.poll() for p in procs]
    finally:
        kill_workers(procs)
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"worker{i}.log").read_text() for i in range(len(procs))]
    assert codes == [0] * len(procs), (
        f"worker exit codes {codes} (None = still running after {timeout_s} s):\n"
        + "\n-----\n".join(o[-4000:] for o in outputs)
    )
    return [json.loads([ln for ln in o.splitlines() if ln.startswith("{")][-1]) for o in outputs]
