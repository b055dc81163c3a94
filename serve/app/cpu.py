"""CPU priority and placement of the app's processes: inference first, proofs in what is left.

Ray starts worker processes at niceness 15. The ingress (it answers every request, and runs ONNX
Runtime on CPU nodes) goes back to a normal process's 0 where the OS allows it; provers run at
19 in SCHED_IDLE (only on cycles nothing else wants), and with ``serving.prover_cores`` on the
last cores only. On Linux niceness
belongs to each thread, so every thread of the process is set, and threads made later inherit it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("ray.serve")
INGRESS_NICENESS = 0
PROVER_NICENESS = 19


def set_niceness(value: int) -> bool:
    """Every thread of this process at ``value``; False where the OS refuses (no CAP_SYS_NICE)."""
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [0]
    done = True
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, value)
        except (PermissionError, ProcessLookupError):
            done = False
    return done


def run_when_idle() -> bool:
    """Every thread of this process at the lowest niceness and, on Linux, in SCHED_IDLE: it runs
    only on cycles nothing else wants, and any waking inference thread preempts it at once.
    Threads made later (EZKL's rayon pool) inherit both. False where the OS refuses."""
    done = set_niceness(PROVER_NICENESS)
    if not hasattr(os, "SCHED_IDLE"):
        return False
    for tid in [int(t.name) for t in Path("/proc/self/task").iterdir()]:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except (PermissionError, ProcessLookupError, OSError):
            done = False
    return done


def pin_to_cores(cores: int | None) -> None:
    """With ``cores`` below the machine's count, this process runs on the last ``cores`` CPUs only."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cores and 0 < cores < len(available):
        os.sched_setaffinity(0, available[-cores:])
