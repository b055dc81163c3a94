"""A proof document checked against its circuit's shape before anything is allocated for it.

A Verify/Submit request carries a JSON document (``circuits.Proof.to_json()``). Every size in
it is bounded here, from the package itself, before the proof bytes are built, hashed or given
to EZKL: the raw length, the proof's byte count and the instance count (both read from the
package's Solidity verifier, which checks exactly these on chain), and each instance's range
(a BN254 scalar field element). Anything else is ``InvalidArgument`` with what to send instead.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from circuits import CircuitPackage, Proof
from serve.errors import InvalidArgument, PayloadTooLarge

log = logging.getLogger(__name__)

# The BN254 scalar field: EZKL's instances are elements of it.
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617
# Bound on any request's document before we know its circuit (the gRPC frame bound is 4 MiB).
MAX_DOCUMENT_BYTES = 1024 * 1024
# A document is the proof as a JSON list of ints (<= 4 chars a byte), the instances as 64-hex
# strings, and small metadata; this is room for that metadata.
DOCUMENT_SLACK_BYTES = 64 * 1024
# Fallback when the verifier contract does not state the proof length (a template we do not know).
FALLBACK_MAX_PROOF_BYTES = 256 * 1024
# A zkserve document nests 4 deep (ezkl.instances[i][j]); deep nesting would overflow the C
# stack of the JSON parser (eth-account raises the recursion limit to 100000), so it is
# measured before parsing.
MAX_NESTING = 32
_JSON_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
FELT_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_PROOF_LEN_RE = re.compile(r"eq\(\s*(0x[0-9a-fA-F]+)\s*,\s*proof\.length\s*\)")
_NUM_INSTANCES_RE = re.compile(r"(0x[0-9a-fA-F]+)\)\s*//\s*num_instances")
_HOW = "send circuits.Proof.to_json() of a proof made by this model's prover"


@dataclass(frozen=True)
class ProofShape:
    """What a proof of one circuit looks like: exact when read from its verifier contract."""

    proof_bytes: int  # the exact length when `exact`, else an upper bound
    num_instances: int
    batch_size: int
    exact: bool

    @property
    def max_document_bytes(self) -> int:
        return min(MAX_DOCUMENT_BYTES, DOCUMENT_SLACK_BYTES + 4 * self.proof_bytes + 70 * self.num_instances)


def _instances_from_settings(package: CircuitPackage) -> int:
    visibility = package.manifest["visibility"]
    count = 0
    for kind, entries in (("input", package.inputs), ("output", package.outputs)):
        if visibility[kind] == "public":
            count += sum(math.prod(entry["shape"]) for entry in entries)
        elif visibility[kind] == "hashed":
            count += 1
    return count


def proof_shape(package: CircuitPackage) -> ProofShape:
    """The proof length and instance count the package's Solidity verifier demands."""
    source = package.verifier_sol_path.read_text()
    length, instances = _PROOF_LEN_RE.search(source), _NUM_INSTANCES_RE.search(source)
    if length and instances:
        return ProofShape(int(length.group(1), 16), int(instances.group(1), 16), package.batch_size, exact=True)
    log.warning("%s: Verifier.sol does not state the proof length; bounding proofs at %d bytes",
                package.name, FALLBACK_MAX_PROOF_BYTES)
    return ProofShape(FALLBACK_MAX_PROOF_BYTES, _instances_from_settings(package), package.batch_size, exact=False)


def check_raw_size(raw: bytes) -> None:
    """The first check on a request, before the model is even looked up."""
    if not raw:
        raise InvalidArgument(f"proof is empty; {_HOW}")
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"proof document is {len(raw)} bytes, over the verifier's {MAX_DOCUMENT_BYTES} "
                              "byte bound; "
                              f"{_HOW}")


def _check_nesting(raw: bytes) -> None:
    """Refuses nesting deeper than MAX_NESTING without recursion, in linear time: strings
    dropped, only brackets kept, the depth is the running sum's maximum."""
    brackets = np.frombuffer(_JSON_STRING_RE.sub(b"", raw).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if brackets.size and int(np.cumsum(np.where((brackets == 91) | (brackets == 123), 1, -1)).max()) > MAX_NESTING:
        raise InvalidArgument(f"proof document nests deeper than {MAX_NESTING} levels; {_HOW}")


def _proof_bytes(value: object, shape: ProofShape, name: str) -> list[int]:
    if not isinstance(value, list):
        raise InvalidArgument(f"ezkl.proof must be a list of bytes (ints 0..255), got {type(value).__name__}; {_HOW}")
    if len(value) > shape.proof_bytes or (shape.exact and len(value) != shape.proof_bytes):
        expected = f"exactly {shape.proof_bytes}" if shape.exact else f"at most {shape.proof_bytes}"
        raise InvalidArgument(f"ezkl.proof has {len(value)} bytes; proofs of {name} have {expected}")
    for index, item in enumerate(value):
        if type(item) is not int or not 0 <= item <= 255:  # noqa: E721 - bool is an int subclass, refused
            raise InvalidArgument(f"ezkl.proof[{index}] is {repr(item)[:20]}, not a byte (an int 0..255)")
    return value


def _instances(value: object, shape: ProofShape, name: str) -> list[list[str]]:
    if not isinstance(value, list) or not all(isinstance(column, list) for column in value):
        raise InvalidArgument(f"ezkl.instances must be a list of lists of field elements (hex strings); {_HOW}")
    count = sum(len(column) for column in value)
    if count != shape.num_instances:
        raise InvalidArgument(f"ezkl.instances holds {count} field elements; "
                              f"proofs of {name} have {shape.num_instances}")
    for column in value:
        for felt in column:
            if not isinstance(felt, str) or not FELT_RE.match(felt):
                raise InvalidArgument(f"instance {str(felt)[:80]!r} is not a field element "
                                      "(64 hex digits, little-endian)")
            if int.from_bytes(bytes.fromhex(felt), "little") >= FIELD_MODULUS:
                raise InvalidArgument(f"instance {felt} is not below the BN254 field modulus")
    return value


def parse_proof(raw: bytes, package: CircuitPackage, shape: ProofShape) -> Proof:
    """A ``Proof`` whose every field has been checked against ``shape``; raises InvalidArgument."""
    check_raw_size(raw)
    if len(raw) > shape.max_document_bytes:
        raise PayloadTooLarge(f"proof document is {len(raw)} bytes; documents for {package.name} are at most "
                              f"{shape.max_document_bytes}; {_HOW}")
    _check_nesting(raw)
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the parser's stack
        raise InvalidArgument(f"proof is not a zkserve proof document (not JSON: {str(error)[:120]}); {_HOW}") from None
    if not isinstance(document, dict) or not isinstance(document.get("ezkl"), dict):
        raise InvalidArgument(f"proof is not a zkserve proof document (no `ezkl` object); {_HOW}")
    model_id, rows, data = document.get("model_id"), document.get("rows", 1), document["ezkl"]
    meta = document.get("meta") or {}
    if not isinstance(model_id, str) or len(model_id) > 80:
        raise InvalidArgument(f"proof document's model_id must be a 0x-hex string; {_HOW}")
    if type(rows) is not int or not 1 <= rows <= shape.batch_size:  # noqa: E721
        raise InvalidArgument(f"proof document's rows must be an int 1..{shape.batch_size} (the circuit's batch size)")
    if not isinstance(meta, dict):
        raise InvalidArgument("proof document's meta must be an object")
    _proof_bytes(data.get("proof"), shape, package.name)
    _instances(data.get("instances"), shape, package.name)
    return Proof(model_id=model_id, data=data, rows=rows, meta=meta)
