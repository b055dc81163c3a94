"""The data plane: one neutral request in, one neutral response out, whatever the protocol.

Checks the request against the model, refuses attested rows outside the circuit's input domain,
runs ONNX Runtime (in this process on CPU nodes, through the Predictor on GPU nodes) and hands
attested rows to the proof service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from serve.app.models import ModelSpec
from serve.app.proofs import ProofService
from serve.app.store import ProofJob
from serve.errors import InvalidArgument, NotFound, OutOfRange
from serve.protocol.types import (
    PROOF_TENSOR,
    AttestMode,
    InferRequest,
    InferResponse,
    ProofRecord,
    ProofStatus,
    Tensor,
    new_proof_id,
    proof_parameters,
)
from serve.protocol.validation import check_inputs, check_outputs

Infer = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


class DataPlane:
    def __init__(self, specs: Mapping[str, ModelSpec], infer: Mapping[str, Infer], proofs: ProofService,
                 default_attest: AttestMode):
        self.specs = specs
        self.infer_fns = infer  # model -> async ORT call
        self.proofs = proofs
        self.default_attest = default_attest

    def spec(self, name: str, version: str = "") -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise NotFound(f"model {name!r} is not served here; models: {', '.join(sorted(self.specs))}")
        if version not in ("", "1"):
            raise NotFound(f"model {name} has only version 1, not {version!r}")
        return spec

    async def infer(self, request: InferRequest) -> tuple[InferResponse, ProofRecord | None]:
        spec = self.spec(request.model, request.version)
        check_outputs(request, spec, extra=(PROOF_TENSOR,))
        inputs = check_inputs(request, spec)
        attest = request.attest or self.default_attest
        if attest is not AttestMode.NONE:
            self._check_attestable(spec, inputs)
            self.proofs.admit(spec.name)
        outputs = await self.infer_fns[spec.name](inputs)
        record = None
        if attest is not AttestMode.NONE:
            job = ProofJob(new_proof_id(), spec.name, inputs, outputs)
            record = await self.proofs.create(spec, job)
            if attest is AttestMode.SYNC:
                record = await self.proofs.prove(job)
            else:
                self.proofs.prove_later(job)
        wanted = set(request.outputs)
        tensors = [Tensor.of(t.name, outputs[t.name]) for t in spec.outputs if not wanted or t.name in wanted]
        if record is not None and record.status is ProofStatus.DONE and (not wanted or PROOF_TENSOR in wanted):
            proof = np.empty(1, dtype=object)
            proof[0] = record.proof
            tensors.append(Tensor(PROOF_TENSOR, "BYTES", proof))
        response = InferResponse(model=spec.name, id=request.id, outputs=tuple(tensors),
                                 parameters=proof_parameters(record, spec.model_id, spec.insecure_srs),
                                 raw_output=request.raw_output)
        return response, record

    def _check_attestable(self, spec: ModelSpec, inputs: dict[str, np.ndarray]) -> None:
        rows = len(next(iter(inputs.values())))
        if rows > spec.circuit_batch_size:
            raise InvalidArgument(f"attested requests to {spec.name} carry at most {spec.circuit_batch_size} row(s) "
                                  f"(the circuit's batch size), got {rows}; split the request or use attest=none")
        for name, rows_of_input in inputs.items():
            violation = spec.input_domain.violation(name, rows_of_input)
            if violation is not None:
                raise OutOfRange(violation.message())

    def proof(self, proof_id: str) -> ProofRecord:
        if not proof_id:
            raise InvalidArgument("proof_id is empty")
        record = self.proofs.get(proof_id)
        if record is None:
            raise NotFound(f"no proof with id {proof_id!r}")
        return record
