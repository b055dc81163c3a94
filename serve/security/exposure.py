"""Who can reach a listening port: binding beyond loopback needs authentication, or an
explicit opt-out by the operator."""

from __future__ import annotations

import ipaddress
import socket

INSECURE_FLAG = "--insecure-no-auth"


class InsecureBind(ValueError):
    pass


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def require_safe_bind(host: str, auth_enabled: bool, insecure_no_auth: bool, auth_setting: str, what: str) -> None:
    """Refuses to expose ``what`` on a non-loopback ``host`` without authentication."""
    if auth_enabled or insecure_no_auth or is_loopback(host):
        return
    raise InsecureBind(
        f"{what} would listen on {host}, beyond loopback, with no authentication: anyone who can reach it could "
        f"use it. Set {auth_setting}: true (and create keys with `zkserve keys create`), or pass {INSECURE_FLAG} "
        f"to run it open on purpose")
