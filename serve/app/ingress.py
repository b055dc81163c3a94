"""Ingress deployment: the app's front door. Its replica serves gRPC and REST itself on the
configured host and ports (``serve.app.direct``): no proxy, no hop before this process.

gRPC: ``inference.GRPCInferenceService`` (Open Inference Protocol), ``zkserve.v1.Attestation`` and
``grpc.health.v1.Health`` (one servicer: method names are unique across the three).
HTTP: KServe v2 REST (``/v2/...``). Each call: auth (the marked call site),
then a protocol adapter (``serve.protocol``), then the data plane. Failures map through
``serve.errors``; anything else is INTERNAL / 500 with an incident id, never a trace.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
import uuid
from importlib import metadata

from grpc_health.v1 import health_pb2
from inference import grpc_service_pb2 as oip_pb
from ray import serve
from zkserve.v1 import attestation_pb2 as pb

from serve.app import metrics
from serve.app.cpu import INGRESS_NICENESS, set_niceness
from serve.app.dataplane import DataPlane
from serve.app.direct import (
    keep_replica_servers_local,
    start_grpc_server,
    start_rest_server,
)
from serve.app.inference import BatchedModel
from serve.app.models import ModelSpec
from serve.app.proofs import ModelKey, ProofService
from serve.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    ServeError,
    code_name,
    grpc_code,
    http_status,
)
from serve.protocol import native, oip, rest
from serve.protocol.types import PROOF_TENSOR, AttestMode, Limits, ProofStatus
from serve.security import Guard, require_safe_bind, tls

logger = logging.getLogger("ray.serve")
SERVED_SERVICES = ("", "inference.GRPCInferenceService", "zkserve.v1.Attestation")
APP_REPOSITORY = "zkserve"  # the one model repository RepositoryIndex names


def _version() -> str:
    try:
        return metadata.version("zkserve")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _incident(method: str) -> str:
    incident = uuid.uuid4().hex[:12]
    logger.exception("%s failed (incident %s)", method, incident)
    return f"internal error in {method} (incident {incident}; see the server log)"


def _model_of(request) -> str:
    for field in ("model_name", "model", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str):
            return value
    return ""


def grpc_method(response_type, open_to_all: bool = False):
    """Wraps a unary or server-streaming gRPC method: no exception escapes (errors set the status
    through ``grpc_context``) and every call is counted with its real status code."""

    def decorate(method):
        name = method.__name__

        def fail(self, grpc_context, error: BaseException) -> None:
            if isinstance(error, ServeError):
                grpc_context.set_code(grpc_code(error))
                grpc_context.set_details(error.message)
            else:
                grpc_context.set_code(grpc_code(error))
                grpc_context.set_details(_incident(name))

        def count(request, error: BaseException | None) -> None:
            metrics.count_request("grpc", name, _model_of(request), code_name(error))

        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def streaming(self, request, grpc_context):
                error = None
                try:
                    if not open_to_all:
                        self.admit(grpc_context, name)
                    async for message in method(self, request, grpc_context):
                        yield message
                except Exception as raised:  # noqa: BLE001 - turned into a status
                    error = raised
                    fail(self, grpc_context, raised)
                finally:
                    count(request, error)

            return streaming

        @functools.wraps(method)
        async def unary(self, request, grpc_context):
            try:
                if not open_to_all:
                    self.admit(grpc_context, name)
                response = await method(self, request, grpc_context)
            except Exception as error:  # noqa: BLE001 - turned into a status
                fail(self, grpc_context, error)
                count(request, error)
                return response_type()
            count(request, None)
            return response

        return unary

    return decorate


def _serving(service: str) -> health_pb2.HealthCheckResponse:
    """SERVING for the services this replica serves (all of them while it is up)."""
    if service not in SERVED_SERVICES:
        raise NotFound(f"unknown service {service!r}")
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


# KServe v2 REST routes: (method, pattern) -> handler name
ROUTES = [
    ("GET", re.compile(r"^/v2/health/live$"), "rest_live"),
    ("GET", re.compile(r"^/v2/health/ready$"), "rest_ready"),
    ("GET", re.compile(r"^/v2/?$"), "rest_server_metadata"),
    ("GET", re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/ready$"), "rest_model_ready"),
    ("GET", re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/?$"), "rest_model_metadata"),
    ("POST", re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$"), "rest_infer"),
    ("GET", re.compile(r"^/v2/proofs/(?P<proof_id>[^/]+)$"), "rest_proof"),
    ("POST", re.compile(r"^/v2/repository/index$"), "rest_repository_index"),
]
OPEN_ROUTES = {"rest_live", "rest_ready"}
# method name -> the full gRPC path the guard's rights table is keyed by (names are unique)
GRPC_PATHS = {method.name: f"/{service.full_name}/{method.name}"
              for service in (oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
                              pb.DESCRIPTOR.services_by_name["Attestation"])
              for method in service.methods}


@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class Ingress:
    async def __init__(self, specs: dict[str, ModelSpec], predictors: dict | None, provers: dict, settings: dict):
        keep_replica_servers_local()
        set_niceness(INGRESS_NICENESS)  # before the ORT and gRPC threads exist: they inherit it
        self.settings = settings
        self._retiring: dict[ModelKey, str] = {}  # removed or replaced versions finishing their proofs -> version
        self.limits = Limits(max_bytes=int(settings["max_request_bytes"]))
        if predictors:  # a GPU: the Predictor deployment holds it
            self._providers = None
            infer = {name: handle.predict.remote for name, handle in predictors.items()}
            self._predictors = dict(predictors)
        else:  # CPU: ONNX Runtime in this process, no hop
            self.models = {name: BatchedModel(spec.onnx_path, use_gpu=False, threads=settings.get("ort_threads"),
                                              max_batch_size=int(settings["max_batch_size"]),
                                              observe=metrics.inference_observer({"model": name}))
                           for name, spec in specs.items()}
            self._providers = {name: model.providers() for name, model in self.models.items()}
            infer = {name: model.predict for name, model in self.models.items()}
        self.proofs = ProofService(settings["proofs_dir"], specs, provers, int(settings["max_queued_proofs"]),
                                   settings.get("verifier_target"), settings.get("proofs_in_flight"),
                                   settings.get("verifier_client"), settings["security"]["max_queued_proofs_per_key"])
        self.plane = DataPlane(specs, infer, self.proofs, AttestMode(settings["default_attest"]))
        await self.proofs.requeue_unfinished()
        security = settings["security"]
        # again here, not only in `up`: `serve deploy` of app_builder reaches this without `up`
        require_safe_bind(settings["host"], security["auth_enabled"], security["insecure_no_auth"],
                          "ingress.auth_enabled", "the gRPC and REST ingress")
        self.guard = Guard.from_settings(security["auth_enabled"], security["keys_file"],
                                         security["requests_per_s"], security["burst_s"])
        self.guard.check_store()
        self.max_streams, self.stream_max_s = security["max_streams"], security["stream_max_s"]
        self.open_streams = 0  # WatchProof streams now (one event loop: a plain counter is exact)
        cert, key = security["tls_cert_file"], security["tls_key_file"]
        credentials = tls.credentials_for(security, "ingress")
        self._grpc = await start_grpc_server(self, settings["host"], int(settings["port"]), self.limits.max_bytes,
                                             credentials, reflection_on=not security["auth_enabled"])
        self._rest = await start_rest_server(self.handle_rest, settings["host"], int(settings["http_port"]), cert, key)

    async def __del__(self):
        """Ray Serve calls this on a graceful stop: finish calls in flight (briefly), free the ports."""
        if getattr(self, "_rest", None) is not None:
            self._rest.should_exit = True
        if getattr(self, "_grpc", None) is not None:
            await self._grpc.stop(2)
        if getattr(self, "proofs", None) is not None:
            self.proofs.close()

    @property
    def specs(self) -> dict[str, ModelSpec]:
        """The models served now (the data plane's table, changed by add_model / remove_model)."""
        return self.plane.specs

    # === live models: control methods, called through a DeploymentHandle by `zkserve models` ========
    # (never on the gRPC or REST ports: those map only the protocol methods below)
    async def add_model(self, spec: ModelSpec, prover, predictor=None, in_flight: int = 2) -> dict:
        """Serves ``spec`` with its (already running) Prover, and Predictor on GPU nodes. The model
        takes traffic only once both are in the tables; a name already served gets a new version
        and its old version keeps its prover until ``retire_model`` has seen its proofs finish."""
        if predictor is not None:
            infer, model = predictor.predict.remote, None
        else:
            model = await asyncio.to_thread(
                BatchedModel, spec.onnx_path, use_gpu=False, threads=self.settings.get("ort_threads"),
                max_batch_size=int(self.settings["max_batch_size"]),
                observe=metrics.inference_observer({"model": spec.name}))
            infer = model.predict
        self.proofs.add_model(spec, prover, in_flight)  # first: a request that finds the model can prove
        version, replaced = self.plane.add(spec, infer)
        if model is not None:
            self.models[spec.name] = model
            self._providers[spec.name] = model.providers()
        else:
            self._predictors[spec.name] = predictor
            (self._providers or {}).pop(spec.name, None)
        self._retiring.pop((spec.name, spec.model_id), None)
        if replaced is not None:
            self._retiring[(replaced.name, replaced.model_id)] = str(version - 1)
        logger.info("serving %s version %d (%s)", spec.name, version, spec.model_id)
        return {"name": spec.name, "version": str(version), "model_id": spec.model_id,
                "replaced_model_id": replaced.model_id if replaced is not None else None}

    async def remove_model(self, name: str) -> dict:
        """From now on ``name`` answers NOT_FOUND; its requests and proofs in flight finish
        (``retire_model`` waits for them)."""
        version = self.plane.version(name) if name in self.plane.specs else ""
        spec = self.plane.remove(name)
        self._retiring[(spec.name, spec.model_id)] = version
        logger.info("removed %s version %s (%s)", name, version, spec.model_id)
        return {"name": name, "version": version, "model_id": spec.model_id}

    async def retire_model(self, name: str, model_id: str) -> int:
        """Waits until the requests and proofs of a removed or replaced version have finished, then
        drops its prover; returns the proofs it waited for. The caller deletes the deployments."""
        key = (name, model_id)
        if (name in self.plane.specs and self.plane.specs[name].model_id == model_id):
            raise InvalidArgument(f"{name} ({model_id}) is still served; remove it first")
        waited = self.proofs.unfinished(key)
        await self.plane.quiesce(key)
        await self.proofs.retire(key)
        self._retiring.pop(key, None)
        if self.plane.specs.get(name) is None:
            getattr(self, "models", {}).pop(name, None)
            getattr(self, "_predictors", {}).pop(name, None)
        return waited

    async def proofs_dir(self) -> str:
        """Where this app keeps its proofs: `zkserve models` checks it joined the app of its state dir."""
        return self.settings["proofs_dir"]

    async def model_table(self) -> list[dict]:
        """Every model this replica knows: served (READY) or finishing its proofs (UNAVAILABLE)."""
        table = [{"name": name, "version": self.plane.version(name), "model_id": spec.model_id, "state": "READY",
                  "reason": "", "proofs_unfinished": self.proofs.unfinished((name, spec.model_id))}
                 for name, spec in sorted(self.plane.specs.items())]
        for (name, model_id), version in sorted(self._retiring.items()):
            unfinished = self.proofs.unfinished((name, model_id))
            table.append({"name": name, "version": version, "model_id": model_id, "state": "UNAVAILABLE",
                          "reason": f"retired; {unfinished} proof(s) finishing", "proofs_unfinished": unfinished})
        return table
    # === auth ======================================================================================
    def admit(self, context, method: str) -> None:
        """Authentication, the method's right and the key's quota: once per call, before any
        adapter (health stays open). ``context`` is the gRPC context or the HTTP request."""
        if not self.guard.auth_enabled and self.guard.requests_per_s <= 0:
            return  # nothing to check: every caller is anonymous and unmetered
        if hasattr(context, "invocation_metadata"):
            metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            path = GRPC_PATHS.get(method, method)
        else:
            metadata = {k.lower(): v for k, v in context.headers.items()}
            path = context.url.path
        principal = self.guard.authenticate(metadata, path)
        self.guard.admit(principal, method)
        # each gRPC call and REST request runs in its own task (a copied context): the principal
        # stays with this call, for the proof queue's per-key bound
        self.guard.scope(principal)

    # === inference.GRPCInferenceService ============================================================
    @grpc_method(oip_pb.ServerLiveResponse, open_to_all=True)
    async def ServerLive(self, request, grpc_context):
        return oip_pb.ServerLiveResponse(live=True)

    @grpc_method(oip_pb.ServerReadyResponse, open_to_all=True)
    async def ServerReady(self, request, grpc_context):
        return oip_pb.ServerReadyResponse(ready=True)  # this replica serves only once the app is up

    @grpc_method(oip_pb.ModelReadyResponse)
    async def ModelReady(self, request, grpc_context):
        try:
            self.plane.spec(request.name, request.version)
        except NotFound:
            return oip_pb.ModelReadyResponse(ready=False)
        return oip_pb.ModelReadyResponse(ready=True)

    @grpc_method(oip_pb.ServerMetadataResponse)
    async def ServerMetadata(self, request, grpc_context):
        return oip_pb.ServerMetadataResponse(**self._server_metadata())

    @grpc_method(oip_pb.ModelMetadataResponse)
    async def ModelMetadata(self, request, grpc_context):
        document = self._model_metadata(request.name, request.version)
        response = oip_pb.ModelMetadataResponse(name=document["name"], versions=document["versions"],
                                                platform=document["platform"])
        for key in ("inputs", "outputs"):
            for tensor in document[key]:
                getattr(response, key).add(**tensor)
        return response

    @grpc_method(oip_pb.RepositoryIndexResponse)
    async def RepositoryIndex(self, request, grpc_context):
        response = oip_pb.RepositoryIndexResponse()
        for entry in await self._repository_index(request.repository_name, request.ready):
            response.models.add(**entry)
        return response

    @grpc_method(oip_pb.ModelInferResponse)
    async def ModelInfer(self, request, grpc_context):
        response, _ = await self.plane.infer(oip.decode_request(request, self.limits))
        return oip.encode_response(response)

    # === zkserve.v1.Attestation ====================================================================
    @grpc_method(pb.PredictResponse)
    async def Predict(self, request, grpc_context):
        response, record = await self.plane.infer(native.decode_predict(request, self.limits))
        outputs = [native.encode_tensor(t) for t in response.outputs if t.name != PROOF_TENSOR]
        # the response's own model_id: the model may have been replaced while this request ran
        message = pb.PredictResponse(model=response.model, model_id=str(response.parameters["model_id"]),
                                     outputs=outputs)
        if record is not None:
            message.proof_id = record.proof_id
            message.proof.CopyFrom(native.encode_record(record))
        return message

    @grpc_method(pb.ProofRecord)
    async def GetProof(self, request, grpc_context):
        return native.encode_record(self.plane.proof(request.proof_id))

    @grpc_method(pb.ProofRecord)
    async def WatchProof(self, request, grpc_context):
        record = self.plane.proof(request.proof_id)
        if self.open_streams >= self.max_streams:
            raise ResourceExhausted(f"{self.open_streams} WatchProof streams are open, the limit "
                                    f"(zkserve.ingress.max_streams); retry shortly or poll GetProof")
        self.open_streams += 1
        try:
            deadline = time.monotonic() + self.stream_max_s
            yield native.encode_record(record)
            while not record.status.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineExceeded(f"WatchProof streams end after {self.stream_max_s:g} s "
                                           f"(zkserve.ingress.stream_max_s); watch {record.proof_id} again")
                changed = await self.proofs.wait_change(record.proof_id, record.status, timeout_s=min(10.0, left))
                if changed is None:
                    return
                if changed.status is not record.status:
                    yield native.encode_record(changed)
                record = changed
        finally:
            self.open_streams -= 1

    @grpc_method(pb.ListModelsResponse)
    async def ListModels(self, request, grpc_context):
        counts = self.proofs.counts()
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

    # === grpc.health.v1.Health =====================================================================
    @grpc_method(health_pb2.HealthCheckResponse, open_to_all=True)
    async def Check(self, request, grpc_context):
        return _serving(request.service)

    @grpc_method(health_pb2.HealthListResponse, open_to_all=True)
    async def List(self, request, grpc_context):
        response = health_pb2.HealthListResponse()
        for service in SERVED_SERVICES:
            response.statuses[service].status = health_pb2.HealthCheckResponse.SERVING
        return response

    @grpc_method(health_pb2.HealthCheckResponse, open_to_all=True)
    async def Watch(self, request, grpc_context):
        # One answer, then the end of the stream: this replica is SERVING while Ray routes to it.
        yield _serving(request.service)

    # === KServe v2 REST ============================================================================
    async def handle_rest(self, request):
        from starlette.responses import JSONResponse, Response

        path, verb = request.url.path, request.method
        handler, params = None, {}
        for method, pattern, name in ROUTES:
            match = pattern.match(path)
            if match and method == verb:
                handler, params = name, {k: v for k, v in match.groupdict().items() if v is not None}
                break
        if handler is None:
            allowed = any(pattern.match(path) for _, pattern, _ in ROUTES)
            return JSONResponse({"error": f"{verb} {path} is not a KServe v2 endpoint here"},
                                status_code=405 if allowed else 404)
        error = None
        try:
            if handler not in OPEN_ROUTES:
                self.admit(request, handler)
            status, body = 200, await getattr(self, handler)(request, **params)
        except Exception as raised:  # noqa: BLE001 - mapped to a status and a JSON error
            error = raised
            message = raised.message if isinstance(raised, ServeError) else _incident(handler)
            status, body = http_status(raised), {"error": message}
        metrics.count_request("rest", handler, params.get("model", ""), code_name(error))
        if isinstance(body, Response):
            return body
        headers = {}
        if status == 401:  # RFC 6750: say which scheme the API expects
            headers["WWW-Authenticate"] = 'Bearer realm="zkserve"'
        elif status == 429 and self.guard.requests_per_s > 0:
            headers["Retry-After"] = str(max(1, round(1 / self.guard.requests_per_s)))
        return JSONResponse(body, status_code=status, headers=headers)

    async def rest_live(self, request) -> dict:
        return {"live": True}

    async def rest_ready(self, request) -> dict:
        return {"ready": True}

    async def rest_server_metadata(self, request) -> dict:
        return self._server_metadata()

    async def rest_model_ready(self, request, model: str, version: str = "") -> dict:
        self.plane.spec(model, version)
        return {"name": model, "ready": True}

    async def rest_model_metadata(self, request, model: str, version: str = "") -> dict:
        return self._model_metadata(model, version)

    async def rest_infer(self, request, model: str, version: str = ""):
        from starlette.responses import Response

        body = await self._read_body(request)
        json_length = rest.header_length(request.headers.get(rest.HEADER_LENGTH), len(body))
        decoded, binary = rest.decode_infer(body, model, version, self.limits, json_length)
        response, _ = await self.plane.infer(decoded)
        if not binary:
            return rest.encode_response(response)
        content, json_length = rest.encode_infer(response, binary)  # the binary extension, as asked for
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type=rest.BINARY_CONTENT_TYPE, headers={rest.HEADER_LENGTH: str(json_length)})

    async def rest_repository_index(self, request) -> list[dict]:
        body = await self._read_body(request)
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            raise InvalidArgument("the repository index request body is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("ready", False), bool):
            raise InvalidArgument('the repository index request body is {"ready": true|false}')
        return await self._repository_index(str(document.get("repository_name", "")), document.get("ready", False))

    async def rest_proof(self, request, proof_id: str) -> dict:
        record = self.plane.proof(proof_id)
        document = record.to_dict()
        if record.status is ProofStatus.DONE:
            document["proof"] = record.proof.decode()
        return document

    async def _read_body(self, request) -> bytes:
        """The body, refused (413) as soon as it passes max_request_bytes, before it is all read."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidArgument("Content-Length is not a number")
            self.limits.check_bytes(int(declared))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise PayloadTooLarge(f"request body is over {self.limits.max_bytes} bytes "
                                      f"(zkserve.ingress.max_request_bytes): send fewer rows per request")
            chunks.append(chunk)
        return b"".join(chunks)

    # === shared by both protocols ==================================================================
    def _server_metadata(self) -> dict:
        return {"name": "zkserve", "version": _version(), "extensions": ["zkserve_attestation", "binary_tensor_data"]}

    async def _repository_index(self, repository: str, ready_only: bool) -> list[dict]:
        if repository not in ("", APP_REPOSITORY):
            raise NotFound(f"no model repository {repository!r}; this server has one, {APP_REPOSITORY!r} (or '')")
        return [{key: entry[key] for key in ("name", "version", "state", "reason")}
                for entry in await self.model_table() if not ready_only or entry["state"] == "READY"]

    def _model_metadata(self, name: str, version: str = "") -> dict:
        spec = self.plane.spec(name, version)
        tensors = lambda specs: [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.row_shape]} for t in specs]  # noqa: E731
        return {"name": spec.name, "versions": [self.plane.version(spec.name)], "platform": "onnxruntime_onnx",
                "inputs": tensors(spec.inputs),
                "outputs": tensors(spec.outputs) + [{"name": PROOF_TENSOR, "datatype": "BYTES", "shape": [1]}]}

    async def _providers_of(self, model: str) -> list[str]:
        if self._providers is None:
            self._providers = {}
        if model not in self._providers:
            try:
                self._providers[model] = await self._predictors[model].providers.remote()
            except Exception as error:  # noqa: BLE001
                from serve.errors import Unavailable

                raise Unavailable(f"predictor of {model} is not reachable: {type(error).__name__}") from None
        return self._providers[model]
