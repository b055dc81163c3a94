"""Ray Serve direct ingress, configured for zkserve: the ingress replica itself serves gRPC on the
configured port and REST on the HTTP port, bound to the configured host, with no proxy hop.

Ray 2.60 reads these knobs from the environment of each process at import
(``ray/serve/_private/constants.py``): the controller (port allocation) gets them through
``serve.start(controller_options=...)``, every replica through its ``runtime_env``.
"""

from __future__ import annotations

import ipaddress


def serve_env(grpc_port: int, http_port: int, max_message_bytes: int) -> dict[str, str]:
    """Environment for the controller and every replica of the app."""
    return {
        # direct ingress, gRPC between deployments, user code on the replica's main loop
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        # a range of one port each: the ingress replica listens where the config says
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_port),
        # no external load balancer to drain for: stop at once, and let a replacement replica
        # take the same port at once (Ray's defaults wait 30 s and quarantine the port 150 s)
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        # the transport refuses absurd messages before allocating them; the ingress answers
        # anything over max_request_bytes with a message naming the setting
        "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(max(4 * max_message_bytes, 1024 * 1024)),
        "RAY_SERVE_LOG_TO_STDERR": "0",
    }


def bind_grpc_to(host: str) -> None:
    """Ray's direct-ingress gRPC server binds ``[::]:port`` whatever the configured host; in the
    ingress replica (before Ray starts that server, which happens after the replica's
    ``__init__``) make it bind the configured host instead."""
    from ray.serve._private import default_impl

    if getattr(default_impl.add_grpc_address, "_zkserve_host", None) == host:
        return
    original = default_impl.add_grpc_address
    address_host = f"[{host}]" if _is_ipv6(host) else host

    def add_grpc_address(server, server_address: str):
        port = server_address.rsplit(":", 1)[1]
        return original(server, f"{address_host}:{port}")

    add_grpc_address._zkserve_host = host  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
