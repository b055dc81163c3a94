"""Process lifecycle of a local stack: ports checked before start, children that die with
their parent, and quiet logs.

- ``check_ports_free`` fails at once, naming the port, the setting and (when it can be
  found) the process holding it: zkserve never adopts a service someone else started.
- ``die_with_parent`` (``preexec_fn``) asks Linux to signal a child when its parent dies,
  even by SIGKILL; ``watch_parent`` is the same from inside the child (a polling thread), for
  children that are our own Python code.
- ``route_logs`` keeps EZKL's and Ray's chatter off the terminal, in files under the state
  directory's ``logs/``, unless ``--verbose``.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class PortClaim:
    """A port a command is about to listen on, and the setting that chose it."""

    setting: str  # e.g. "verifier.port"
    host: str
    port: int


class PortInUse(OSError):
    pass


def _holder(port: int) -> str:
    """'pid 123 (anvil --port 8545 ...)' for the process listening on ``port``, when visible."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                process = psutil.Process(conn.pid)
                command = " ".join(process.cmdline()).strip()[:120] or process.name()
                return f"pid {conn.pid} ({command})"
    except Exception:  # noqa: BLE001 - naming the holder is a courtesy; the port is in use either way
        pass
    return "another process"


def port_free(host: str, port: int) -> bool:
    """True when a listener could bind ``host:port`` now (SO_REUSEADDR: TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports_free(claims: Iterable[PortClaim]) -> None:
    """Raises ``PortInUse`` for the first claimed port something already listens on."""
    seen: dict[int, str] = {}
    for claim in claims:
        if claim.port in seen:
            raise PortInUse(f"{claim.setting} and {seen[claim.port]} are both port {claim.port}; give each its own")
        seen[claim.port] = claim.setting
        if not port_free(claim.host, claim.port):
            raise PortInUse(f"port {claim.port} ({claim.setting}) on {claim.host} is already in use by "
                            f"{_holder(claim.port)}; stop it or set another {claim.setting}")


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the kernel send ``signum`` to the child when the thread that
    started it exits (for our callers: the main thread, so the process). Linux only; elsewhere
    a no-op."""
    parent = os.getpid()

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signum)

    return preexec


def watch_parent(parent_pid: int, on_orphan: Callable[[], None], interval_s: float = 0.25) -> threading.Thread:
    """A daemon thread calling ``on_orphan()`` once ``parent_pid`` is no longer our parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        log.warning("parent process %d is gone; stopping", parent_pid)
        on_orphan()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def route_logs(logs_dir: Path, verbose: bool) -> None:
    """Verbose: INFO to the terminal. Otherwise nothing below WARNING anywhere, and EZKL's
    reports (e.g. its numerical fidelity tables) go to ``logs/ezkl.log``."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    if verbose:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        return
    # Ray Serve re-creates its driver logger at INFO on every serve.start/run, so a level on
    # the logger does not stick; logging.disable does.
    logging.disable(logging.INFO)
    _to_file(logging.getLogger("ezkl"), logs_dir / "ezkl.log")


def quiet_ray(logs_dir: Path) -> None:
    """After ``import ray``, before ``ray.init``: Ray's driver-side warnings (e.g. about its
    token authentication default) go to ``logs/ray-driver.log``; errors still reach the terminal."""
    logger = logging.getLogger("ray")
    for handler in logger.handlers:
        handler.addFilter(lambda record: record.levelno >= logging.ERROR)
    _to_file(logger, logs_dir / "ray-driver.log")


def _to_file(logger: logging.Logger, path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.propagate = False


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
