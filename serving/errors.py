"""TF Serving's error model: a gRPC status code with a message, and its HTTP mapping.

Messages follow tensorflow_serving (server_core.cc, predict_util.cc,
get_model_status_impl.cc); the HTTP codes are those of its REST server
(http_server.cc `ToHTTPStatusCode`).
"""

from __future__ import annotations

import grpc

__all__ = [
    "ServingError",
    "http_status",
    "not_found_latest",
    "not_found_specific",
    "invalid_argument",
    "clip",
    "MAX_NAME_CHARS",
    "MAX_MESSAGE_CHARS",
]

#: Longest client-given name (model, signature, label, alias) echoed into an error message.
MAX_NAME_CHARS = 256
#: Longest error message sent back: a 16 KiB name echoed into a gRPC status exceeded gRPC's
#: metadata limit, and the client saw RESOURCE_EXHAUSTED instead of the real error (issue 23).
MAX_MESSAGE_CHARS = 4096


def clip(name, limit: int = MAX_NAME_CHARS) -> str:
    """`name` as echoed in an error message: at most `limit` characters, then how long it was."""
    name = str(name)
    if len(name) <= limit:
        return name
    return f"{name[:limit]}... ({len(name)} characters)"


class ServingError(Exception):
    """An error answered to a client: `code` is a `grpc.StatusCode`, `message` its text
    (bounded to `MAX_MESSAGE_CHARS`)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self):
        return f"ServingError({self.code.name}, {self.message!r})"


_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST API answers for a gRPC status code."""
    return _HTTP.get(code, 500)


def invalid_argument(message: str) -> ServingError:
    """An INVALID_ARGUMENT error (HTTP 400) with `message`."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found_latest(name: str) -> ServingError:
    return ServingError(
        grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({clip(name)})"
    )


def not_found_specific(name: str, version: int) -> ServingError:
    return ServingError(
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({clip(name)}, {version})",
    )
