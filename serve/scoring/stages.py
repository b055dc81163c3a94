"""The two Ray Data stages of a scoring job, each an actor class that loads once in __init__.

Every dataset record is one proof batch: `batch_id` and a `payload` holding its row ids and
input rows. Inference adds the ONNX Runtime outputs; proving turns the record into a JSON
`result` with its proof(s), per-row outputs and per-row errors.
"""

from __future__ import annotations

import json

import numpy as np
import ray

from circuits import Prover, decode_outputs
from serve.scoring.payload import pack, unpack
from serve.scoring.shipping import PackageSource


def proof_id_of(job_id: str, batch_id: int, part: int | None = None) -> str:
    suffix = "" if part is None else f"-r{part}"  # rows proven alone after their batch failed
    return f"{job_id}-b{batch_id:07d}{suffix}"


class InferenceStage:
    def __init__(self, source: PackageSource):
        from serve.app.runtime import create_session  # CUDA only when Ray gave this actor a GPU

        package = source.load()
        # one ORT thread: the cores belong to the provers
        self.session = create_session(str(package.onnx_path), use_gpu=bool(ray.get_gpu_ids()), threads=1)
        self.input = self.session.get_inputs()[0]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, errors = [], []
        for payload in batch["payload"]:
            arrays = unpack(payload)
            try:
                result = self._run(arrays["inputs"])
                outputs.append(pack(**{f"out{i}": array for i, array in enumerate(result)}))
                errors.append("")
            except Exception as error:  # noqa: BLE001 - reported per row, the job goes on
                outputs.append(b"")
                errors.append(f"inference failed: {error}")
        return {**batch, "outputs": np.array(outputs, dtype=object), "error": np.array(errors, dtype=object)}

    def _run(self, rows: np.ndarray) -> list[np.ndarray]:
        fixed = self.input.shape[0] if isinstance(self.input.shape[0], int) else None
        feed = rows.astype(np.float32)
        if fixed and fixed > len(rows):  # a fixed-batch model: pad, then drop the padding
            feed = np.concatenate([feed, np.zeros((fixed - len(rows), *feed.shape[1:]), np.float32)])
        return [
            np.asarray(out)[: len(rows)].astype(np.float64) for out in self.session.run(None, {self.input.name: feed})
        ]


class ProvingStage:
    def __init__(self, source: PackageSource, job_id: str, attest: bool = True):
        self.package = source.load()
        self.prover = Prover(self.package)
        self.job_id = job_id
        self.attest = attest
        self.output_names = [entry["name"] for entry in self.package.outputs]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [
            json.dumps(self._score(int(batch_id), payload, outputs, error))
            for batch_id, payload, outputs, error in zip(
                batch["batch_id"], batch["payload"], batch["outputs"], batch["error"], strict=False
            )
        ]
        return {"batch_id": batch["batch_id"], "result": np.array(results, dtype=object)}

    def _score(self, batch_id: int, payload: bytes, outputs: bytes, error: str) -> dict:
        arrays = unpack(payload)
        row_ids, rows = arrays["row_ids"], arrays["inputs"]
        if error:
            return {"batch_id": batch_id, "proofs": [], "errors": [self._error(r, "inference", error) for r in row_ids]}
        computed = [array for _, array in sorted(unpack(outputs).items(), key=lambda item: int(item[0][3:]))]
        if not self.attest:
            return {
                "batch_id": batch_id,
                "errors": [],
                "proofs": [{"proof_id": None, "rows": self._rows(row_ids, computed, None)}],
            }
        try:
            return {
                "batch_id": batch_id,
                "errors": [],
                "proofs": [self._prove(batch_id, None, row_ids, rows, computed)],
            }
        except Exception as batch_error:  # noqa: BLE001 - find the row(s) at fault, keep the rest
            if len(row_ids) == 1:
                return {"batch_id": batch_id, "proofs": [], "errors": [self._prove_error(row_ids[0], batch_error)]}
        proofs, errors = [], []
        for part, row_id in enumerate(row_ids):
            try:
                single = [array[part : part + 1] for array in computed]
                proofs.append(self._prove(batch_id, part, row_ids[part : part + 1], rows[part : part + 1], single))
            except Exception as row_error:  # noqa: BLE001
                errors.append(self._prove_error(row_id, row_error))
        return {"batch_id": batch_id, "proofs": proofs, "errors": errors}

    def _prove(self, batch_id: int, part: int | None, row_ids, rows, computed) -> dict:
        proof = self.prover.prove(rows)
        proven = decode_outputs(self.package, proof)
        return {
            "proof_id": proof_id_of(self.job_id, batch_id, part),
            "proof": proof.to_json(),
            "proof_hash": proof.proof_hash,
            "rows": self._rows(row_ids, computed, proven),
        }

    def _rows(self, row_ids, computed: list[np.ndarray], proven: list[np.ndarray] | None) -> list[dict]:
        rows = []
        for index, row_id in enumerate(row_ids):
            row = {
                "row_id": int(row_id),
                "row_index": index,
                "outputs": {
                    name: np.ravel(array[index]).tolist()
                    for name, array in zip(self.output_names, computed, strict=False)
                },
            }
            if proven is not None:
                diff = max(
                    float(np.max(np.abs(np.ravel(c[index]) - np.ravel(p[index])), initial=0.0))
                    for c, p in zip(computed, proven, strict=False)
                )
                row |= {"max_abs_diff": diff, "outputs_agree": diff <= self.package.tolerance}
            rows.append(row)
        return rows

    @classmethod
    def _prove_error(cls, row_id, error) -> dict:
        # EZKL's message names the failing step but not the likely cause
        return cls._error(
            row_id,
            "prove",
            f"proving failed ({error}); a value may be outside the range the circuit was calibrated for",
        )

    @staticmethod
    def _error(row_id, stage: str, error) -> dict:
        reason = str(error).strip() or type(error).__name__
        return {"row_id": int(row_id), "stage": stage, "reason": reason[:500]}
