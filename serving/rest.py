"""TF Serving's REST API on a stdlib `ThreadingHTTPServer`.

Routes (as tensorflow_model_server's `--rest_api_port`):

- `GET  /v1/models/NAME[/versions/N | /labels/L]`            model status
- `GET  /v1/models/NAME[/versions/N | /labels/L]/metadata`   signature defs
- `POST /v1/models/NAME[/versions/N | /labels/L]:predict`    `{"signature_name": ...,
  "instances": [...]}` (row format, answered with `{"predictions": ...}`) or
  `{"inputs": ...}` (columnar, answered with `{"outputs": ...}`); binary inputs (an alias
  ending in `_bytes`, or a string input) as `{"b64": "..."}`.
- `:classify` / `:regress` answer 501 (UNIMPLEMENTED), as the gRPC server.

Errors are `{"error": "..."}` with TF Serving's HTTP code for the status.
"""
from __future__ import annotations

import base64
import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from serving.errors import ServingError, http_status

log = logging.getLogger("indep_seg.serving")

__all__ = ["make_rest_server"]

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<method>predict|classify|regress))?/?$")

_STATE = {"START": "START", "LOADING": "LOADING", "AVAILABLE": "AVAILABLE", "UNLOADING": "UNLOADING",
          "END": "END"}


def _bad(msg):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, msg)


def _decode_value(value, alias):
    """JSON value -> nested lists with {"b64": ...} replaced by bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except Exception:
                raise _bad(f"{alias}: 'b64' value is not valid base64") from None
        raise _bad(f"{alias}: expected a number, a list or {{\"b64\": ...}}, got an object with keys "
                   f"{sorted(value)}")
    if isinstance(value, list):
        return [_decode_value(v, alias) for v in value]
    return value


def _to_array(value, spec, alias):
    if spec.dtype != tf.string:
        # Fast path: plain nested lists of numbers go to NumPy in C, without a Python walk.
        try:
            arr = np.asarray(value, dtype=np.float64 if spec.dtype.is_floating else np.int64)
            return arr.astype(spec.dtype.as_numpy_dtype, copy=False)
        except (ValueError, TypeError):
            pass  # a {"b64": ...}, a ragged list or a non-number: the slow path names it
    value = _decode_value(value, alias)
    if spec.dtype == tf.string:
        try:
            arr = np.array(value, dtype=object)
        except Exception as e:
            raise _bad(f"{alias}: cannot make a string tensor ({e})") from None
        for x in arr.ravel():
            if not isinstance(x, (bytes, str)):
                raise _bad(f"{alias}: expected strings or {{\"b64\": ...}}, got {type(x).__name__}")
        return np.array([x if isinstance(x, bytes) else x.encode() for x in arr.ravel()],
                        dtype=object).reshape(arr.shape)
    try:
        arr = np.array(value, dtype=np.float64 if spec.dtype.is_floating else np.int64)
    except (ValueError, TypeError) as e:
        raise _bad(f"{alias}: expected a (rectangular) nested list of numbers: {e}") from None
    if spec.dtype.is_floating:
        return arr.astype(spec.dtype.as_numpy_dtype)
    if spec.dtype.is_integer:
        return arr.astype(spec.dtype.as_numpy_dtype)
    raise _bad(f"{alias}: dtype {spec.dtype.name} is not supported over REST")


def _rows_to_inputs(instances, sig):
    if not isinstance(instances, list) or not instances:
        raise _bad("'instances' must be a non-empty list")
    aliases = sorted(sig.inputs)
    if all(isinstance(i, dict) and not (set(i) == {"b64"}) for i in instances):
        columns = {}
        for n, inst in enumerate(instances):
            if set(inst) != set(aliases):
                raise _bad(f"instances[{n}]: expected the keys {{{','.join(aliases)}}}, got "
                           f"{{{','.join(sorted(inst))}}}")
            for k, v in inst.items():
                columns.setdefault(k, []).append(v)
        return {k: _to_array(v, sig.inputs[k], k) for k, v in columns.items()}
    if len(aliases) != 1:
        raise _bad(f"instances: the signature has several inputs {{{','.join(aliases)}}}; send each "
                   "instance as an object with one key per input")
    return {aliases[0]: _to_array(instances, sig.inputs[aliases[0]], aliases[0])}


def _columns_to_inputs(inputs, sig):
    aliases = sorted(sig.inputs)
    if isinstance(inputs, dict) and not set(inputs) == {"b64"}:
        return {k: _to_array(v, sig.inputs[k], k) if k in sig.inputs else np.asarray(0)
                for k, v in inputs.items()}
    if len(aliases) != 1:
        raise _bad(f"inputs: the signature has several inputs {{{','.join(aliases)}}}; send an object "
                   "with one key per input")
    return {aliases[0]: _to_array(inputs, sig.inputs[aliases[0]], aliases[0])}


def _json_value(arr):
    if arr.dtype.kind in ("S", "O"):
        return [{"b64": base64.b64encode(x).decode()} for x in arr.ravel()]
    return arr.tolist()


class _Handler(BaseHTTPRequestHandler):
    core = None  # set by make_rest_server
    max_body = 0
    protocol_version = "HTTP/1.1"
    server_version = "indep-seg-model-server"
    # Headers and body leave in one buffered write (flushed after each request) and Nagle is
    # off: otherwise a small answer waits for the client's delayed ACK (~40 ms).
    wbufsize = 1 << 16

    def setup(self):
        super().setup()
        import socket

        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover
            pass

    def log_message(self, fmt, *args):  # quiet: one debug line per request
        log.debug("REST %s", fmt % args)

    def _send(self, status: int, payload: dict):
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, e: ServingError):
        self._send(http_status(e.code), {"error": e.message})

    def _route(self):
        path = self.path.split("?", 1)[0]
        m = _PATH.match(path)
        if m is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.command} {path}")
        version = int(m.group("version")) if m.group("version") else None
        return m, m.group("name"), version, m.group("label")

    def do_GET(self):
        try:
            m, name, version, label = self._route()
            if m.group("method"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Malformed request: GET {self.path} (use POST for :{m.group('method')})")
            if m.group("metadata"):
                servable = self.core.manager.get(name, version, label)
                sdm = self.core.signature_def_map(servable)
                self._send(200, {
                    "model_spec": {"name": servable.name, "signature_name": "",
                                   "version": str(servable.version)},
                    "metadata": {"signature_def": json_format.MessageToDict(
                        sdm, preserving_proto_field_name=True)}})
                return
            if label:
                version = self.core.manager.get(name, None, label).version
            states = self.core.manager.status(name, version)
            self._send(200, {"model_version_status": [
                {"version": str(s.version), "state": _STATE[s.state],
                 "status": {"error_code": grpc.StatusCode.OK.name if s.error_code == 0 else "INTERNAL",
                            "error_message": s.error_message}} for s in states]})
        except ServingError as e:
            self._error(e)
        except Exception as e:  # pragma: no cover
            log.warning("REST GET %s: %s: %s", self.path, type(e).__name__, e)
            self._error(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))

    def do_POST(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > self.max_body:
                self.close_connection = True
                if length <= 16 * self.max_body:  # drain, so the client can read the answer
                    left = length
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        left -= len(chunk)
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"request body of {length} bytes exceeds the limit of {self.max_body} bytes "
                                   "(--grpc_max_message_size)")
            body = self.rfile.read(length) if length else b""
            m, name, version, label = self._route()
            method = m.group("method")
            if method is None or m.group("metadata"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: POST {self.path}")
            if method in ("classify", "regress"):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{method} is not supported by this server: the served models are image -> "
                                   "mask segmenters; use :predict")
            try:
                doc = json.loads(body or b"null")
            except ValueError as e:
                raise _bad(f"JSON Parse error: {e}") from None
            if not isinstance(doc, dict):
                raise _bad("JSON Value: request body must be a JSON object")
            sig_name = doc.get("signature_name", "")
            if not isinstance(sig_name, str):
                raise _bad("'signature_name' must be a string")
            servable, sig = self.core.resolve(name, version, label, sig_name)
            if "instances" in doc and "inputs" in doc:
                raise _bad("Not both of 'instances' or 'inputs' keys may be present in the request")
            if "instances" in doc:
                inputs, row = _rows_to_inputs(doc["instances"], sig), True
            elif "inputs" in doc:
                inputs, row = _columns_to_inputs(doc["inputs"], sig), False
            else:
                raise _bad("Missing 'inputs' or 'instances' key")
            outputs = self.core.predict(servable, sig, inputs)
            keys = sorted(outputs)
            if row:
                if len(keys) == 1:
                    preds = _json_value(outputs[keys[0]])
                else:
                    n = len(next(iter(outputs.values())))
                    preds = [{k: _json_value(outputs[k][i:i + 1])[0] for k in keys} for i in range(n)]
                self._send(200, {"predictions": preds})
            else:
                out = _json_value(outputs[keys[0]]) if len(keys) == 1 else {
                    k: _json_value(v) for k, v in outputs.items()}
                self._send(200, {"outputs": out})
        except ServingError as e:
            self._error(e)
        except Exception as e:  # pragma: no cover
            log.warning("REST POST %s: %s: %s", self.path, type(e).__name__, e)
            self._error(ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))


def make_rest_server(core, host: str, port: int, max_body: int) -> ThreadingHTTPServer:
    handler = type("RestHandler", (_Handler,), {"core": core, "max_body": int(max_body)})
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    return server
