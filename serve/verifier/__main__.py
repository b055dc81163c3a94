"""``python -m serve.verifier [--config FILE] [--package DIR ...]``: the verifier service."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from serve.config import load_config
from serve.verifier.server import run_verifier


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.verifier", description=__doc__)
    parser.add_argument("--config", type=Path, help="zkserve YAML config")
    parser.add_argument("--package", type=Path, action="append", default=[], help="circuit package directory (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_verifier(load_config(args.config), args.package)


if __name__ == "__main__":
    main()
