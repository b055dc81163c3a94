"""Joining the Ray cluster and sizing the prover pool so that provers x threads = cores."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray


def connect() -> None:
    """The cluster of `zkserve up` when RAY_ADDRESS names one, else a local one."""
    if ray.is_initialized():
        return
    if not os.environ.get("RAY_ADDRESS"):
        from serve.security import keep_ray_on_loopback

        keep_ray_on_loopback()  # a local cluster of this job only: nothing listens beyond 127.0.0.1
    ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING, log_to_driver=False,
             configure_logging=True)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours shows rows/s and proofs/s
    context.print_on_execution_start = False


@dataclass(frozen=True)
class ProverPool:
    provers: int
    threads: int  # RAYON_NUM_THREADS of each prover, and the Ray CPUs it reserves

    @property
    def runtime_env(self) -> dict:
        return {"env_vars": {"RAYON_NUM_THREADS": str(self.threads)}}


def size_pool(provers: int | None, threads: int | None, batches: int) -> ProverPool:
    """Each prover reserves `threads` Ray CPUs, so Ray never packs a node beyond its cores;
    by default as many single-thread provers as the cluster has CPUs (processes scale better
    than rayon threads on small circuits)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, threads or 1)
    if threads > cpus:
        raise ValueError(f"--prover-threads {threads} is more than the cluster's {cpus} CPUs")
    most = max(1, cpus // threads)
    if provers is not None and provers > most:
        raise ValueError(f"{provers} provers x {threads} threads need {provers * threads} CPUs; the cluster has {cpus}")
    return ProverPool(max(1, min(provers or most, batches)), threads)
