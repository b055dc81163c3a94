"""Where the auditor gets what it checks: circuit packages, proof documents, the verifier
service's records and a read-only view of the chain. Nothing here decides what is true;
it only fetches, and says where from (or why it could not)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from eth_account import Account

from circuits import CircuitPackage, PackageError, Proof
from serve.chain.contracts import project_contract
from serve.chain.deployments import Deployments
from serve.chain.registry import REGISTRY, Registry
from serve.chain.rpc import ChainClient, ChainError

MAX_PROOF_FILE_BYTES = 8 * 1024 * 1024  # the verifier service's own limit on a proof document
MAX_RECORDS_SCANNED = 100_000  # proof store records read when looking for a proof's timing


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AuditContext:
    """What the audit may consult: the state directory, the verifier service, the chain."""

    state_dir: Path
    verifier: str | None  # host:port of zkserve.v1.Verifier; None: do not ask it
    rpc_url: str | None  # the chain's JSON-RPC endpoint; None: no chain checks
    chain_id: int | None = None  # what the config expects, checked against the node


# ---- circuit packages ----


def find_package(model_ref: str, state_dir: Path) -> tuple[CircuitPackage | None, str]:
    """A package by directory, model id or name (the state dir's circuit cache): the package,
    or None and why not. Loading re-hashes every file (CircuitPackage.load checks)."""
    from serve.verifier.models import ModelCatalog

    try:
        if Path(model_ref).is_dir():
            return CircuitPackage.load(model_ref), f"package directory {Path(model_ref).resolve()}"
        by_id = _package_dir_by_id(model_ref, state_dir / "circuits")
        if by_id is not None:
            return CircuitPackage.load(by_id), f"circuit cache {state_dir / 'circuits'}"
        package = ModelCatalog(state_dir).resolve(model_ref)
        return package, f"circuit cache {state_dir / 'circuits'}"
    except (LookupError, PackageError) as error:
        return None, str(error)


def _package_dir_by_id(model_id: str, circuits: Path) -> Path | None:
    """Reads only manifests, so a large cache is not re-hashed to find one package."""
    for manifest in sorted(circuits.glob("*/manifest.json")):
        if manifest.parent.name.endswith(".partial"):
            continue
        try:
            if str(json.loads(manifest.read_text()).get("model_id", "")).lower() == model_id.lower():
                return manifest.parent
        except (OSError, ValueError):
            continue
    return None


# ---- proof documents ----


@dataclass(frozen=True)
class ProofSource:
    proof: Proof | None
    where: str  # the file it came from, or where the auditor looked
    store_record: dict | None = None  # the serving proof store's record of it, when found


def load_proof_file(path: Path) -> Proof:
    size = path.stat().st_size
    if size > MAX_PROOF_FILE_BYTES:
        raise ValueError(f"{path} is {size} bytes, over the {MAX_PROOF_FILE_BYTES} limit of a proof document")
    return Proof.load(path)


def find_proof(proof_hash: str, state_dir: Path, proof_file: Path | None) -> ProofSource:
    """`--proof FILE` first, else the serving app's proof store (<state>/proofs/proofs/<hash>.json,
    where every proof the app made is kept). The verifier service keeps no proof bytes for
    anchored proofs, so it cannot be the source."""
    store = Path(state_dir) / "proofs"
    record = _store_record(store, proof_hash)
    candidates = [proof_file] if proof_file is not None else [store / "proofs" / f"{proof_hash.lower()}.json"]
    for path in candidates:
        if path.is_file():
            try:
                return ProofSource(load_proof_file(path), str(path), record)
            except (OSError, ValueError) as error:
                return ProofSource(None, f"{path}: {error}", record)
    return ProofSource(None, "no proof document: looked in " + ", ".join(str(p) for p in candidates), record)


def _store_record(store: Path, proof_hash: str) -> dict | None:
    records = store / "records"
    if not records.is_dir():
        return None
    for count, path in enumerate(records.glob("*.json")):
        if count >= MAX_RECORDS_SCANNED:
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if str(record.get("proof_hash", "")).lower() == proof_hash.lower():
            return record
    return None


# ---- the verifier service ----


@dataclass(frozen=True)
class RecordLookup:
    record: object | None  # zkserve.v1 AttestationRecord
    note: str  # where it was asked, and what came back
    answered: bool  # the verifier answered (with the record, or NOT_FOUND); False: not asked or unreachable


def verifier_record(target: str | None, proof_hash: str, timeout_s: float = 5.0) -> RecordLookup:
    if not target:
        return RecordLookup(None, "no verifier service given", False)
    import grpc

    from serve.verifier.client import VerifierClient

    with VerifierClient(target, timeout_s=timeout_s, retries=0) as client:
        try:
            return RecordLookup(client.get(proof_hash), f"GetAttestation at {target}, {now_iso()}", True)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return RecordLookup(None, f"the verifier at {target} has no record of it (never submitted there)", True)
            return RecordLookup(None, f"the verifier at {target} did not answer: {error.code().name}", False)


# ---- the chain, read only ----


@dataclass
class ChainView:
    client: ChainClient
    registry: Registry | None
    registry_source: str  # where the registry address came from
    problem: str = ""  # why there is no registry

    def block(self) -> int:
        return self.client.block_number()


def open_chain(context: AuditContext, registry_address: str | None = None) -> tuple[ChainView | None, str]:
    """A read-only client (a throwaway account: the audit signs nothing) and the registry,
    at the address the verifier reports, else the one recorded in the state directory.
    Never deploys or starts anything."""
    if not context.rpc_url:
        return None, "no chain RPC endpoint configured"
    client = ChainClient(context.rpc_url, Account.create(), timeout_s=10.0)
    try:
        chain_id = client.chain_id()
    except ChainError as error:
        return None, f"chain at {context.rpc_url} unreachable: {error}"
    if context.chain_id is not None and chain_id != context.chain_id:
        return None, f"{context.rpc_url} reports chain id {chain_id}, the config expects {context.chain_id}"
    source = f"the verifier service's record (chain {chain_id})"
    if not registry_address:
        registry_address = Deployments(context.state_dir / "chain" / "deployments.json").get(chain_id).get("registry")
        source = f"{context.state_dir / 'chain' / 'deployments.json'} (chain {chain_id})"
    if not registry_address:
        return ChainView(client, None, source, f"no registry address known for chain {chain_id}"), ""
    try:
        if not client.has_code(registry_address):
            return ChainView(client, None, source, f"no contract code at {registry_address} on chain {chain_id}"), ""
    except ChainError as error:
        return None, f"chain at {context.rpc_url}: {error}"
    return ChainView(client, Registry(client, registry_address, project_contract(REGISTRY).abi), source), ""
