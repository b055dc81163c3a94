"""Loopback port helpers for local stacks, tests and benchmarks."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS has just handed out as free (racy by nature; fine on one machine)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # bind-all host -> loopback to dial


def is_wildcard(host: str) -> bool:
    return host in WILDCARDS


def client_target(host: str, port: int) -> str:
    """The gRPC target that reaches a server bound to ``host:port`` from this machine: a
    bind-all host (0.0.0.0, ::) is dialled on loopback, an IPv6 literal in brackets."""
    host = WILDCARDS.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
