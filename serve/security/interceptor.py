"""The guard and the server's resource bounds as one grpcio server interceptor.

For every RPC but the open ones (health), before any servicer code runs: authenticate,
check the method's right, charge the key's quota; then bound concurrency (unary RPCs and
streams each have their own cap, so slow streams never starve health or Verify).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from serve.errors import ResourceExhausted, ServeError
from serve.security.guard import Guard, is_open


class RpcLimits:
    """Caps on RPCs in flight; a call past a cap is refused at once (RESOURCE_EXHAUSTED)."""

    def __init__(self, max_unary: int, max_streams: int, setting_prefix: str = "verifier"):
        self.max_unary, self.max_streams = int(max_unary), int(max_streams)
        self._unary = threading.BoundedSemaphore(self.max_unary)
        self._streams = threading.BoundedSemaphore(self.max_streams)
        self._prefix = setting_prefix

    @property
    def threads(self) -> int:
        """Worker threads the server needs: every admitted RPC, plus a few for health."""
        return self.max_unary + self.max_streams + 4

    def acquire(self, streaming: bool) -> Callable[[], None]:
        semaphore, limit, setting = ((self._streams, self.max_streams, "max_streams") if streaming
                                     else (self._unary, self.max_unary, "max_concurrent_rpcs"))
        if not semaphore.acquire(blocking=False):
            kind = "streams" if streaming else "RPCs"
            raise ResourceExhausted(f"the server has {limit} {kind} in flight, its limit "
                                    f"({self._prefix}.{setting}); retry shortly")
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                semaphore.release()
        return release


def _abort(context: grpc.ServicerContext, error: ServeError):
    context.abort(error.code, error.message)


def _refusal(handler: grpc.RpcMethodHandler, error: ServeError) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only answers ``error``."""
    def refuse(request_or_iterator, context):
        _abort(context, error)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class GuardInterceptor(grpc.ServerInterceptor):
    def __init__(self, guard: Guard, limits: RpcLimits | None = None,
                 on_refused: Callable[[str, str], None] | None = None):
        self.guard = guard
        self.limits = limits
        self.on_refused = on_refused  # (method, code name): lets the service count refusals

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        metadata = {key.lower(): value for key, value in (handler_call_details.invocation_metadata or ())
                    if isinstance(value, str)}
        try:
            principal = self.guard.authenticate(metadata, method)
            self.guard.admit(principal, method.rsplit("/", 1)[-1])
        except ServeError as error:
            if self.on_refused:
                self.on_refused(method, error.code.name)
            return _refusal(handler, error)
        return self._wrap(handler, principal, method)

    def _wrap(self, handler: grpc.RpcMethodHandler, principal, method: str) -> grpc.RpcMethodHandler:
        guard, limits, on_refused = self.guard, self.limits, self.on_refused

        def admitted(streaming: bool, context) -> Callable[[], None]:
            if limits is None:
                return lambda: None
            try:
                release = limits.acquire(streaming)
            except ServeError as error:
                if on_refused:
                    on_refused(method, error.code.name)
                _abort(context, error)
            context.add_callback(release)  # a cancelled stream frees its slot too
            return release

        if handler.unary_unary:
            behavior = handler.unary_unary

            def unary_unary(request, context):
                release = admitted(False, context)
                token = guard.scope(principal)
                try:
                    return behavior(request, context)
                finally:
                    guard.unscope(token)
                    release()
            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.unary_stream:
            behavior = handler.unary_stream

            def unary_stream(request, context):
                release = admitted(True, context)
                try:
                    # the principal is bound while the servicer builds its generator and each step
                    iterator = _scoped(guard, principal, lambda: behavior(request, context))
                    while True:
                        try:
                            item = _scoped(guard, principal, lambda: next(iterator))
                        except StopIteration:
                            return
                        yield item
                finally:
                    release()
            return grpc.unary_stream_rpc_method_handler(unary_stream, handler.request_deserializer,
                                                        handler.response_serializer)
        return handler  # client-streaming methods: none in our services; authenticated above


def _scoped(guard: Guard, principal, call):
    token = guard.scope(principal)
    try:
        return call()
    finally:
        guard.unscope(token)
