"""The AttestationRegistry contract: deployed once per chain, models registered once each."""

from __future__ import annotations

import logging
from pathlib import Path

from eth_utils import to_checksum_address

from serve.chain.client import ChainClient, TxReverted
from serve.chain.contracts import project_contract
from serve.chain.deployments import Deployments

log = logging.getLogger(__name__)

REGISTRY = "AttestationRegistry"
CONSUMER = "ExampleConsumer"


def to_bytes32(value: str | bytes) -> bytes:
    """``0x`` + 64 hex, or 32 raw bytes, as bytes32."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{value!r} is not hex") from None
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes (0x + 64 hex), got {len(raw)}")
    return raw


def hex32(value: bytes) -> str:
    return "0x" + bytes(value).hex()


class Registry:
    def __init__(self, chain: ChainClient, address: str, abi: list):
        self.chain = chain
        self.address = to_checksum_address(address)
        self.abi = abi
        self.contract = chain.contract(self.address, abi)

    @classmethod
    def ensure(cls, chain: ChainClient, state_dir: Path) -> Registry:
        """The registry recorded for this chain, deploying it when missing (or when the chain
        was reset and the recorded address holds no code)."""
        state_dir = Path(state_dir)
        compiled = project_contract(REGISTRY)
        deployments = Deployments(state_dir / "chain" / "deployments.json")
        chain_id = chain.chain_id()
        recorded = deployments.get(chain_id).get("registry")
        if recorded and chain.has_code(recorded):
            return cls(chain, recorded, compiled.abi)
        if recorded:
            log.warning("registry %s has no code on chain %d (chain reset?); deploying a new one", recorded, chain_id)
        address, receipt = chain.deploy(compiled.abi, compiled.bytecode)
        deployments.update(chain_id, registry=address, registry_block=receipt["blockNumber"], models={})
        log.info("deployed %s at %s on chain %d", REGISTRY, address, chain_id)
        return cls(chain, address, compiled.abi)

    # ---- reads ----

    def _read(self, fn):
        return self.chain.rpc(fn.call)

    def is_registered(self, model_id: str | bytes) -> bool:
        return self._read(self.contract.functions.isRegistered(to_bytes32(model_id)))

    def model(self, model_id: str | bytes) -> dict:
        verifier, owner, registered_at, uri = self._read(self.contract.functions.models(to_bytes32(model_id)))
        return {"verifier": verifier, "owner": owner, "registered_at": registered_at, "metadata_uri": uri}

    def attestation(self, proof_hash: str | bytes) -> dict:
        model_id, instances_hash, submitter, block = self._read(
            self.contract.functions.attestations(to_bytes32(proof_hash))
        )
        return {
            "model_id": hex32(model_id),
            "instances_hash": hex32(instances_hash),
            "submitter": submitter,
            "block_number": block,
        }

    def anchor_info(self, root: str | bytes) -> dict:
        attester, block, count = self._read(self.contract.functions.anchors(to_bytes32(root)))
        return {"attester": attester, "block_number": block, "count": count}

    def is_anchored(self, leaf: str | bytes, path: list, root: str | bytes) -> bool:
        return self._read(
            self.contract.functions.isAnchored(to_bytes32(leaf), [to_bytes32(p) for p in path], to_bytes32(root))
        )

    def is_attester(self, account: str) -> bool:
        return self._read(self.contract.functions.isAttester(to_checksum_address(account)))

    # ---- calls the outbox signs and sends ----

    def attest_call(self, model_id: str | bytes, proof_bytes: bytes, instances: list[int]):
        return self.contract.functions.attest(to_bytes32(model_id), proof_bytes, [int(i) for i in instances])

    def anchor_call(self, root: bytes, count: int, model_ids: list):
        return self.contract.functions.anchor(to_bytes32(root), count, [to_bytes32(m) for m in model_ids])

    # ---- set-up transactions ----

    def register_model(self, package, state_dir: Path, metadata_uri: str | None = None) -> dict:
        """Deploys the package's EZKL verifier and binds it to ``package.model_id``; a model
        already registered is returned as it is (registration happens once)."""
        model_id = package.model_id
        deployments = Deployments(Path(state_dir) / "chain" / "deployments.json")
        chain_id = self.chain.chain_id()
        if self.is_registered(model_id):
            info = self.model(model_id)
            return {
                "model_id": model_id,
                "name": package.name,
                "verifier": info["verifier"],
                "already_registered": True,
            }
        artifact = package.verifier_artifact()
        verifier, deploy_receipt = self.chain.deploy(artifact["abi"], artifact["bytecode"])
        uri = metadata_uri or f"zkserve:{package.name}:{model_id}"
        receipt = self.chain.transact(
            self.contract.functions.registerModel(to_bytes32(model_id), verifier, uri), self.abi
        )
        entry = {"name": package.name, "verifier": verifier, "register_tx": hex32(receipt["transactionHash"]),
                 "verifier_deploy_gas": deploy_receipt["gasUsed"], "block": receipt["blockNumber"]}
        deployments.update(chain_id, models={model_id: entry})
        log.info("registered %s (%s) with verifier %s", package.name, model_id, verifier)
        return {"model_id": model_id, "already_registered": False, **entry}

    def set_attester(self, account: str, allowed: bool = True) -> None:
        self.chain.transact(self.contract.functions.setAttester(to_checksum_address(account), allowed), self.abi)


def deploy_consumer(chain: ChainClient, registry: Registry, model_id: str, score_index: int, approve_above: int,
                    approved_limit: int):
    """Deploys an ExampleConsumer gate for one model; returns a web3 contract."""
    compiled = project_contract(CONSUMER)
    address, _ = chain.deploy(compiled.abi, compiled.bytecode, registry.address, to_bytes32(model_id),
                              score_index, approve_above, approved_limit)
    return chain.contract(address, compiled.abi), compiled.abi


__all__ = ["Registry", "TxReverted", "deploy_consumer", "hex32", "to_bytes32"]
