"""The EVM side of zkserve: anvil, the JSON-RPC client, and the AttestationRegistry."""

from serve.chain.connect import ChainConnection, connect
from serve.chain.keys import SigningKeyError, load_signer
from serve.chain.registry import Registry, deploy_consumer, hex32, to_bytes32
from serve.chain.rpc import ChainClient, ChainError, ChainUnavailable, TxReverted

__all__ = [
    "ChainClient", "ChainConnection", "ChainError", "ChainUnavailable", "Registry", "SigningKeyError", "TxReverted",
    "connect", "deploy_consumer", "hex32", "load_signer", "to_bytes32",
]
