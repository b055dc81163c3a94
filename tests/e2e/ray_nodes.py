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
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # for the nodes and their drivers: a loopback test cluster without a token (Ray turns token
        # auth on for a head that finds a user's token, and then refuses the other raylets)
        self.client_env = {**os.environ, "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}

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

    def start(self) -> LocalCluster:
        head, *others = self.cpus
        try:
            self._start(head, "--head", "--port", str(self.port), "--include-dashboard", "false",
                        "--ray-client-server-port", str(free_port()))
            for name in others:
                self._start(name, "--address", self.address)
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[psutil.Process]:
        """This cluster's daemons (their command lines name its temp dirs) and all their children."""
        roots = [p for p in psutil.process_iter(["cmdline"])
                 if any(str(temp) in " ".join(p.info["cmdline"] or ()) for temp in self.temp.values())]
        found = {p.pid: p for p in roots}
        for root in roots:
            try:
                found.update({child.pid: child for child in root.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def stop(self) -> None:
        processes = self.processes()
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(processes, timeout=30)
        for temp in self.temp.values():
            shutil.rmtree(temp, ignore_errors=True)
