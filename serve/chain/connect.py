"""From the ``zkserve.chain`` config to a connected client: the configured RPC endpoint, or
the local anvil (reused when one already answers, else started as a child process)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from circuits.paths import StatePaths
from serve.chain.anvil import AnvilProcess, rpc_chain_id
from serve.chain.keys import SigningKeyError, load_signer
from serve.chain.rpc import ChainClient, ChainError
from serve.security.redact import redact_url, register_secret_url

log = logging.getLogger(__name__)


@dataclass
class ChainConnection:
    client: ChainClient
    anvil: AnvilProcess | None  # set when this process started the local chain

    def close(self) -> None:
        if self.anvil is not None:
            self.anvil.stop()

    def durable_since(self, moment: float) -> bool:
        """Whether the chain's state was persisted after ``moment`` (unix time): the anvil we
        started has dumped its state file since; any other node keeps its own blocks."""
        if self.anvil is None:
            return True
        try:
            return self.anvil.state_file.stat().st_mtime > moment
        except OSError:
            return False


def local_chain_url(chain_config: dict) -> str:
    return f"http://{chain_config['anvil_host']}:{chain_config['anvil_port']}"


def connect(zkserve_config: dict, start_anvil: bool = True, read_only: bool = False) -> ChainConnection:
    """``read_only``: for commands that only read; they need no signing key (an unfunded
    throwaway account stands in when none is configured)."""
    chain_config = zkserve_config["chain"]
    local = not chain_config.get("rpc_url")
    url = local_chain_url(chain_config) if local else chain_config["rpc_url"]
    register_secret_url(url)
    try:
        signer = load_signer(chain_config, local_chain=local)  # before anvil starts: it takes the key out of the env
    except SigningKeyError:
        if not read_only:
            raise
        signer = Account.create()
    anvil = None
    if local and rpc_chain_id(url) is None and start_anvil:
        state_file = StatePaths(Path(zkserve_config["state_dir"])).anvil_state
        anvil = AnvilProcess(state_file, chain_config["anvil_host"], int(chain_config["anvil_port"]),
                             int(chain_config["chain_id"])).start()
    client = ChainClient(url, signer)
    if local or rpc_chain_id(url) is not None:
        reported = rpc_chain_id(url)
        expected = int(chain_config["chain_id"])
        if reported is not None and reported != expected:
            if anvil:
                anvil.stop()
            raise ChainError(f"{redact_url(url)} reports chain id {reported}, config says chain.chain_id={expected}")
    return ChainConnection(client, anvil)
