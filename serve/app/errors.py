"""Request errors that become a gRPC status with a message a person can act on."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid

import grpc

logger = logging.getLogger("ray.serve")


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, message)


def too_large(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.UNAVAILABLE, message)


def _report(grpc_context, error: BaseException, method: str) -> None:
    if isinstance(error, RequestError):
        grpc_context.set_code(error.code)
        grpc_context.set_details(error.message)
        return
    # Anything else is our bug: log it in full, tell the client only an id to quote,
    # never a stack trace or a path (Ray would send both if the exception escaped).
    incident = uuid.uuid4().hex[:12]
    logger.exception("%s failed (incident %s)", method, incident)
    grpc_context.set_code(grpc.StatusCode.INTERNAL)
    grpc_context.set_details(f"internal error in {method} (incident {incident}; see the server log)")


def grpc_method(response_type):
    """Wraps a unary or server-streaming gRPC method of a Ray Serve deployment so that no
    exception escapes: errors set the status through ``grpc_context`` instead."""

    def decorate(method):
        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def streaming(self, request, grpc_context):
                try:
                    async for message in method(self, request, grpc_context):
                        yield message
                except Exception as error:  # noqa: BLE001 - turned into a status
                    _report(grpc_context, error, method.__name__)
                    # Ray's proxy applies grpc_context only along with a yielded message, so
                    # the client sees one empty message, then this status.
                    yield response_type()

            return streaming

        @functools.wraps(method)
        async def unary(self, request, grpc_context):
            try:
                return await method(self, request, grpc_context)
            except Exception as error:  # noqa: BLE001 - turned into a status
                _report(grpc_context, error, method.__name__)
                return response_type()

        return unary

    return decorate
