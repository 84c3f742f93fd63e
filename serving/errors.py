"""TF Serving's error model: a gRPC status code with a message, and its HTTP mapping.

Messages follow tensorflow_serving (server_core.cc, predict_util.cc,
get_model_status_impl.cc); the HTTP codes are those of its REST server
(http_server.cc `ToHTTPStatusCode`).
"""
from __future__ import annotations

import grpc

__all__ = ["ServingError", "http_status", "not_found_latest", "not_found_specific"]


class ServingError(Exception):
    """An error answered to a client: `code` is a `grpc.StatusCode`, `message` its text."""

    def __init__(self, code: grpc.StatusCode, message: str):
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


def not_found_latest(name: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")


def not_found_specific(name: str, version: int) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Specific({name}, {version})")
