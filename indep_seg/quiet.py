"""Quiet by default: TensorFlow's start-up logs are hidden unless `--verbose` is given.

TensorFlow prints, on every start, C++ log lines such as `I0000 ... cudart_stub.cc] Could not
find cuda drivers`, `E0000 ... failed call to cuInit: INTERNAL: CUDA error` and grappler's
`remapper failed: INVALID_ARGUMENT`, which make a healthy run on a CPU machine look broken.
`configure(verbose=False)` (called by `indep-seg` before anything imports TensorFlow):

- sets `TF_CPP_MIN_LOG_LEVEL=3` and `GRPC_VERBOSITY=ERROR` unless the user set them;
- sets the Python loggers `tensorflow`, `absl`, `h5py` to ERROR and the absl verbosity too;
- filters the process's standard error (file descriptor 2) through a pipe that drops the
  glog-style lines (`I0000 00:00:... file.cc:NN] ...`, severities I, W and E; fatal lines are
  kept) and absl's "All log messages before absl::InitializeLog()" banner, which TensorFlow's
  C++ code writes whatever `TF_CPP_MIN_LOG_LEVEL` says. Everything else passes unchanged.

`verbose=True` changes nothing: every log line is shown.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings

__all__ = ["configure", "is_noise"]

_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+\S+:\d+\]"  # glog-style I/W/E
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler "
    rb"flags"
    rb")"
)

_filter_installed = False


def is_noise(line) -> bool:
    """True for a TensorFlow / absl start-up log line that the quiet mode hides."""
    if isinstance(line, str):
        line = line.encode("utf-8", "replace")
    return bool(_NOISE.match(line.lstrip(b"\r")))


def _install_stderr_filter() -> None:
    global _filter_installed
    if _filter_installed:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except OSError:  # no real descriptor 2 (embedded interpreters): nothing to filter
        return
    _filter_installed = True

    def pump():
        with os.fdopen(r, "rb", buffering=0) as f:
            pending = b""
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                pending += chunk
                # Lines end in \n, or in \r for progress bars redrawn in place (tqdm): both pass at
                # once.
                pieces = re.split(rb"(?<=[\r\n])", pending)
                pending = pieces.pop()
                out = b"".join(x for x in pieces if not is_noise(x.rstrip(b"\r\n")))
                if (
                    pending and pending[:1] not in b"IWET"
                ):  # cannot start a noise line: no need to wait
                    out, pending = out + pending, b""
                if out:
                    os.write(saved, out)
            if pending and not is_noise(pending):
                os.write(saved, pending)

    thread = threading.Thread(target=pump, name="indep-seg-stderr-filter", daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        os.dup2(saved, 2)  # closes this process's write end: the pump sees EOF
        thread.join(timeout=2.0)

    atexit.register(restore)


def configure(verbose: bool = False, filter_stderr: bool = True) -> None:
    """Hides TensorFlow's start-up logs unless `verbose`; call before TensorFlow is imported."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, module=r"(tensorflow|keras|tf2onnx)"
    )
    # Only a real terminal / file on descriptor 2 is filtered (not a test's captured stream).
    if filter_stderr and sys.stderr is sys.__stderr__:
        _install_stderr_filter()
