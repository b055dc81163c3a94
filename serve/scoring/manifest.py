"""The job manifest: what a job directory was started with, so a re-run can only resume it.

Only arguments that change the results are compared (model key, input content, proof
batch, whether rows are proven). Resource settings (provers, threads) may differ between
runs; so may --submit, which only adds attestation of proofs already made.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from serve.files import write_atomically
from serve.scoring.layout import JobLayout


class JobMismatch(RuntimeError):
    """The output directory holds a job started with other arguments."""


@dataclass(frozen=True)
class JobManifest:
    model: str  # as given: demo name or package directory
    model_id: str  # hash of the verification key: the package really used
    input_path: str
    input_sha256: str
    proof_batch: int
    attest: bool
    sample: float | None = None  # fraction proven of an audit-sampled job; None proves every row
    seed: str | None = None  # a sampled job's stated seed

    def compared(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "input_path"}



def open_job(layout: JobLayout, wanted: JobManifest) -> bool:
    """Creates the job, or checks a re-run matches it. True when resuming an existing job."""
    if not layout.manifest.is_file():
        if layout.root.exists() and any(path.name != ".lock" for path in layout.root.iterdir()):
            raise JobMismatch(f"{layout.root} is not empty and holds no scoring job ({layout.manifest.name} missing); "
                              f"choose an empty or new --output directory")
        layout.create()
        write_atomically(layout.manifest, json.dumps(asdict(wanted), indent=2).encode())
        return False
    existing = json.loads(layout.manifest.read_text())
    differences = [f"{key}: job has {existing.get(key)!r}, this run has {value!r}"
                   for key, value in wanted.compared().items() if existing.get(key) != value]
    if differences:
        raise JobMismatch(f"{layout.root} holds a scoring job started with other arguments, refusing to mix results "
                          f"({'; '.join(differences)}). Re-run with the job's arguments to resume it, "
                          f"or use another --output directory.")
    layout.create()
    return True
