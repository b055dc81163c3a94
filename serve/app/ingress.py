"""Ingress deployment: the gRPC face of the app, behind Ray Serve's gRPC proxy.

Serves ``inference.GRPCInferenceService`` (Open Inference Protocol), ``zkserve.v1.Attestation``
and ``grpc.health.v1.Health``. Ray routes a gRPC call to the method with the RPC's name, so
method names must be unique across the three services.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata

import numpy as np
from grpc_health.v1 import health_pb2
from inference import grpc_service_pb2 as oip
from ray import serve
from ray.serve.handle import DeploymentHandle
from zkserve.v1 import attestation_pb2 as pb

from serve.app import metrics, tensors
from serve.app.errors import grpc_method, invalid, not_found, too_large, unavailable
from serve.app.jobs import DONE, FINISHED, ProofJob, new_proof_id
from serve.app.models import ModelSpec
from serve.app.records import proof_record_message, tensor_message

logger = logging.getLogger("ray.serve")
ATTEST_MODES = ("none", "async", "sync")
ATTEST_OF_ENUM = {pb.ATTEST_MODE_NONE: "none", pb.ATTEST_MODE_ASYNC: "async", pb.ATTEST_MODE_SYNC: "sync"}
PROOF_TENSOR = "zk_proof"
SUBMIT_RETRIES = 2  # a prover replica that dies mid-proof gets the job again
SERVED_SERVICES = ("", "inference.GRPCInferenceService", "zkserve.v1.Attestation")


def _version() -> str:
    try:
        return metadata.version("zkserve")
    except metadata.PackageNotFoundError:
        return "0.1.0"


@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class Ingress:
    async def __init__(self, specs: dict[str, ModelSpec], predictors: dict[str, DeploymentHandle],
                       provers: dict[str, DeploymentHandle], store: DeploymentHandle, settings: dict):
        self.specs = specs
        self.predictors = predictors
        self.provers = provers
        self.store = store
        self.default_attest = settings["default_attest"]
        self.max_request_bytes = int(settings["max_request_bytes"])
        self._background: set[asyncio.Task] = set()
        self._providers: dict[str, list[str]] = {}
        self._spawn(self._requeue_unfinished())

    # === inference.GRPCInferenceService =================================================
    @grpc_method(oip.ServerLiveResponse)
    async def ServerLive(self, request, grpc_context):
        return oip.ServerLiveResponse(live=True)

    @grpc_method(oip.ServerReadyResponse)
    async def ServerReady(self, request, grpc_context):
        return oip.ServerReadyResponse(ready=True)  # Ray routes here only once every deployment is up

    @grpc_method(oip.ModelReadyResponse)
    async def ModelReady(self, request, grpc_context):
        return oip.ModelReadyResponse(ready=request.name in self.specs)

    @grpc_method(oip.ServerMetadataResponse)
    async def ServerMetadata(self, request, grpc_context):
        return oip.ServerMetadataResponse(name="zkserve", version=_version(), extensions=["zkserve_attestation"])

    @grpc_method(oip.ModelMetadataResponse)
    async def ModelMetadata(self, request, grpc_context):
        spec = self._spec(request.name, request.version)
        response = oip.ModelMetadataResponse(name=spec.name, versions=["1"], platform="onnxruntime_onnx")
        for tensor in spec.inputs:
            response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=[-1, *tensor.row_shape])
        for tensor in spec.outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=[-1, *tensor.row_shape])
        response.outputs.add(name=PROOF_TENSOR, datatype="BYTES", shape=[1])
        return response

    @grpc_method(oip.ModelInferResponse)
    async def ModelInfer(self, request, grpc_context):
        self._check_size(request)
        spec = self._spec(request.model_name, request.model_version)
        attest = self._attest_parameter(request)
        inputs = tensors.decode_inputs(spec, request)
        wanted = [o.name for o in request.outputs]
        known = {t.name for t in spec.outputs} | {PROOF_TENSOR}
        if unknown := [name for name in wanted if name not in known]:
            raise invalid(
                f"model {spec.name} has no output named "
                f"{', '.join(map(repr, unknown))}; outputs: {', '.join(sorted(known))}"
            )
        outputs, proof_id, record = await self._predict(spec, inputs, attest)

        raw = bool(request.raw_input_contents)
        response = oip.ModelInferResponse(model_name=spec.name, model_version="1", id=request.id)
        response.parameters["model_id"].string_param = spec.model_id
        for tensor in spec.outputs:
            if not wanted or tensor.name in wanted:
                tensors.add_output(response, tensor.name, outputs[tensor.name], raw)
        if proof_id:
            response.parameters["proof_id"].string_param = proof_id
            response.parameters["proof_status"].string_param = record["status"] if record else "queued"
        if record and record["status"] == DONE:
            response.parameters["proof_hash"].string_param = record["proof_hash"]
            response.parameters["proven_outputs_match"].bool_param = bool(record["proven_outputs_match"])
            if not wanted or PROOF_TENSOR in wanted:
                tensors.add_bytes_output(response, PROOF_TENSOR, [record["proof"]], raw)
        elif record:
            response.parameters["proof_error"].string_param = record.get("error", "")
        metrics.requests().inc(tags={"method": "ModelInfer", "model": spec.name, "code": "OK"})
        return response

    # === zkserve.v1.Attestation =========================================================
    @grpc_method(pb.PredictResponse)
    async def Predict(self, request, grpc_context):
        self._check_size(request)
        spec = self._spec(request.model)
        attest = ATTEST_OF_ENUM.get(request.attest, self.default_attest)
        inputs = self._native_inputs(spec, request)
        outputs, proof_id, record = await self._predict(spec, inputs, attest)
        response = pb.PredictResponse(model=spec.name, model_id=spec.model_id, proof_id=proof_id)
        response.outputs.extend(tensor_message(t.name, outputs[t.name]) for t in spec.outputs)
        if record:
            response.proof.CopyFrom(proof_record_message(record))
        metrics.requests().inc(tags={"method": "Predict", "model": spec.name, "code": "OK"})
        return response

    @grpc_method(pb.ProofRecord)
    async def GetProof(self, request, grpc_context):
        return proof_record_message(await self._record(request.proof_id))

    @grpc_method(pb.ProofRecord)
    async def WatchProof(self, request, grpc_context):
        record = await self._record(request.proof_id)
        yield proof_record_message(record)
        while record["status"] not in FINISHED:
            changed = await self.store.wait_change.remote(record["proof_id"], record["status"])
            if changed["status"] != record["status"]:
                yield proof_record_message(changed)
            record = changed

    @grpc_method(pb.ListModelsResponse)
    async def ListModels(self, request, grpc_context):
        counts = await self.store.counts.remote()
        response = pb.ListModelsResponse()
        for spec in self.specs.values():
            done = counts.get(spec.name, {})
            info = response.models.add(
                name=spec.name, model_id=spec.model_id, circuit_batch_size=spec.circuit_batch_size,
                tolerance=spec.tolerance, visibility=",".join(f"{k}={v}" for k, v in sorted(spec.visibility.items())),
                insecure_srs=spec.insecure_srs, providers=await self._providers_of(spec.name),
                proofs_queued=done.get("queued", 0), proofs_proving=done.get("proving", 0),
                proofs_done=done.get("done", 0), proofs_failed=done.get("failed", 0),
            )
            for tensor in spec.inputs:
                info.inputs.add(name=tensor.name, shape=[-1, *tensor.row_shape], datatype=tensor.datatype)
            for tensor in spec.outputs:
                info.outputs.add(name=tensor.name, shape=[-1, *tensor.row_shape], datatype=tensor.datatype)
        return response

    # === grpc.health.v1.Health ==========================================================
    @grpc_method(health_pb2.HealthCheckResponse)
    async def Check(self, request, grpc_context):
        if request.service not in SERVED_SERVICES:
            raise not_found(f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    @grpc_method(health_pb2.HealthCheckResponse)
    async def Watch(self, request, grpc_context):
        # One answer then the end of the stream: Ray's proxy holds a replica slot for an open
        # stream, and this replica is SERVING for as long as Ray routes to it.
        yield await self.Check(request, grpc_context)

    # === the work =======================================================================
    async def _predict(self, spec: ModelSpec, inputs: dict[str, np.ndarray], attest: str):
        """ONNX Runtime outputs, and for attested calls the proof id and (sync) its record."""
        rows = len(next(iter(inputs.values())))
        if attest != "none" and rows > spec.circuit_batch_size:
            raise invalid(f"attested requests to {spec.name} carry at most {spec.circuit_batch_size} row(s) "
                          f"(the circuit's batch size), got {rows}; split the request or use attest=none")
        outputs = await self.predictors[spec.name].predict.remote(inputs)
        if attest == "none":
            return outputs, "", None
        job = ProofJob(new_proof_id(), spec.name, inputs, outputs)
        await self.store.create.remote(job.proof_id, spec.name, spec.model_id, rows, job.to_bytes())
        if attest == "sync":
            return outputs, job.proof_id, await self._prove(job)
        self._spawn(self._prove(job))
        return outputs, job.proof_id, None

    async def _prove(self, job: ProofJob) -> dict:
        """The finished record; a prover that keeps dying marks the proof FAILED, never lost."""
        for attempt in range(SUBMIT_RETRIES + 1):
            try:
                return await self.provers[job.model].prove.remote(job)
            except Exception as error:  # noqa: BLE001 - replica death, not the proof itself
                logger.warning("proof %s: prover call failed (attempt %d): %r", job.proof_id, attempt + 1, error)
        metrics.proofs_failed().inc(tags={"model": job.model})
        return await self.store.fail.remote(
            job.proof_id, "no prover replica could take the job; send the request again"
        )

    async def _requeue_unfinished(self) -> None:
        try:
            jobs = await self.store.claim_unfinished.remote()
        except Exception:  # noqa: BLE001 - logged; the proofs stay QUEUED on disk
            logger.exception("could not read unfinished proofs from the store")
            return
        for proof_id, model, data in jobs:
            if model in self.provers:
                self._spawn(self._prove(ProofJob.from_bytes(proof_id, model, data)))
            else:
                await self.store.fail.remote(proof_id, f"model {model} is no longer served")
        if jobs:
            logger.info("requeued %d unfinished proof(s)", len(jobs))

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._background.discard)

    # === request checks =================================================================
    def _check_size(self, request) -> None:
        size = request.ByteSize()
        if size > self.max_request_bytes:
            raise too_large(f"request is {size} bytes; the limit is {self.max_request_bytes} "
                            f"(zkserve.ingress.max_request_bytes): send fewer rows per request")

    def _spec(self, name: str, version: str = "") -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise not_found(f"model {name!r} is not served here; models: {', '.join(sorted(self.specs))}")
        if version not in ("", "1"):
            raise not_found(f"model {name} has only version 1, not {version!r}")
        return spec

    def _attest_parameter(self, request) -> str:
        if "attest" not in request.parameters:
            return self.default_attest
        parameter = request.parameters["attest"]
        kind = parameter.WhichOneof("parameter_choice")
        if kind != "string_param":
            raise invalid(
                f"request parameter 'attest' must be a string_param (none, async or sync), not {kind or 'empty'}"
            )
        value = parameter.string_param.strip().lower()
        if value not in ATTEST_MODES:
            raise invalid(f"request parameter 'attest' must be none, async or sync, not {parameter.string_param!r}")
        return value

    def _native_inputs(self, spec: ModelSpec, request: pb.PredictRequest) -> dict[str, np.ndarray]:
        """zkserve.v1 tensors, checked with the same rules as the OIP path."""
        converted = oip.ModelInferRequest(model_name=spec.name)
        for tensor in request.inputs:
            target = next((t for t in spec.inputs if t.name == tensor.name), None)
            item = converted.inputs.add(
                name=tensor.name, datatype=target.datatype if target else "FP32", shape=tensor.shape
            )
            item.contents.fp32_contents.extend(tensor.values)
        return tensors.decode_inputs(spec, converted)

    async def _record(self, proof_id: str) -> dict:
        if not proof_id:
            raise invalid("proof_id is empty")
        record = await self.store.get.remote(proof_id)
        if record is None:
            raise not_found(f"no proof with id {proof_id!r}")
        return record

    async def _providers_of(self, model: str) -> list[str]:
        if model not in self._providers:
            try:
                self._providers[model] = await self.predictors[model].providers.remote()
            except Exception as error:  # noqa: BLE001
                raise unavailable(f"predictor of {model} is not reachable: {type(error).__name__}") from None
        return self._providers[model]
