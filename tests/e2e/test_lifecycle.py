"""The lifecycle of `zkserve up` and `zkserve verifier`, as a user runs them: a taken port
fails at once with its name, SIGTERM stops everything within 10 s, and SIGKILL of `up` leaves
no verifier or chain listening after 5 s. The stack is the real one (Ray Serve, the verifier
service, anvil), kept small: the demo MLP alone, one proving core."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from serve.lifecycle import port_free
from serve.ports import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 240
PORT_SETTINGS = ("INGRESS_PORT", "INGRESS_HTTP_PORT", "VERIFIER_PORT", "VERIFIER_METRICS_PORT", "CHAIN_ANVIL_PORT")


@dataclass
class Up:
    """One `zkserve up` child process on its own ports and state directory."""

    state_dir: Path
    env: dict
    process: subprocess.Popen | None = None

    @property
    def output_path(self) -> Path:
        return self.state_dir.parent / f"{self.state_dir.name}.out"

    def port(self, setting: str) -> int:
        return int(self.env[f"ZKSERVE_{setting}"])

    def start(self) -> Up:
        with open(self.output_path, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "serve.cli", "up"], cwd=REPO, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "Ctrl-C stops" not in self.output():
            assert self.process.poll() is None, f"`up` exited with {self.process.returncode}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"`up` not ready after {READY_TIMEOUT_S} s:\n{self.output()[-3000:]}"
            time.sleep(0.25)
        return self

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def leftovers(self) -> list[psutil.Process]:
        """Processes still running with this stack's state directory (all started by it)."""
        found = []
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("ZKSERVE_HOME") == str(self.state_dir):
                    found.append(process)
            except (psutil.Error, OSError):
                continue
        return found

    def clean_up(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for process in self.leftovers():  # by pid, only what this stack started
            try:
                process.kill()
            except psutil.Error:
                pass


def wait_until(condition, timeout_s: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def make_up(tmp_path, mlp_package):
    started: list[Up] = []

    def make(**env) -> Up:
        state_dir = tmp_path / f"state-{len(started)}"
        state_dir.mkdir()
        ports = {f"ZKSERVE_{name}": str(free_port()) for name in PORT_SETTINGS}
        up = Up(state_dir, {**os.environ, **ports, "ZKSERVE_HOME": str(state_dir),
                            "ZKSERVE_SERVING_MODELS": f"[{mlp_package.root}]",
                            "ZKSERVE_SERVING_PROVER_CORES": "1", "RAYON_NUM_THREADS": "1", **env})
        started.append(up)
        return up

    yield make
    for up in started:
        up.clean_up()


def listening(host: str, port: int) -> bool:
    return not port_free(host, port)


def test_taken_port_fails_fast_naming_it_and_its_holder(make_up):
    up = make_up()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", up.port("VERIFIER_PORT")))
        holder.listen()
        for command in (["up"], ["verifier"]):
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "serve.cli", *command], cwd=REPO, env=up.env,
                                  capture_output=True, text=True, timeout=60)
            elapsed = time.monotonic() - started
            out = done.stdout + done.stderr
            assert done.returncode == 1, out
            assert f"port {up.port('VERIFIER_PORT')} (verifier.port)" in out, out
            assert f"pid {os.getpid()}" in out, out  # the holder, found by psutil
            assert elapsed < 15, f"{command} took {elapsed:.1f} s to refuse a taken port"
    assert not up.leftovers()  # nothing was started
    assert not listening("127.0.0.1", up.port("CHAIN_ANVIL_PORT"))


def test_up_is_quiet_refuses_a_second_up_and_stops_within_10s_on_sigterm(make_up):
    up = make_up().start()
    out = up.output()
    for noise in ("Numerical Fidelity", "INFO", "Token authentication", "ready at", "Traceback"):
        assert noise not in out, f"{noise!r} in a normal run's output:\n{out}"
    assert f"gRPC ingress  127.0.0.1:{up.port('INGRESS_PORT')}" in out
    assert f"REST ingress  127.0.0.1:{up.port('INGRESS_HTTP_PORT')}" in out  # served: the ingress's own port
    assert (up.state_dir / "logs" / "verifier.log").is_file() and (up.state_dir / "logs" / "ray").exists()

    # a second `up` on the same settings fails at once instead of adopting this stack
    second = subprocess.run([sys.executable, "-m", "serve.cli", "up"], cwd=REPO,
                            env={**up.env, "ZKSERVE_HOME": str(up.state_dir.parent / "other")},
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "already in use" in second.stdout + second.stderr

    up.process.send_signal(signal.SIGTERM)
    elapsed = wait_until(lambda: up.process.poll() is not None, timeout_s=10)
    assert up.process.returncode == 0, up.output()[-3000:]
    for setting in ("VERIFIER_PORT", "CHAIN_ANVIL_PORT", "INGRESS_PORT"):
        assert not listening("127.0.0.1", up.port(setting)), f"{setting} still listening after `up` stopped"
    assert "SIGTERM received" not in up.output()  # Ray's own handler (a stack dump) does not run
    print(f"`up` stopped {elapsed:.2f} s after SIGTERM")


def test_sigkill_of_up_leaves_no_verifier_or_chain_listening_after_5s(make_up):
    up = make_up().start()
    verifier, chain = up.port("VERIFIER_PORT"), up.port("CHAIN_ANVIL_PORT")
    assert listening("127.0.0.1", verifier) and listening("127.0.0.1", chain)
    up.process.send_signal(signal.SIGKILL)
    up.process.wait()
    elapsed = wait_until(lambda: not listening("127.0.0.1", verifier) and not listening("127.0.0.1", chain),
                         timeout_s=5)
    print(f"verifier and chain ports free {elapsed:.2f} s after SIGKILL of `up`")


def test_up_stops_loudly_when_its_verifier_dies(make_up):
    """A stack whose verifier is gone would answer attested requests whose proofs reach no chain:
    `up` stops with exit 1 and names the verifier's log instead of serving half a stack."""
    up = make_up().start()
    service = next(p for p in up.leftovers()
                   if "serve.verifier" in " ".join(p.cmdline()) and p.ppid() == up.process.pid)
    service.kill()
    wait_until(lambda: up.process.poll() is not None, timeout_s=20)
    out = up.output()
    assert up.process.returncode == 1, out[-3000:]
    flat = "".join(out.split())  # the console folds long lines (paths) at its width
    assert "theverifierserviceexited" in flat and "logs/verifier.log" in flat, out[-3000:]
    assert not listening("127.0.0.1", up.port("INGRESS_PORT"))
