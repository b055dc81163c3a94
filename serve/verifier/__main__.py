"""``python -m serve.verifier [--config FILE] [--package DIR ...] [--parent-pid PID]``: the verifier service."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from serve.config import load_config
from serve.lifecycle import watch_parent
from serve.verifier.server import run_verifier


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.verifier", description=__doc__)
    parser.add_argument("--config", type=Path, help="zkserve YAML config")
    parser.add_argument("--package", type=Path, action="append", default=[],
                        help="circuit package directory (repeatable)")
    parser.add_argument("--parent-pid", type=int, help="stop (as on SIGTERM) when this process is no longer our parent")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.parent_pid:
        # `zkserve up` started us: if it dies, even by SIGKILL, stop and take the local chain along
        watch_parent(args.parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    run_verifier(load_config(args.config), args.package)


if __name__ == "__main__":
    main()
