"""--submit: every proof of the job goes to the verifier service; each row gets its status.

Submit is idempotent on the proof hash, so a re-run resubmits safely. Rows whose proof
does not reach a final state in time keep the last status seen (e.g. `queued`).
"""

from __future__ import annotations

import time

import pyarrow as pa

from circuits import Proof
from serve.files import write_atomically
from serve.scoring.chunks import table_bytes
from serve.scoring.layout import JobLayout


class SubmitError(RuntimeError):
    """The verifier service could not be reached or refused the job's proofs."""


def submit_proofs(layout: JobLayout, proof_ids: list[str], model_id: str, target: str,
                  timeout_s: float = 120.0) -> dict[str, str]:
    """Submits each proof (idempotent) and waits for final statuses; proof_id -> status."""
    import grpc  # the verifier client pulls in grpc and the generated stubs; only --submit needs them

    from serve.verifier.client import VerifierClient, status_name

    statuses: dict[str, str] = {}
    try:
        with VerifierClient(target) as client:
            client.wait_ready(timeout_s=30)
            hashes = {}
            for proof_id in proof_ids:
                proof = Proof.load(layout.proof_path(proof_id))
                statuses[proof_id] = status_name(client.submit(model_id, proof).attestation)
                hashes[proof_id] = proof.proof_hash
            deadline = time.monotonic() + timeout_s
            for proof_id in proof_ids:
                try:
                    statuses[proof_id] = status_name(client.wait_final(hashes[proof_id],
                                                                       max(0.5, deadline - time.monotonic())))
                except TimeoutError:
                    statuses[proof_id] = status_name(client.get(hashes[proof_id]))
    except (grpc.RpcError, TimeoutError) as error:
        detail = error.details() if isinstance(error, grpc.RpcError) else str(error)
        raise SubmitError(
            f"verifier at {target}: {detail}; the scored rows are kept, re-run with --submit to retry"
        ) from None
    return statuses


def submit_job(layout: JobLayout, scored: pa.Table, model_id: str, target: str, timeout_s: float = 120.0) -> pa.Table:
    """Returns `scored` with an `attestation` column, also written to results.parquet."""
    proof_ids = sorted({pid for pid in scored.column("proof_id").to_pylist() if pid})
    statuses = submit_proofs(layout, proof_ids, model_id, target, timeout_s)
    column = pa.array([statuses.get(pid) for pid in scored.column("proof_id").to_pylist()], pa.string())
    if "attestation" in scored.column_names:
        scored = scored.drop_columns(["attestation"])
    attested = scored.append_column("attestation", column)
    write_atomically(layout.results, table_bytes(attested))
    return attested
