"""Several Ray nodes on this one machine, for tests and benchmarks of a cluster without a shared
disk: each raylet has its own temp dir, its own package cache ($ZKSERVE_PACKAGE_CACHE set only in
its environment), its own ZKSERVE_HOME (workers) and a custom resource ``zk_<name>`` to place actors
on it. Every process is stopped by pid (never `ray stop`: other Ray clusters run on this machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from serve.ports import free_port

RAY = str(Path(sys.executable).parent / "ray")
REPO = Path(__file__).resolve().parents[2]


def resource(node: str) -> str:
    """The custom resource only node ``node`` offers."""
    return f"zk_{node}"


class LocalCluster:
    """`ray start --head` for the first node, `ray start --address` for the others."""

    def __init__(self, work: Path, cpus: dict[str, int]):
        self.work = work
        self.cpus = cpus  # node name -> logical CPUs; the first is the head
        # short paths: Ray's unix sockets live under the temp dir (108-byte limit)
        self.temp = {name: Path(tempfile.mkdtemp(prefix=f"zk-{name}-", dir="/tmp")) for name in cpus}
        self.cache = {name: work / f"cache-{name}" for name in cpus}
        self.port, self.address = 0, ""
        # for the nodes and their drivers: a loopback test cluster without a token (Ray turns token
        # auth on for a head that finds a user's token, and then refuses the other raylets)
        # a cluster of several raylets: undo keep_ray_on_loopback (a local-only cluster refuses other
        # nodes) should an in-process `zkserve score` earlier in the session have set it
        self.client_env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        self.client_env["RAY_AUTH_MODE"] = "disabled"

    def _start(self, name: str, *args: str) -> None:
        env = {**self.client_env, "RAY_ADDRESS": "", "ZKSERVE_PACKAGE_CACHE": str(self.cache[name]),
               "ZKSERVE_HOME": str(self.work / f"home-{name}")}  # no node falls back to the driver's state dir
        command = [RAY, "start", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp[name]),
                   "--disable-usage-stats", "--num-cpus", str(self.cpus[name]),
                   "--resources", json.dumps({resource(name): 4}), *args]
        for option in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                       "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"):
            command += [option, str(free_port())]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"ray start of node {name} failed: {done.stdout[-3000:]}{done.stderr[-3000:]}")

    def start(self, attempts: int = 3) -> LocalCluster:
        """Each node, retried with fresh ports: `ray start` gives a raylet 30 s to register, which a
        loaded machine sometimes misses."""
        head, *others = self.cpus
        try:
            for name in self.cpus:
                for attempt in range(attempts):
                    try:
                        if name == head:
                            self._set_port(free_port())
                            self._start(head, "--head", "--port", str(self.port), "--include-dashboard", "false",
                                        "--ray-client-server-port", str(free_port()))
                        else:
                            self._start(name, "--address", self.address)
                        break
                    except RuntimeError:
                        self._kill(self.processes([name]))
                        if attempt == attempts - 1:
                            raise
        except BaseException:
            self.stop()
            raise
        return self

    def _set_port(self, port: int) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.client_env["RAY_ADDRESS"] = self.address

    def processes(self, nodes: list[str] | None = None) -> list[psutil.Process]:
        """The daemons of these nodes (default: all; their command lines name the node's temp dir)
        and all their children."""
        temps = [str(self.temp[name]) for name in nodes or self.temp]
        roots = [p for p in psutil.process_iter(["cmdline"])
                 if any(temp in " ".join(p.info["cmdline"] or ()) for temp in temps)]
        found = {p.pid: p for p in roots}
        for root in roots:
            try:
                found.update({child.pid: child for child in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    @staticmethod
    def _kill(processes: list[psutil.Process]) -> None:
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=30)

    def stop(self) -> None:
        self._kill(self.processes())
        for temp in self.temp.values():
            shutil.rmtree(temp, ignore_errors=True)
