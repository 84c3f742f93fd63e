"""TF Serving's REST API over HTTP/1.1 framed by h11 (a strict RFC 9112 parser), one thread
per connection.

Routes (as tensorflow_model_server's `--rest_api_port`):

- `GET  /v1/models/NAME[/versions/N | /labels/L]`            model status
- `GET  /v1/models/NAME[/versions/N | /labels/L]/metadata`   signature defs
- `POST /v1/models/NAME[/versions/N | /labels/L]:predict`    `{"signature_name": ...,
  "instances": [...]}` (row format, answered with `{"predictions": ...}`) or
  `{"inputs": ...}` (columnar, answered with `{"outputs": ...}`); binary inputs (an alias
  ending in `_bytes`, or a string input) as `{"b64": "..."}`.
- `:classify` / `:regress` answer 501 (UNIMPLEMENTED), as the gRPC server.

Errors are `{"error": "..."}` with TF Serving's HTTP code for the status.

Framing is strict, so that nothing a client sends can be read as a second request by this
server while a proxy in front of it reads it as one (request smuggling): a request body is
framed by `Content-Length` (digits only, one value) or `Transfer-Encoding: chunked` (h11 parses
both, and refuses anything else in the request line and headers with 400); a POST with neither
gets 411, a request with both gets 400, a GET with a body gets 400, and after any error answer
(4xx / 5xx) the connection is closed, so unread bytes are never parsed as a request. Client
mistakes in the JSON (a bad number, an integer of hundreds of digits, nesting thousands deep)
get 400, never 500.

Slow clients: a request (head and body) must arrive within `read_timeout` seconds once its first
byte has, else 408 and the connection is closed (slowloris); a keep-alive connection waits
`idle_timeout` seconds for the next request; at most `max_connections` connections are open,
more are answered 503 and closed at once.
"""

from __future__ import annotations

import base64
import http
import json
import logging
import re
import socket
import socketserver
import threading
import time

import grpc
import h11
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from indep_seg.serving.errors import ServingError, clip, http_status, invalid_argument

log = logging.getLogger("indep_seg.serving")

__all__ = ["make_rest_server"]

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<method>predict|classify|regress))?/?$"
)

_STATE = {
    "START": "START",
    "LOADING": "LOADING",
    "AVAILABLE": "AVAILABLE",
    "UNLOADING": "UNLOADING",
    "END": "END",
}


def _decode_value(value, alias):
    """JSON value -> nested lists with {"b64": ...} replaced by bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except Exception:
                raise invalid_argument(f"{alias}: 'b64' value is not valid base64") from None
        raise invalid_argument(
            f'{alias}: expected a number, a list or {{"b64": ...}}, got an object with keys '
            f"{sorted(value)}"
        )
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
            raise invalid_argument(f"{alias}: cannot make a string tensor ({e})") from None
        for x in arr.ravel():
            if not isinstance(x, (bytes, str)):
                raise invalid_argument(
                    f'{alias}: expected strings or {{"b64": ...}}, got {type(x).__name__}'
                )
        return np.array(
            [x if isinstance(x, bytes) else x.encode() for x in arr.ravel()], dtype=object
        ).reshape(arr.shape)
    try:
        arr = np.array(value, dtype=np.float64 if spec.dtype.is_floating else np.int64)
    except (ValueError, TypeError) as e:
        raise invalid_argument(
            f"{alias}: expected a (rectangular) nested list of numbers: {e}"
        ) from None
    if spec.dtype.is_floating:
        return arr.astype(spec.dtype.as_numpy_dtype)
    if spec.dtype.is_integer:
        return arr.astype(spec.dtype.as_numpy_dtype)
    raise invalid_argument(f"{alias}: dtype {spec.dtype.name} is not supported over REST")


def _rows_to_inputs(instances, sig):
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty list")
    aliases = sorted(sig.inputs)
    if all(isinstance(i, dict) and not (set(i) == {"b64"}) for i in instances):
        columns = {}
        for n, inst in enumerate(instances):
            if set(inst) != set(aliases):
                raise invalid_argument(
                    f"instances[{n}]: expected the keys {{{','.join(aliases)}}}, got "
                    f"{{{','.join(sorted(inst))}}}"
                )
            for k, v in inst.items():
                columns.setdefault(k, []).append(v)
        return {k: _to_array(v, sig.inputs[k], k) for k, v in columns.items()}
    if len(aliases) != 1:
        raise invalid_argument(
            f"instances: the signature has several inputs {{{','.join(aliases)}}}; send each "
            "instance as an object with one key per input"
        )
    return {aliases[0]: _to_array(instances, sig.inputs[aliases[0]], aliases[0])}


def _columns_to_inputs(inputs, sig):
    aliases = sorted(sig.inputs)
    if isinstance(inputs, dict) and not set(inputs) == {"b64"}:
        return {
            k: _to_array(v, sig.inputs[k], k) if k in sig.inputs else np.asarray(0)
            for k, v in inputs.items()
        }
    if len(aliases) != 1:
        raise invalid_argument(
            f"inputs: the signature has several inputs {{{','.join(aliases)}}}; send an object "
            "with one key per input"
        )
    return {aliases[0]: _to_array(inputs, sig.inputs[aliases[0]], aliases[0])}


def _json_value(arr):
    if arr.dtype.kind in ("S", "O"):
        return [{"b64": base64.b64encode(x).decode()} for x in arr.ravel()]
    return arr.tolist()


def _route(method, target):
    path = target.split("?", 1)[0]
    m = _PATH.match(path)
    if m is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {clip(path)}")
    digits = m.group("version")
    if digits and len(digits.lstrip("0")) > 19:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: version {clip(digits, 32)}"
        )
    version = int(digits) if digits else None
    return m, m.group("name"), version, m.group("label")


def handle_get(core, target):
    m, name, version, label = _route("GET", target)
    if m.group("method"):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Malformed request: GET {clip(target)} (use POST for :{m.group('method')})",
        )
    if m.group("metadata"):
        servable = core.manager.get(name, version, label)
        sdm = core.signature_def_map(servable)
        return 200, {
            "model_spec": {
                "name": servable.name,
                "signature_name": "",
                "version": str(servable.version),
            },
            "metadata": {
                "signature_def": json_format.MessageToDict(sdm, preserving_proto_field_name=True)
            },
        }
    if label:
        version = core.manager.get(name, None, label).version
    states = core.manager.status(name, version)
    return 200, {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": _STATE[s.state],
                "status": {
                    "error_code": grpc.StatusCode.OK.name if s.error_code == 0 else "INTERNAL",
                    "error_message": s.error_message,
                },
            }
            for s in states
        ]
    }


def _parse_json(body):
    try:
        doc = json.loads(body or b"null")
    except RecursionError:
        raise invalid_argument("JSON Parse error: nested too deeply") from None
    except ValueError as e:  # also integers of more than 4300 digits
        raise invalid_argument(f"JSON Parse error: {clip(str(e))}") from None
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Value: request body must be a JSON object")
    return doc


def _inputs(doc, sig):
    """The request's tensors -> (inputs, row format?); every failure is the client's: 400."""
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument(
            "Not both of 'instances' or 'inputs' keys may be present in the request"
        )
    try:
        if "instances" in doc:
            return _rows_to_inputs(doc["instances"], sig), True
        if "inputs" in doc:
            return _columns_to_inputs(doc["inputs"], sig), False
    except ServingError:
        raise
    except RecursionError:
        raise invalid_argument("JSON Value: nested too deeply") from None
    except Exception as e:  # a number NumPy cannot hold (OverflowError), a ragged list...
        raise invalid_argument(f"JSON Value: {type(e).__name__}: {clip(str(e))}") from None
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def handle_post(core, target, body):
    m, name, version, label = _route("POST", target)
    method = m.group("method")
    if method is None or m.group("metadata"):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: POST {clip(target)}"
        )
    if method in ("classify", "regress"):
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method} is not supported by this server: the served models are image -> "
            "mask segmenters; use :predict",
        )
    doc = _parse_json(body)
    sig_name = doc.get("signature_name", "")
    if not isinstance(sig_name, str):
        raise invalid_argument("'signature_name' must be a string")
    servable, sig = core.resolve(name, version, label, sig_name)
    inputs, row = _inputs(doc, sig)
    outputs = core.predict(servable, sig, inputs)
    keys = sorted(outputs)
    if row:
        if len(keys) == 1:
            preds = _json_value(outputs[keys[0]])
        else:
            n = len(next(iter(outputs.values())))
            preds = [{k: _json_value(outputs[k][i : i + 1])[0] for k in keys} for i in range(n)]
        return 200, {"predictions": preds}
    out = (
        _json_value(outputs[keys[0]])
        if len(keys) == 1
        else {k: _json_value(v) for k, v in outputs.items()}
    )
    return 200, {"outputs": out}


class _Timeout(Exception):
    pass


class _Reject(Exception):
    """A framing error: answered with `status` and the connection closed."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _reason(status):
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _raw_response(status, payload, extra_headers=()):
    """A complete HTTP/1.1 response that closes the connection (for when h11's state machine
    has given up on the connection)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} ".encode() + _reason(status),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
    ]
    head += [f"{k}: {v}".encode() for k, v in extra_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Connection:
    """One client connection: requests read with h11, answered one at a time."""

    def __init__(self, server: "RestServer", sock: socket.socket):
        self.server = server
        self.sock = sock
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=server.max_head)

    def run(self):
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover
            pass
        while True:
            close = True
            try:
                req = self._read_head()
                if req is None:
                    return
                status, payload, close = self._serve(req)
            except _Timeout:
                if self._started:
                    self._send_raw(
                        408,
                        {"error": f"request not received within {self.server.read_timeout:g} s"},
                    )
                return
            except _Reject as e:
                self._send_raw(e.status, {"error": e.message})
                return
            except h11.RemoteProtocolError as e:
                self._send_raw(e.error_status_hint, {"error": f"Malformed request: {clip(str(e))}"})
                return
            except OSError:
                return
            if not self._send(status, payload, close) or close:
                return
            if self.conn.our_state is h11.MUST_CLOSE:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    # ------------------------------------------------------------------ reading
    def _next_event(self):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            now = time.monotonic()
            deadline = self._request_deadline if self._started else self._idle_deadline
            if now >= deadline:
                raise _Timeout()
            self.sock.settimeout(deadline - now)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise _Timeout() from None
            except OSError:
                data = b""
            if data and not self._started:
                self._started = True
                self._request_deadline = time.monotonic() + self.server.read_timeout
            self.conn.receive_data(data)

    def _read_head(self):
        now = time.monotonic()
        self._started = bool(self.conn.trailing_data[0])
        self._idle_deadline = now + self.server.idle_timeout
        self._request_deadline = now + self.server.read_timeout
        event = self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields a Request first
            raise _Reject(400, "Malformed request")
        return event

    def _read_body(self, limit):
        chunks, size = [], 0
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _Reject(
                        429,
                        f"request body exceeds the limit of {limit} bytes "
                        "(--grpc_max_message_size)",
                    )
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise _Reject(400, "connection closed before the end of the request body")

    def _drain(self, length):
        """Reads up to `length` body bytes (bounded by the read deadline), so that a client that
        sent an oversize body can read the answer."""
        left = length
        while left > 0:
            event = self._next_event()
            if isinstance(event, h11.Data):
                left -= len(event.data)
            else:
                return

    # ------------------------------------------------------------------ serving
    def _serve(self, req):
        method = req.method.decode("ascii", "replace")
        target = req.target.decode("ascii", "replace")
        names = [k for k, _ in req.headers]
        te = b"transfer-encoding" in names
        cl_values = [v for k, v in req.headers if k == b"content-length"]
        length = int(cl_values[0]) if cl_values else None
        if te and length is not None:
            raise _Reject(
                400, "Malformed request: both Content-Length and Transfer-Encoding are present"
            )
        if method not in ("GET", "POST"):
            raise _Reject(
                405, f"Malformed request: method {clip(method, 32)} is not supported (GET or POST)"
            )
        if method == "GET":
            if te or (length or 0) > 0:
                raise _Reject(400, "Malformed request: a GET request has no body")
            self._read_body(0)  # h11's EndOfMessage, so that the next request can follow
            return self._answer("GET", target, handle_get, self.server.core, target)
        if not te and length is None:
            raise _Reject(
                411, "Malformed request: a POST needs Content-Length or Transfer-Encoding: chunked"
            )
        limit = self.server.max_body
        if length is not None and length > limit:
            if length <= 16 * limit:
                try:
                    self._drain(length)
                except (_Timeout, h11.RemoteProtocolError, OSError):
                    pass
            raise _Reject(
                429,
                f"request body of {length} bytes exceeds the limit of {limit} bytes "
                "(--grpc_max_message_size)",
            )
        if self.conn.they_are_waiting_for_100_continue:
            self._write(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        body = self._read_body(limit)
        return self._answer("POST", target, handle_post, self.server.core, target, body)

    @staticmethod
    def _answer(method, target, handler, *args):
        """`(status, payload, close)` of a handler: TF Serving's error body for its errors."""
        try:
            status, payload = handler(*args)
        except ServingError as e:
            status, payload = http_status(e.code), {"error": e.message}
        except Exception as e:  # pragma: no cover - a server fault
            log.warning("REST %s %s: %s: %s", method, clip(target), type(e).__name__, e)
            status, payload = 500, {"error": f"{type(e).__name__}: {clip(str(e))}"}
        return status, payload, status >= 400

    # ------------------------------------------------------------------ writing
    def _write(self, data):
        self.sock.settimeout(self.server.read_timeout)
        self.sock.sendall(data)

    def _send(self, status, payload, close) -> bool:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        try:
            data = self.conn.send(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            )
            data += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
            self._write(data)
            return True
        except (h11.LocalProtocolError, OSError):
            return False

    def _send_raw(self, status, payload):
        extra = [("Allow", "GET, POST")] if status == 405 else []
        try:
            self._write(_raw_response(status, payload, extra))
        except OSError:
            pass


class RestServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """TF Serving's REST API: `serve_forever()`, `shutdown()`, `server_close()`,
    `server_address` as a stdlib server."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    max_head = 64 * 1024  # request line and headers

    def __init__(
        self,
        core,
        host: str,
        port: int,
        max_body: int,
        read_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        max_connections: int = 64,
    ):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.core = core
        self.max_body = int(max_body)
        self.read_timeout = float(read_timeout)
        self.idle_timeout = float(idle_timeout)
        self.max_connections = int(max_connections)
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__((host, int(port)), None)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(
                    _raw_response(
                        503, {"error": f"too many connections (at most {self.max_connections})"}
                    )
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # pragma: no cover - e.g. no thread could be started
            self._slots.release()
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request, client_address):
        _Connection(self, request).run()


def make_rest_server(core, host: str, port: int, max_body: int, **options) -> RestServer:
    return RestServer(core, host, port, max_body, **options)
