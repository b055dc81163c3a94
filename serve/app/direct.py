"""Direct ingress for zkserve: the ingress replica itself serves gRPC on the configured port and
KServe v2 REST on the HTTP port, bound to the configured host only; no Ray proxy runs at all
(``proxy_location=Disabled``), so a request reaches the replica without a hop.

Why not Ray 2.60's own direct ingress (RAY_SERVE_ENABLE_DIRECT_INGRESS=1): its controller then
always starts a head-node proxy on the configured ports, whose gRPC server binds ``[::]``, and
the replica's own gRPC server binds ``[::]`` too, whatever host is configured. grpcio and uvicorn
here do the same job bound where the config says. Ray reads the knobs below from each process's
environment at import (``ray/serve/_private/constants.py``): the controller gets them through
``serve.start(controller_options=...)``, every replica through its ``runtime_env``.
"""

from __future__ import annotations

import ipaddress


def serve_env(max_message_bytes: int) -> dict[str, str]:
    """Environment for the controller and every replica of the app."""
    return {
        # Ray's direct ingress would also start a head-node proxy that binds every interface:
        # the ingress replica serves gRPC and REST itself instead (start_grpc_server below)
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
        # user code on the replica's own loop, no extra thread hop; handle calls as Ray actor calls
        # (Ray's gRPC-between-deployments server binds every interface)
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
        "RAY_SERVE_LOG_TO_STDERR": "0",
        # the request-path log is buffered, not flushed per request
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    }


def keep_replica_servers_local() -> None:
    """Each Ray Serve 2.60 replica starts an inter-deployment gRPC server on ``[::]:0`` after its
    ``__init__``; it carries traffic only with RAY_SERVE_USE_GRPC_BY_DEFAULT=1, which the app does
    not use, so bind it to loopback instead of every interface. Call from a deployment's __init__."""
    from ray.serve._private import replica

    if getattr(replica.add_port_to_grpc_server, "_zkserve_local", False):
        return
    original = replica.add_port_to_grpc_server

    def add_port_to_grpc_server(server, address: str):
        return original(server, address.replace("[::]", "127.0.0.1"))

    add_port_to_grpc_server._zkserve_local = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port_to_grpc_server


async def start_grpc_server(servicer, host: str, port: int, max_message_bytes: int, credentials=None,
                            reflection_on: bool = True):
    """The app's gRPC services in this (ingress) process, bound to ``host:port`` only.

    ``servicer`` implements inference.GRPCInferenceService, zkserve.v1.Attestation and
    grpc.health.v1.Health (method names are unique across the three); reflection lists them
    when ``reflection_on`` (the caller turns it off with authentication: the servicer's own
    guard does not see reflection calls). ``credentials``: TLS only, else plaintext.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection
    from inference import grpc_service_pb2, grpc_service_pb2_grpc
    from zkserve.v1 import attestation_pb2, attestation_pb2_grpc

    # the transport refuses absurd messages before allocating them; the ingress answers anything
    # over max_request_bytes (but under this) with a message naming the setting
    limit = max(4 * max_message_bytes, 1024 * 1024)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    attestation_pb2_grpc.add_AttestationServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if reflection_on:
        reflection.enable_server_reflection([
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            attestation_pb2.DESCRIPTOR.services_by_name["Attestation"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
    address = f"[{host}]:{port}" if _is_ipv6(host) else f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, credentials) if credentials is not None
                 else server.add_insecure_port(address))
    except RuntimeError:
        bound = 0
    if not bound:
        raise RuntimeError(f"cannot serve gRPC on {address} (zkserve.ingress.port; is another process using it?)")
    await server.start()
    return server


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


async def start_rest_server(handler, host: str, port: int, tls_cert_file: str | None = None,
                            tls_key_file: str | None = None):
    """KServe v2 REST in this (ingress) process: uvicorn on a socket bound to ``host:port``.

    On the same event loop as the gRPC methods. ``handler`` takes a starlette Request and
    returns a starlette Response. With a certificate and key the port speaks HTTPS only.
    Returns the uvicorn server (``should_exit`` stops it).
    """
    import asyncio
    import socket

    import uvicorn
    from starlette.requests import Request

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise RuntimeError(f"cannot serve REST on {host}:{port}: {error.strerror} "
                           f"(zkserve.ingress.http_port; is another process using it?)") from None
    sock.listen(1024)
    sock.setblocking(False)
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, timeout_keep_alive=75,
                            ssl_certfile=tls_cert_file, ssl_keyfile=tls_key_file)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # the replica owns signals
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    task.add_done_callback(lambda _: sock.close())
    server.zkserve_task = task  # keep a reference
    return server
