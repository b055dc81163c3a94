"""``python -m serve.verifier [--config FILE] [--package DIR ...] [--parent-pid PID] [--insecure-no-auth]``:
the verifier service."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from serve.chain.keys import take_key_from_environ
from serve.config import load_config
from serve.lifecycle import watch_parent
from serve.security import INSECURE_FLAG, InsecureBind, InsecureFile, KeyStoreError, install_log_redaction
from serve.security.tls import TlsConfigError
from serve.verifier.server import run_verifier


def main() -> None:
    take_key_from_environ()  # first: no child (anvil) may inherit the signing key
    parser = argparse.ArgumentParser(prog="python -m serve.verifier", description=__doc__)
    parser.add_argument("--config", type=Path, help="zkserve YAML config")
    parser.add_argument("--package", type=Path, action="append", default=[],
                        help="circuit package directory (repeatable)")
    parser.add_argument("--parent-pid", type=int, help="stop (as on SIGTERM) when this process is no longer our parent")
    parser.add_argument(INSECURE_FLAG, dest="insecure_no_auth", action="store_true",
                        help="allow binding beyond loopback with verifier.auth_enabled false")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    if args.parent_pid:
        # `zkserve up` started us: if it dies, even by SIGKILL, stop and take the local chain along
        watch_parent(args.parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        run_verifier(load_config(args.config), args.package, args.insecure_no_auth)
    except (InsecureBind, InsecureFile, KeyStoreError, TlsConfigError) as error:
        print(f"verifier: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
