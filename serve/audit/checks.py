"""The checks an audit runs, each returning facts that say how they were checked.

Shared by the proof report and the job report: the model (package integrity, SRS, registry
binding, verifier bytecode), one proof (hash, verification, decoded inputs and outputs) and
its chain record (leaf, Merkle path, anchor or attestation, transaction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from eth_utils import keccak

from circuits import CircuitPackage, PackageError, Proof, decode_inputs, decode_outputs, proven_input_hash
from circuits.instances import _instance_layout
from serve.audit.report import FAILED, UNCHECKED, UNPROVEN, VERIFIED, WARNING, Fact, Table
from serve.audit.sources import ChainView, RecordLookup, now_iso
from serve.chain.registry import hex32
from serve.chain.rpc import ChainError
from serve.merkle import instances_hash, leaf_of, verify_path
from serve.verifier.models import check_proof

MAX_VALUES_SHOWN = 64  # per tensor, in a page meant to be read


def short(value: str, keep: int = 18) -> str:
    return value if len(value) <= keep + 3 else value[:keep] + "..."


# ---- the model ----


def package_facts(package: CircuitPackage | None, where: str, expected_model_id: str | None) -> list[Fact]:
    if package is None:
        label = f"model {expected_model_id}" if expected_model_id else "model"
        return [
            Fact(
                "Circuit package",
                label,
                UNCHECKED,
                f"no circuit package found ({where}); nothing below that needs the verification key could be checked",
            )
        ]
    facts = [Fact("Model name", package.name, UNPROVEN, f"from manifest.json of {package.root}")]
    started = time.perf_counter()
    try:
        package.check_integrity()
        facts.append(
            Fact(
                "Package integrity",
                f"{len(package.manifest.get('files', {}))} files",
                VERIFIED,
                f"every file of {package.root} re-hashed against manifest.json at {now_iso()} "
                f"({(time.perf_counter() - started) * 1000:.0f} ms)",
            )
        )
        facts.append(
            Fact("model_id", package.model_id, VERIFIED,
                 "sha256 over the hashes of vk.key, settings.json and kzg.srs recomputed; equals the manifest's")
        )
    except PackageError as error:
        facts.append(Fact("Package integrity", "changed after compile", FAILED, str(error)))
        facts.append(Fact("model_id", package.model_id, FAILED, "the package does not match its manifest"))
    if expected_model_id and expected_model_id.lower() != package.model_id.lower():
        facts.append(
            Fact(
                "Model of the proof",
                expected_model_id,
                FAILED,
                f"the subject names model {expected_model_id}, the package is {package.model_id}",
            )
        )
    facts.append(srs_fact(package))
    visibility = package.manifest.get("visibility", {})
    facts.append(
        Fact(
            "Visibility",
            ", ".join(f"{k} {v}" for k, v in visibility.items()),
            UNPROVEN,
            "from manifest.json; the verification key fixes the instance layout it describes",
        )
    )
    return facts


def srs_fact(package: CircuitPackage) -> Fact:
    """The SRS status is decided from kzg.srs's hash now (``package.srs_status``), never read from a flag."""
    from circuits import srs as srs_trust

    digest = package.manifest.get("srs", {}).get("sha256", "")
    status = package.srs_status
    if status == srs_trust.CEREMONY:
        return Fact("SRS", "ceremony SRS", VERIFIED,
                    f"kzg.srs sha256 {short(digest)} re-hashed with the package: on the list of known ceremony files")
    label = "INSECURE dev SRS" if status == srs_trust.DEV else "INSECURE unverified SRS"
    return Fact("SRS", label, WARNING, f"kzg.srs sha256 {short(digest)} re-hashed with the package: "
                                       f"{srs_trust.NOTES[status]}")


def registry_facts(
    chain: ChainView | None, chain_problem: str, package: CircuitPackage | None, model_id: str | None
) -> list[Fact]:
    if chain is None:
        return [Fact("Registry binding", model_id or "?", UNCHECKED, chain_problem)]
    if chain.registry is None:
        return [Fact("Registry", "none", UNCHECKED, f"{chain.problem} (address from {chain.registry_source})")]
    registry = chain.registry
    facts = [
        Fact(
            "Registry",
            registry.address,
            VERIFIED,
            f"contract code present (eth_getCode) at block {chain.block()}; address from {chain.registry_source}",
        )
    ]
    if not model_id:
        return facts + [Fact("Registry binding", "?", UNCHECKED, "no model id to look up")]
    try:
        bound = registry.model(model_id)
        block = chain.block()
    except ChainError as error:
        return facts + [Fact("Registry binding", model_id, UNCHECKED, str(error))]
    if not bound["registered_at"]:
        return facts + [
            Fact(
                "Registry binding",
                "not registered",
                FAILED,
                f"registry.models({short(model_id)}) at block {block}: no verifier bound to this model id",
            )
        ]
    facts.append(
        Fact(
            "Registry binding",
            f"model_id -> verifier {bound['verifier']}",
            VERIFIED,
            f"registry.models({short(model_id)}) at block {block}: registered in block "
            f"{bound['registered_at']} by registrar {bound['registrar']}",
        )
    )
    if bound["deprecated_at"]:
        facts.append(Fact("Model status", "deprecated", WARNING,
                          f"registry.models({short(model_id)}): deprecated in block {bound['deprecated_at']}; "
                          f"proofs recorded before stay valid, new ones are refused"))
    facts.append(verifier_code_fact(chain, package, bound["verifier"]))
    return facts


def verifier_code_fact(chain: ChainView, package: CircuitPackage | None, address: str) -> Fact:
    """The code at the bound verifier address is what the package's Verifier.json creates."""
    if package is None:
        return Fact("Verifier contract", address, UNCHECKED, "no package: its Verifier.json cannot be compared")
    try:
        w3 = chain.client.w3
        deployed = bytes(chain.client.rpc(lambda: w3.eth.get_code(address)))
        # eth_call of the creation code runs the constructor and returns the runtime code it deploys
        expected = bytes(chain.client.rpc(lambda: w3.eth.call({"data": package.verifier_artifact()["bytecode"]})))
    except (ChainError, ValueError, OSError) as error:
        return Fact("Verifier contract", address, UNCHECKED, f"could not read the code: {error}")
    except Exception as error:  # noqa: BLE001 - a node that refuses creation eth_call: say so, do not guess
        return Fact(
            "Verifier contract", address, UNCHECKED, f"the node would not run the creation code: {type(error).__name__}"
        )
    if deployed and deployed == expected:
        return Fact(
            "Verifier contract",
            address,
            VERIFIED,
            f"runtime code ({len(deployed)} bytes, keccak {short('0x' + keccak(deployed).hex())}) equals "
            f"what the package's Verifier.json deploys (eth_call of its creation code)",
        )
    return Fact(
        "Verifier contract",
        address,
        FAILED,
        f"runtime code at {address} ({len(deployed)} bytes) is not what the package's Verifier.json deploys "
        f"({len(expected)} bytes)",
    )


# ---- one proof ----


@dataclass(frozen=True)
class ProofCheck:
    facts: tuple[Fact, ...]
    verified: bool
    verify_ms: float
    inputs: tuple[Table, ...]
    outputs: tuple[Table, ...]
    proven_outputs: list[np.ndarray] | None  # decoded, for plots; None unless verified


def check_one_proof(package: CircuitPackage | None, proof: Proof, expected_hash: str | None = None) -> ProofCheck:
    facts = []
    if expected_hash is not None:
        if proof.proof_hash.lower() == expected_hash.lower():
            facts.append(
                Fact("Proof hash", proof.proof_hash, VERIFIED, "keccak256 of the document's proof bytes recomputed")
            )
        else:
            facts.append(
                Fact(
                    "Proof hash",
                    proof.proof_hash,
                    FAILED,
                    f"the document's proof bytes hash to {proof.proof_hash}, not {expected_hash}: it is another proof",
                )
            )
    if package is None:
        facts.append(Fact("Proof", "not re-verified", UNCHECKED, "no circuit package (verification key) for its model"))
        return ProofCheck(tuple(facts), False, 0.0, (), (), None)
    started = time.perf_counter()
    verdict = check_proof(package, proof)
    verify_ms = (time.perf_counter() - started) * 1000
    how = f"ezkl.verify with the key of model {short(package.model_id, 26)} at {now_iso()} ({verify_ms:.0f} ms)"
    if verdict.valid:
        facts.append(Fact("Proof", "verified", VERIFIED, how))
    else:
        facts.append(Fact("Proof", "verification failed", FAILED, f"{how}: {verdict.reason}"))
    facts.append(
        Fact(
            "Rows in the proof",
            str(proof.rows),
            UNPROVEN,
            f"the document's `rows` field; the circuit proves {package.batch_size} row(s), padding included",
        )
    )
    inputs, outputs, proven = _tensors(package, proof, verdict.valid)
    return ProofCheck(tuple(facts), verdict.valid, verify_ms, inputs, outputs, proven)


def _tensors(
    package: CircuitPackage, proof: Proof, valid: bool
) -> tuple[tuple[Table, ...], tuple[Table, ...], list | None]:
    status = VERIFIED if valid else FAILED
    note = (
        "decoded from the proof's public instances, which the verification checked"
        if valid
        else "decoded from the instances of a proof that did NOT verify: nothing here is proven"
    )
    visibility = package.manifest["visibility"]
    inputs: tuple[Table, ...] = ()
    outputs: tuple[Table, ...] = ()
    proven = None
    try:
        if visibility["input"] == "public":
            inputs = tuple(
                _table(entry["name"], array, note, status)
                for entry, array in zip(package.inputs, decode_inputs(package, proof), strict=False)
            )
        elif visibility["input"] == "hashed":
            inputs = (
                Table(
                    "input commitment",
                    ("Poseidon hash of the quantized inputs",),
                    ((proven_input_hash(package, proof),),),
                    note,
                    (status,),
                ),
            )
        else:
            inputs = (
                Table(
                    "input",
                    ("private",),
                    (("the input is private: the proof does not reveal or bind it publicly",),),
                    "",
                    (UNPROVEN,),
                ),
            )
        if visibility["output"] == "public":
            proven = decode_outputs(package, proof)
            outputs = tuple(_table(entry["name"], array, note, status)
                            for entry, array in zip(package.outputs, proven, strict=False))
        elif visibility["output"] == "hashed":
            n_in, _ = _instance_layout(package)
            outputs = (
                Table(
                    "output commitment",
                    ("Poseidon hash of the outputs",),
                    ((proof.instance_felts[n_in],),),
                    note,
                    (status,),
                ),
            )
    except (ValueError, IndexError, KeyError) as error:
        outputs = (Table("outputs", ("error",), ((f"the instances cannot be decoded: {error}",),), "", (FAILED,)),)
    return inputs, outputs, proven if valid else None


def _table(name: str, array: np.ndarray, note: str, status: str) -> Table:
    rows = []
    for index, row in enumerate(array):
        values = np.ravel(row)
        shown = ", ".join(f"{v:.6g}" for v in values[:MAX_VALUES_SHOWN])
        if values.size > MAX_VALUES_SHOWN:
            shown += f", ... ({values.size} values)"
        rows.append((str(index), shown))
    return Table(name, ("row", "values"), tuple(rows), note, tuple(status for _ in rows))


# ---- the chain record of one proof ----


def attestation_facts(
    chain: ChainView | None,
    chain_problem: str,
    lookup: RecordLookup,
    proof_hash: str,
    model_id: str | None,
    proof: Proof | None,
) -> list[Fact]:
    record = lookup.record
    facts: list[Fact] = []
    if record is None:
        facts.append(Fact("Verifier record", "none", UNPROVEN if lookup.answered else UNCHECKED, lookup.note))
    else:
        from serve.verifier.client import status_name

        mode = "anchor" if record.mode == 1 else "onchain"
        facts.append(
            Fact(
                "Verifier record",
                f"{status_name(record)} ({mode} mode)",
                UNPROVEN,
                f"{lookup.note}: what the verifier says; checked against the chain below",
            )
        )
        for label, value in (
            ("Reported transaction", record.tx_hash),
            ("Reported block", str(record.block_number or "")),
            ("Reported Merkle root", record.merkle_root),
            ("Reported Merkle path", ", ".join(record.merkle_path)),
        ):
            if value:
                facts.append(Fact(label, value, UNPROVEN, "as the verifier reports it; checked below"))
    leaf, digest = None, None
    if proof is not None and model_id:
        digest = instances_hash(proof.instances)
        leaf = leaf_of(bytes.fromhex(model_id[2:]), bytes.fromhex(proof_hash[2:]), digest)
        if record is not None and record.leaf:
            same = record.leaf.lower() == "0x" + leaf.hex()
            facts.append(
                Fact(
                    "Merkle leaf",
                    "0x" + leaf.hex(),
                    VERIFIED if same else FAILED,
                    "keccak256(abi.encode(model_id, proof_hash, keccak256(instances))) recomputed from the "
                    "proof document"
                    + (
                        "; equals the verifier's leaf"
                        if same
                        else f"; the verifier's leaf is {record.leaf}: other instances were submitted"
                    ),
                )
            )
    elif record is not None and record.leaf:
        facts.append(Fact("Merkle leaf", record.leaf, UNCHECKED, "no proof document: the leaf cannot be recomputed"))
    if chain is None or chain.registry is None:
        problem = chain_problem if chain is None else chain.problem
        if record is not None or proof is not None:
            facts.append(Fact("On chain", "not checked", UNCHECKED, problem))
        return facts
    try:
        facts += _chain_checks(chain, record, proof_hash, model_id, leaf, digest)
    except ChainError as error:
        facts.append(Fact("On chain", "not checked", UNCHECKED, f"chain error: {error}"))
    return facts


def _chain_checks(
    chain: ChainView, record, proof_hash: str, model_id: str | None, leaf: bytes | None, digest: bytes | None
) -> list[Fact]:
    registry = chain.registry
    facts = []
    attested = registry.attestation(proof_hash)
    block = chain.block()
    if attested["block_number"]:
        matches = (model_id is None or attested["model_id"].lower() == model_id.lower()) and (
            digest is None or attested["instances_hash"] == "0x" + digest.hex()
        )
        facts.append(
            Fact(
                "Attested on chain",
                f"block {attested['block_number']}",
                VERIFIED if matches else FAILED,
                f"registry.attestations({short(proof_hash)}) at block {block}: model "
                f"{short(attested['model_id'])}, instances hash {short(attested['instances_hash'])}"
                + ("" if matches else ": NOT this proof's model and instances"),
            )
        )
    anchored_path = record is not None and record.merkle_root
    if anchored_path:
        root = record.merkle_root
        path = list(record.merkle_path)
        use_leaf = leaf if leaf is not None else bytes.fromhex(record.leaf[2:])
        local = verify_path(use_leaf, [bytes.fromhex(p[2:]) for p in path], bytes.fromhex(root[2:]))
        on_chain = registry.is_anchored(use_leaf, path, root)
        block = chain.block()
        anchor = registry.anchor_info(root)
        whose = "the leaf recomputed from the proof document" if leaf is not None else "the verifier's leaf"
        how = (
            f"isAnchored(leaf, path, root) returned {str(on_chain).lower()} at block {block}, for {whose}; "
            f"the path also recomputed locally ({'matches' if local else 'does NOT match'})"
        )
        if on_chain and anchor["block_number"]:
            how += (
                f"; root anchored in block {anchor['block_number']} by anchorer {anchor['anchorer']} "
                f"({anchor['count']} leaves; the anchorer's word that they verified)"
            )
        status = VERIFIED if on_chain and local and leaf is not None else (FAILED if not on_chain else UNCHECKED)
        facts.append(Fact("Anchored on chain", f"root {short(root)}", status, how))
    elif not attested["block_number"]:
        from serve.verifier.client import status_name

        claimed = record is not None and status_name(record) in ("anchored", "attested")
        facts.append(
            Fact(
                "On chain",
                "not recorded",
                FAILED if claimed else WARNING,
                f"registry.attestations({short(proof_hash)}) is empty at block {block}"
                + (
                    "; the verifier says it is final, the chain does not"
                    if claimed
                    else "; the verifier has not anchored it yet"
                    if record is not None
                    else "; not submitted to a verifier known to this audit"
                ),
            )
        )
    if record is not None and record.tx_hash:
        facts.append(_transaction_fact(chain, record))
    return facts


def _transaction_fact(chain: ChainView, record) -> Fact:
    registry = chain.registry
    receipt = chain.client.receipt(record.tx_hash)
    if receipt is None:
        return Fact(
            "Transaction",
            record.tx_hash,
            FAILED if record.block_number else UNCHECKED,
            "eth_getTransactionReceipt: the chain knows no mined transaction with this hash",
        )
    problems = []
    if receipt["status"] != 1:
        problems.append("it reverted")
    if (receipt.get("to") or "").lower() != registry.address.lower():
        problems.append(f"it was sent to {receipt.get('to')}, not the registry")
    if record.block_number and receipt["blockNumber"] != record.block_number:
        problems.append(f"mined in block {receipt['blockNumber']}, the verifier says {record.block_number}")
    events = []
    for name in ("Anchored", "Attested"):
        for log in getattr(registry.contract.events, name)().process_receipt(receipt, errors=_discard()):
            events.append((name, log["args"]))
    # a resent anchor or attest is a no-op without an event, so a missing event is told, not failed
    if record.merkle_root:
        evented = any(name == "Anchored" and hex32(args["root"]) == record.merkle_root.lower() for name, args in events)
    else:
        evented = any(
            name == "Attested" and hex32(args["proofHash"]) == record.proof_hash.lower() for name, args in events
        )
    how = (
        f"eth_getTransactionReceipt: status {receipt['status']}, block {receipt['blockNumber']}, "
        f"gas {receipt['gasUsed']}"
    )
    return Fact(
        "Transaction",
        record.tx_hash,
        FAILED if problems else VERIFIED,
        how
        + ("; " + "; ".join(problems) if problems else "")
        + ("; the registry's event for it is in the receipt" if evented else "; it emitted no event for it"),
    )


def _discard():
    from web3.logs import DISCARD

    return DISCARD
