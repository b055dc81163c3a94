"""A proof as zkserve passes it around: EZKL's proof.json plus the model it belongs to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eth_hash.auto import keccak


def felt_to_uint(hex_felt: str) -> int:
    """EZKL writes field elements as little-endian hex; the EVM verifier wants uint256."""
    return int.from_bytes(bytes.fromhex(hex_felt), "little")


@dataclass
class Proof:
    model_id: str
    data: dict  # EZKL's proof.json; only `proof` and `instances` are checked by verification
    # Real rows in the proof (the rest of the batch is zero padding). The proof does not bind
    # a number: the prover and `circuits.instances.bind` (run by verify_proof) derive it from
    # the proven instances; a document's own "rows" is only the writer's claim until then.
    rows: int = 1
    meta: dict = field(default_factory=dict)  # never bound by the proof: show it as unproven
    rows_proven: bool = False  # True once `rows` was derived from the instances

    @property
    def proof_bytes(self) -> bytes:
        return bytes(self.data["proof"])

    @property
    def instance_felts(self) -> list[str]:
        """The public instances as EZKL hex felts, flattened in circuit order."""
        return [felt for column in self.data["instances"] for felt in column]

    @property
    def instances(self) -> list[int]:
        """The public instances as the uint256 list `verifyProof(bytes, uint256[])` takes."""
        return [felt_to_uint(felt) for felt in self.instance_felts]

    @property
    def proof_hash(self) -> str:
        """keccak256 of the raw proof bytes: the id the registry records on chain."""
        return "0x" + keccak(self.proof_bytes).hex()

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "rows": self.rows, "meta": self.meta, "ezkl": self.data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Proof:
        try:
            document = json.loads(raw)
            if not isinstance(document["ezkl"], dict) or not isinstance(document.get("meta") or {}, dict):
                raise TypeError("ezkl and meta must be objects")
            return cls(model_id=str(document["model_id"]), data=document["ezkl"],
                       rows=int(document.get("rows", 1)), meta=document.get("meta") or {})
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a zkserve proof document: {error}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Proof:
        return cls.from_json(Path(path).read_bytes())
