"""The data plane: one neutral request in, one neutral response out, whatever the protocol.

Checks the request against the model, refuses attested rows outside the circuit's input domain,
runs ONNX Runtime (in this process on CPU nodes, through the Predictor on GPU nodes) and hands
attested rows to the proof service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from serve.app.models import ModelSpec, TensorSpec
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


def _output(spec: TensorSpec, array: np.ndarray) -> Tensor:
    """ORT's output as a response tensor (the datatype the model declares, when ORT returned it)."""
    if isinstance(array, np.ndarray) and array.dtype == spec.numpy_dtype and spec.datatype != "BYTES":
        return Tensor(spec.name, spec.datatype, array)
    return Tensor.of(spec.name, array)


class DataPlane:
    """Holds the served-model table; ``add``/``remove`` change it while requests flow (live models)."""

    def __init__(self, specs: Mapping[str, ModelSpec], infer: Mapping[str, Infer], proofs: ProofService,
                 default_attest: AttestMode):
        self.specs: dict[str, ModelSpec] = dict(specs)
        self.infer_fns: dict[str, Infer] = dict(infer)  # model -> async ORT call
        self.versions: dict[str, int] = {name: 1 for name in self.specs}  # bumped when a name gets a new model_id
        self.last_model_ids: dict[str, str] = {name: spec.model_id for name, spec in self.specs.items()}
        self.removed: dict[str, str] = {}  # name -> why it is gone, for a clear NOT_FOUND
        self.proofs = proofs
        self.default_attest = default_attest
        self._using: dict[tuple[str, str], int] = {}  # requests inside infer, by (name, model_id)

    # --- the model table ----------------------------------------------------------------------------
    def add(self, spec: ModelSpec, infer: Infer) -> tuple[int, ModelSpec | None]:
        """Serves ``spec`` from now on; returns its version and the spec it replaced (None if new)."""
        old = self.specs.get(spec.name)
        if self.last_model_ids.get(spec.name) == spec.model_id:  # the same model again: the same version
            version = self.versions[spec.name]
        else:
            version = self.versions.get(spec.name, 0) + 1
        self.last_model_ids[spec.name] = spec.model_id
        self.infer_fns[spec.name] = infer
        self.specs[spec.name] = spec
        self.versions[spec.name] = version
        self.removed.pop(spec.name, None)
        return version, (old if old is not None and old.model_id != spec.model_id else None)

    def remove(self, name: str) -> ModelSpec:
        """No new request reaches ``name``; requests already inside finish (see ``quiesce``)."""
        spec = self.spec(name)
        del self.specs[name], self.infer_fns[name]
        self.removed[name] = f"model {name} (version {self.versions[name]}) was removed from this server"
        return spec

    async def quiesce(self, key: tuple[str, str]) -> None:
        """Returns once no request that looked up the model ``key`` (name, model_id) is still inside ``infer``."""
        while self._using.get(key):
            await asyncio.sleep(0.02)

    def version(self, name: str) -> str:
        return str(self.versions[name])

    def spec(self, name: str, version: str = "") -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            served = ", ".join(sorted(self.specs)) or "none"
            if name in self.removed:
                raise NotFound(f"{self.removed[name]}; models: {served}")
            raise NotFound(f"model {name!r} is not served here; models: {served}")
        if version and version != spec.model_id and version != (current := str(self.versions[name])):
            raise NotFound(f"model {name} is served at version {current} (model_id {spec.model_id}), "
                           f"not version {version!r}")
        return spec

    async def infer(self, request: InferRequest) -> tuple[InferResponse, ProofRecord | None]:
        spec = self.spec(request.model, request.version)
        version = self.version(spec.name)
        infer = self.infer_fns[spec.name]
        using, inside = (spec.name, spec.model_id), self._using
        inside[using] = inside.get(using, 0) + 1  # a removal waits for this request (and its proof job)
        try:
            return await self._infer(request, spec, version, infer)
        finally:
            left = inside[using] - 1
            if left:
                inside[using] = left
            else:
                del inside[using]

    async def _infer(self, request: InferRequest, spec: ModelSpec, version: str,
                     infer: Infer) -> tuple[InferResponse, ProofRecord | None]:
        check_outputs(request, spec, extra=(PROOF_TENSOR,))
        inputs = check_inputs(request, spec)
        attest = request.attest or self.default_attest
        if attest is not AttestMode.NONE:
            self._check_attestable(spec, inputs)
            self.proofs.admit(spec.name)
        outputs = await infer(inputs)
        record = None
        if attest is not AttestMode.NONE:
            job = ProofJob(new_proof_id(), spec.name, inputs, outputs)
            record = await self.proofs.create(spec, job)
            if attest is AttestMode.SYNC:
                record = await self.proofs.prove(job)
            else:
                self.proofs.prove_later(job)
        wanted = set(request.outputs)
        tensors = [_output(t, outputs[t.name]) for t in spec.outputs if not wanted or t.name in wanted]
        if record is not None and record.status is ProofStatus.DONE and (not wanted or PROOF_TENSOR in wanted):
            proof = np.empty(1, dtype=object)
            proof[0] = record.proof
            tensors.append(Tensor(PROOF_TENSOR, "BYTES", proof))
        response = InferResponse(model=spec.name, version=version, id=request.id, outputs=tuple(tensors),
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
