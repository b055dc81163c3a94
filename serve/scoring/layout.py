"""Where a scoring job keeps its files inside the output directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "job.json"  # the arguments and input hash a re-run must match

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"  # written once the job has finished

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"  # per-chunk results, each committed by one rename

    @property
    def proofs(self) -> Path:
        return self.root / "proofs"

    @property
    def results(self) -> Path:
        return self.root / "results.parquet"

    @property
    def errors(self) -> Path:
        return self.root / "errors.csv"

    @property
    def rows(self) -> Path:
        return self.root / "rows"  # a sampled job's inferred rows, one file per input chunk

    @property
    def inferred(self) -> Path:
        return self.rows / "complete.json"  # written once every input chunk is inferred

    @property
    def commitment(self) -> Path:
        return self.root / "commitment.json"  # the Merkle root of all rows, and the sample seed

    @property
    def attestations(self) -> Path:
        return self.root / "attestations.json"  # a sampled job's proof statuses from --submit

    def rows_chunk(self, index: int) -> Path:
        return self.rows / f"rows-{index:06d}.parquet"

    def proof_path(self, proof_id: str) -> Path:
        return self.proofs / f"{proof_id}.json"

    def create(self) -> None:
        for folder in (self.root, self.chunks, self.proofs, self.rows):
            folder.mkdir(parents=True, exist_ok=True)


