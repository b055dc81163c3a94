"""The AttestationRegistry contract: deployed once per chain, models registered once each."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from eth_utils import keccak, to_checksum_address

from serve.chain.contracts import project_contract
from serve.chain.deployments import Deployments
from serve.chain.rpc import ChainClient, TxReverted

log = logging.getLogger(__name__)

REGISTRY = "AttestationRegistry"
CONSUMER = "ExampleConsumer"
ROLES = {"owner": b"\x00" * 32, "registrar": keccak(text="REGISTRAR_ROLE"), "anchorer": keccak(text="ANCHORER_ROLE")}


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


LOCAL_CHAIN_ID = 31337  # the anvil zkserve starts itself


class InsecureSrsRefused(ValueError):
    """An insecure-SRS package would be registered on a chain others rely on."""


def insecure_srs_refusal(package, chain_id: int, local_chain: bool, allow_insecure_srs: bool) -> str | None:
    """Why registering ``package`` here is refused, or None. A package whose SRS is insecure
    (the manifest's ``insecure_srs``: whoever made the SRS can forge proofs) may be
    registered only on the local anvil zkserve started, unless explicitly allowed."""
    if not package.insecure or allow_insecure_srs or (local_chain and chain_id == LOCAL_CHAIN_ID):
        return None
    return (f"{package.name} was compiled with an INSECURE SRS (whoever generated it can forge proofs); "
            f"refusing to register it on chain {chain_id}, which is not the local anvil zkserve starts. "
            f"Recompile with a ceremony SRS (`zkserve compile --srs FILE`), or pass --allow-insecure-srs "
            f"to register it anyway")


def input_row_widths(package) -> list[int]:
    """Felts per row of each input in a proof's instances, in order; empty when the inputs are
    not public (as ``circuits.instances`` lays them out)."""
    if package.manifest["visibility"]["input"] != "public":
        return []
    return [math.prod(entry["shape"][1:]) for entry in package.inputs]


def hex32(value: bytes) -> str:
    return "0x" + bytes(value).hex()


class Registry:
    def __init__(self, chain: ChainClient, address: str, abi: list):
        self.chain = chain
        self.address = to_checksum_address(address)
        self.abi = abi
        self.contract = chain.contract(self.address, abi)
        self.deployed_block = 0  # where its events start, when recorded

    @classmethod
    def ensure(cls, chain: ChainClient, state_dir: Path, registrar: str | None = None,
               anchorer: str | None = None) -> Registry:
        """The registry recorded for this chain, deploying it when missing (or when the chain
        was reset and the recorded address holds no code). A new registry is owned by the
        deploying key; the registrar and anchorer roles go to the given accounts (default:
        the deploying key too, as on the local dev chain; the owner may grant and revoke
        them later with ``zkserve roles``)."""
        state_dir = Path(state_dir)
        compiled = project_contract(REGISTRY)
        deployments = Deployments(state_dir / "chain" / "deployments.json")
        chain_id = chain.chain_id()
        recorded = deployments.get(chain_id).get("registry")
        if recorded and chain.has_code(recorded):
            return cls(chain, recorded, compiled.abi)
        if recorded:
            log.warning("registry %s has no code on chain %d (chain reset?); deploying a new one", recorded, chain_id)
        address, receipt = chain.deploy(
            compiled.abi,
            compiled.bytecode,
            to_checksum_address(registrar or chain.address),
            to_checksum_address(anchorer or chain.address),
        )
        deployments.update(chain_id, registry=address, registry_block=receipt["blockNumber"], models={})
        log.info("deployed %s at %s on chain %d", REGISTRY, address, chain_id)
        return cls(chain, address, compiled.abi)

    @classmethod
    def recorded(cls, chain: ChainClient, state_dir: Path) -> Registry | None:
        """The registry recorded for this chain when it still holds code, else None; never
        deploys (for commands that only read)."""
        entry = Deployments(Path(state_dir) / "chain" / "deployments.json").get(chain.chain_id())
        address = entry.get("registry")
        if not address or not chain.has_code(address):
            return None
        registry = cls(chain, address, project_contract(REGISTRY).abi)
        registry.deployed_block = int(entry.get("registry_block") or 0)
        return registry

    def registered_models(self) -> list[tuple[str, str]]:
        """(label, model id) of every model ever registered, in registration order; the label
        is the package name from zkserve's metadata URI (``zkserve:NAME:MODEL_ID``) or the URI."""
        models = []
        events = self.chain.rpc(lambda: self.contract.events.ModelRegistered.get_logs(from_block=self.deployed_block))
        for event in events:
            uri = event["args"]["metadataURI"] or ""
            parts = uri.split(":")
            label = parts[1] if len(parts) == 3 and parts[0] == "zkserve" else uri
            models.append((label, hex32(event["args"]["modelId"])))
        return models

    # ---- reads ----

    def _read(self, fn):
        return self.chain.rpc(fn.call)

    def is_registered(self, model_id: str | bytes) -> bool:
        return self._read(self.contract.functions.isRegistered(to_bytes32(model_id)))

    def is_deprecated(self, model_id: str | bytes) -> bool:
        return self._read(self.contract.functions.isDeprecated(to_bytes32(model_id)))

    def model(self, model_id: str | bytes) -> dict:
        (registered_at, deprecated_at, anchored_rows, verifier, rows_per_proof, registrar, attested_rows, uri,
         input_row_widths) = self._read(self.contract.functions.models(to_bytes32(model_id)))
        return {
            "verifier": verifier,
            "registrar": registrar,
            "registered_at": registered_at,
            "deprecated_at": deprecated_at,
            "rows_per_proof": rows_per_proof,
            "input_row_widths": list(input_row_widths),
            "metadata_uri": uri,
            "anchored_rows": anchored_rows,
            "attested_rows": attested_rows,
        }

    def usage(self, model_id: str | bytes) -> dict:
        """Rows proven for the model, as the chain counts them now."""
        anchored, attested = self._read(self.contract.functions.usage(to_bytes32(model_id)))
        return {"anchored_rows": anchored, "attested_rows": attested}

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
        """Who anchored the root (their word that the batch verified), in which block."""
        anchorer, block, count = self._read(self.contract.functions.anchors(to_bytes32(root)))
        return {"anchorer": anchorer, "block_number": block, "count": count}

    def is_anchored(self, leaf: str | bytes, path: list, root: str | bytes) -> bool:
        return self._read(
            self.contract.functions.isAnchored(to_bytes32(leaf), [to_bytes32(p) for p in path], to_bytes32(root))
        )

    def has_role(self, role: str, account: str) -> bool:
        """``role`` is one of ``ROLES``: owner, registrar, anchorer."""
        return self._read(self.contract.functions.hasRole(ROLES[role], to_checksum_address(account)))

    def owner(self) -> str:
        return self._read(self.contract.functions.owner())

    # ---- calls the outbox signs and sends ----

    def attest_call(self, model_id: str | bytes, proof_bytes: bytes, instances: list[int]):
        return self.contract.functions.attest(to_bytes32(model_id), proof_bytes, [int(i) for i in instances])

    def anchor_call(self, root: bytes, count: int, model_ids: list, rows: list[int]):
        """``rows[i]``: the rows the batch proves for ``model_ids[i]`` (the anchorer's statement)."""
        return self.contract.functions.anchor(
            to_bytes32(root), count, [to_bytes32(m) for m in model_ids], [int(r) for r in rows]
        )

    # ---- set-up transactions ----

    def register_model(
        self,
        package,
        state_dir: Path,
        metadata_uri: str | None = None,
        allow_insecure_srs: bool = False,
        local_chain: bool = True,
    ) -> dict:
        """Deploys the package's EZKL verifier and binds it to ``package.model_id``; a model
        already registered is returned as it is (registration happens once). An insecure-SRS
        package is refused (InsecureSrsRefused) off the local anvil unless allowed."""
        model_id = package.model_id
        refusal = insecure_srs_refusal(package, self.chain.chain_id(), local_chain, allow_insecure_srs)
        if refusal:
            raise InsecureSrsRefused(refusal)
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
        # The batch and the public inputs' layout: `attest` counts a proof's rows from its inputs.
        call = self.contract.functions.registerModel(
            to_bytes32(model_id), verifier, package.batch_size, input_row_widths(package), uri
        )
        receipt = self.chain.transact(call, self.abi)
        entry = {
            "name": package.name,
            "verifier": verifier,
            "register_tx": hex32(receipt["transactionHash"]),
            "verifier_deploy_gas": deploy_receipt["gasUsed"],
            "block": receipt["blockNumber"],
        }
        deployments.update(chain_id, models={model_id: entry})
        log.info("registered %s (%s) with verifier %s", package.name, model_id, verifier)
        return {"model_id": model_id, "already_registered": False, **entry}

    def deprecate_model(self, model_id: str | bytes, reason: str) -> dict:
        return self.chain.transact(self.contract.functions.deprecateModel(to_bytes32(model_id), reason), self.abi)

    def grant_role(self, role: str, account: str) -> dict:
        call = self.contract.functions.grantRole(ROLES[role], to_checksum_address(account))
        return self.chain.transact(call, self.abi)

    def revoke_role(self, role: str, account: str) -> dict:
        call = self.contract.functions.revokeRole(ROLES[role], to_checksum_address(account))
        return self.chain.transact(call, self.abi)


def deploy_consumer(
    chain: ChainClient,
    registry: Registry,
    model_id: str,
    input_index: int,
    score_index: int,
    approve_above: int,
    approved_limit: int,
):
    """Deploys an ExampleConsumer gate for one model (the deploying key is the lender);
    returns a web3 contract and its ABI."""
    compiled = project_contract(CONSUMER)
    address, _ = chain.deploy(
        compiled.abi,
        compiled.bytecode,
        registry.address,
        to_bytes32(model_id),
        input_index,
        score_index,
        approve_above,
        approved_limit,
    )
    return chain.contract(address, compiled.abi), compiled.abi


__all__ = [
    "ROLES",
    "InsecureSrsRefused",
    "Registry",
    "TxReverted",
    "deploy_consumer",
    "hex32",
    "input_row_widths",
    "insecure_srs_refusal",
    "to_bytes32",
]
