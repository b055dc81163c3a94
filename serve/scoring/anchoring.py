"""Anchoring a sampled job's Merkle root on chain, through the chain client (serve.chain).

The verifier service anchors only the leaves of proofs it verified itself, so the root of a
job's rows goes to AttestationRegistry.anchor directly, signed by the configured key (which
needs the anchorer role). The sample seed is the hash of the block in which the registry
first recorded the root: fixed once the root is on chain, unknown before, and the same on
every retry (a re-sent anchor of a known root changes nothing on chain).
"""

from __future__ import annotations

from pathlib import Path


class AnchorError(RuntimeError):
    """The root could not be anchored (no chain, no registry, no anchorer role)."""


def anchor_root(root: bytes, count: int, model_id: str) -> dict:
    from serve.chain.client import ChainError
    from serve.chain.connect import connect
    from serve.chain.contracts import project_contract
    from serve.chain.deployments import Deployments
    from serve.chain.registry import REGISTRY, Registry, hex32
    from serve.config import load_config

    zk = load_config()["zkserve"]
    try:
        connection = connect(zk, start_anvil=False)
    except ChainError as error:
        raise AnchorError(f"cannot reach the chain to anchor the job's root: {error}") from None
    try:
        chain = connection.client
        chain_id = chain.chain_id()
        address = Deployments(Path(zk["state_dir"]) / "chain" / "deployments.json").get(chain_id).get("registry")
        if not address or not chain.has_code(address):
            raise AnchorError(f"no AttestationRegistry recorded for chain {chain_id} under {zk['state_dir']}; "
                              f"run `zkserve register MODEL` first")
        registry = Registry(chain, address, project_contract(REGISTRY).abi)
        if not registry.is_registered(model_id):
            raise AnchorError(f"model {model_id} is not registered on chain {chain_id}; run `zkserve register` first")
        # every one of the root's `count` leaves is a row of this model
        receipt = chain.transact(registry.anchor_call(root, count, [model_id], [count]), registry.abi)
        recorded = registry.anchor_info(root)
        block = chain.rpc(lambda: chain.w3.eth.get_block(recorded["block_number"]))
        return {"chain_id": chain_id, "registry": registry.address, "anchorer": recorded["anchorer"],
                "tx_hash": hex32(receipt["transactionHash"]), "block_number": int(recorded["block_number"]),
                "block_hash": hex32(block["hash"])}
    except ChainError as error:
        raise AnchorError(f"anchoring the job's root failed: {error}") from None
    finally:
        connection.close()
