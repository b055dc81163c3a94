"""Who can reach a listening port: binding beyond loopback needs authentication, or an
explicit opt-out by the operator."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

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


# Ray reads this once, when `ray` is imported: false makes a local cluster's node address
# 127.0.0.1 (ray._private.services.get_node_ip_address), and Ray's GCS, raylet, object manager,
# dashboard and runtime-env agents and every worker's core-worker server then bind loopback
# instead of every interface. A passed `_node_ip_address="127.0.0.1"` does not do it: ray.init
# swaps a loopback address for the node's outward one. Such a cluster takes no other nodes,
# which a local `up` has none of; `up` on $RAY_ADDRESS joins that cluster as it is.
RAY_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> None:
    """Before ``ray.init``: the local Ray cluster `up` starts listens on 127.0.0.1 only."""
    os.environ[RAY_LOCAL_ONLY_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # `ray` imported already (a caller in the same process): too late for the variable
        constants.ENABLE_RAY_CLUSTER = False
