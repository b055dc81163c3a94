"""Domain errors, and the one table that turns them into gRPC and HTTP status codes.

Every surface (the ingress's gRPC and REST adapters, the verifier service, the CLI) raises
these and nothing else for a failure the caller can act on; the adapters map them with
``grpc_code`` / ``http_status``. Anything that is not a ``ServeError`` is our bug: it is
logged with an incident id and the caller gets INTERNAL / 500 and that id, never a trace,
a path or a key.
"""

from __future__ import annotations

import grpc


class ServeError(Exception):
    """A failure the caller can act on; ``message`` says what to do."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http: int | None = None  # set where HTTP is finer than the gRPC code (413 vs 429)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ServeError):
    """The request is malformed: shape, dtype, names, NaN, an unknown parameter value."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class OutOfRange(ServeError):
    """A value lies outside the domain the circuit is proven accurate on."""

    code = grpc.StatusCode.OUT_OF_RANGE


class NotFound(ServeError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServeError):
    """The request is well formed but the system is not in a state to do it (e.g. an
    unregistered model on chain)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServeError):
    """A size limit, a quota or a queue bound was hit; retry later or send less."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PayloadTooLarge(ResourceExhausted):
    """One request over a size bound (HTTP 413, where a quota is 429)."""

    http = 413


class Unauthenticated(ServeError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(ServeError):
    """A dependency (a replica, the verifier, the chain node) cannot be reached now."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


# gRPC code -> HTTP status, as in the Open Inference Protocol's REST mapping (and
# google.rpc's HTTP mapping for the codes it leaves open).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
}


def grpc_code(error: BaseException) -> grpc.StatusCode:
    """The status a caller sees for ``error``; INTERNAL for anything that is not ours."""
    return error.code if isinstance(error, ServeError) else grpc.StatusCode.INTERNAL


def http_status(error: BaseException) -> int:
    if isinstance(error, ServeError) and error.http is not None:
        return error.http
    return HTTP_STATUS.get(grpc_code(error), 500)


def code_name(error: BaseException | None) -> str:
    """The label metrics use: the real code (``OK`` when there was no error)."""
    return "OK" if error is None else grpc_code(error).name
