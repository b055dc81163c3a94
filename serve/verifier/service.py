"""gRPC ``zkserve.v1.Verifier``: Verify, Submit, GetAttestation, WatchAttestation.

Every failure a caller can fix is a ``serve.errors`` domain error (INVALID_ARGUMENT,
NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE, ...) with a message saying what to do; anything
else is logged here and answered as INTERNAL with an incident id (no paths, keys or traces).
Authentication, rights and quotas run before these methods, in ``serve.security``'s interceptor.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable

import grpc
from zkserve.v1 import verifier_pb2 as pb
from zkserve.v1 import verifier_pb2_grpc

from circuits import Proof, proven_rows
from serve.chain.registry import Registry
from serve.chain.rpc import ChainError, ChainUnavailable
from serve.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServeError,
    Unavailable,
    code_name,
)
from serve.merkle import instances_hash, leaf_of
from serve.security import QueuedProofs, current_principal, redact, require
from serve.verifier.documents import check_raw_size, parse_proof
from serve.verifier.metrics import VerifierMetrics
from serve.verifier.models import AmbiguousModel, ModelCatalog, UnknownModel, check_proof
from serve.verifier.outbox import ANCHOR, ONCHAIN, Outbox, OutboxRecord
from serve.verifier.reconcile import ChainTruth

log = logging.getLogger(__name__)

HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
STATUS = {
    "pending": pb.ATTESTATION_STATUS_PENDING, "anchored": pb.ATTESTATION_STATUS_ANCHORED,
    "attested": pb.ATTESTATION_STATUS_ATTESTED, "rejected": pb.ATTESTATION_STATUS_REJECTED,
}
MODES = {pb.SUBMIT_MODE_UNSPECIFIED: ANCHOR, pb.SUBMIT_MODE_ANCHOR: ANCHOR, pb.SUBMIT_MODE_ONCHAIN: ONCHAIN}
MODE_TO_PROTO = {ANCHOR: pb.SUBMIT_MODE_ANCHOR, ONCHAIN: pb.SUBMIT_MODE_ONCHAIN}


def _fail(context: grpc.ServicerContext, error: Exception, method: str):
    if isinstance(error, ServeError):
        context.abort(error.code, error.message)
    incident = uuid.uuid4().hex[:12]
    log.exception("%s failed (incident %s)", method, incident)
    context.abort(
        grpc.StatusCode.INTERNAL,
        f"{method} failed inside the verifier (incident {incident}); the operator can find it in the service log",
    )


def unary(method):
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            response = method(self, request, context)
        except Exception as error:  # noqa: BLE001 - mapped to a clean status
            self.count(method.__name__, code_name(error))
            _fail(context, error, method.__name__)
        self.count(method.__name__, "OK")
        return response

    return wrapper


def streaming(method):
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            yield from method(self, request, context)
        except Exception as error:  # noqa: BLE001
            self.count(method.__name__, code_name(error))
            _fail(context, error, method.__name__)
        self.count(method.__name__, "OK")

    return wrapper


def usage_rows(package, proof: Proof) -> int:
    """The rows a proof counts in the registry's usage: read from its proven inputs (the
    prover's zero padding excluded), never from the document's unbound ``rows`` claim. Where
    the inputs are not public the instances cannot tell, and the whole batch counts."""
    rows = proven_rows(package, proof)
    return package.batch_size if rows is None else rows


class RegistryHandle:
    """The registry contract, resolved (deployed if needed) on first use, and a cache of
    models known to be registered (registration never changes, so a chain outage does
    not block Submit for models seen before)."""

    def __init__(self, resolve: Callable[[], Registry]):
        self._resolve = resolve
        self._registry: Registry | None = None
        self._registered: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = self._resolve()
            return self._registry

    @property
    def resolved(self) -> Registry | None:
        return self._registry

    def refresh(self) -> Registry:
        """Resolves the registry again (the chain lost it): forgets what was known."""
        with self._lock:
            self._registry = self._resolve()
            self._registered.clear()
            return self._registry

    def require_registered(self, model_id: str, name: str) -> None:
        if model_id in self._registered:
            return
        try:
            registry = self()
            registered = registry.is_registered(model_id)
        except ChainUnavailable as error:
            raise Unavailable(
                f"cannot reach the chain to check that {name} is registered ({redact(error)}); retry shortly"
            ) from None
        except ChainError as error:
            raise Unavailable(f"chain error while checking {name}: {redact(error)}") from None
        if not registered:
            raise FailedPrecondition(
                f"model {name} ({model_id}) is not registered in the registry at "
                f"{registry.address}; run `zkserve register {name}` first"
            )
        self._registered.add(model_id)


class VerifierService(verifier_pb2_grpc.VerifierServicer):
    def __init__(
        self,
        catalog: ModelCatalog,
        outbox: Outbox,
        registry: RegistryHandle,
        watch_poll_s: float = 1.0,
        metrics: VerifierMetrics | None = None,
        truth: ChainTruth | None = None,
        stream_max_s: float = 600.0,
        max_queued_proofs_per_key: int = 0,
        max_queued_proofs: int = 0,
    ):
        self.truth = truth  # the chain is the truth: a record is shown final only while it holds
        self.catalog = catalog
        self.outbox = outbox
        self.registry = registry
        self.watch_poll_s = watch_poll_s
        self.metrics = metrics
        self.stream_max_s = float(stream_max_s)
        self.max_queued_proofs = int(max_queued_proofs)
        self.queued = QueuedProofs(max_queued_proofs_per_key, self._still_queued)

    def _still_queued(self, proof_hash: str) -> bool:
        record = self.outbox.get(proof_hash)
        return record is not None and not record.final

    def count(self, method: str, code: str) -> None:
        if self.metrics is not None:
            self.metrics.rpcs.labels(method, code).inc()

    # ---- helpers ----

    def _package(self, model_ref: str):
        try:
            return self.catalog.resolve(model_ref)
        except UnknownModel as error:
            raise NotFound(str(error)) from None
        except AmbiguousModel as error:
            raise InvalidArgument(str(error)) from None

    def _verify(self, request):
        check_raw_size(request.proof)  # before anything else is looked at
        package = self._package(request.model_id)
        proof: Proof = parse_proof(request.proof, package, self.catalog.shape(package))
        verdict = check_proof(package, proof)
        digest = instances_hash(proof.instances)
        leaf = leaf_of(bytes.fromhex(package.model_id[2:]), bytes.fromhex(proof.proof_hash[2:]), digest)
        return package, proof, verdict, "0x" + digest.hex(), "0x" + leaf.hex()

    def _record(self, record: OutboxRecord) -> pb.AttestationRecord:
        if self.truth is not None:
            record = self.truth.check(record)
        registry = self.registry.resolved
        return pb.AttestationRecord(
            proof_hash=record.proof_hash,
            model_id=record.model_id,
            status=STATUS[record.status],
            mode=MODE_TO_PROTO[record.mode],
            instances_hash=record.instances_hash,
            leaf=record.leaf,
            tx_hash=record.tx_hash or "",
            block_number=record.block_number or 0,
            merkle_root=record.merkle_root or "",
            merkle_path=record.merkle_path,
            batch_size=record.batch_size,
            registry_address=registry.address if registry else "",
            chain_id=registry.chain.chain_id() if registry else 0,
            reason=redact(record.reason or (record.last_error if not record.final else "") or ""),
            attempts=record.attempts,
            submitted_at=record.submitted_at,
            finalized_at=record.finalized_at or 0.0,
            insecure_srs=self._insecure(record.model_id),
        )

    def _insecure(self, model_id: str) -> bool:
        """The package's own flag; a model no package is known for counts as insecure."""
        try:
            return self.catalog.resolve(model_id).insecure
        except LookupError:
            return True

    def _lookup(self, proof_hash: str) -> OutboxRecord:
        if not HASH_RE.match(proof_hash or ""):
            raise InvalidArgument(f"proof_hash {proof_hash[:80]!r} must be 0x + 64 hex digits")
        record = self.outbox.get(proof_hash.lower())
        if record is None:
            raise NotFound(f"no proof {proof_hash} was submitted to this verifier")
        return record

    # ---- RPCs ----

    @unary
    def Verify(self, request, context):
        package, proof, verdict, digest, leaf = self._verify(request)
        return pb.VerifyResponse(
            valid=verdict.valid,
            reason=verdict.reason,
            model_id=package.model_id,
            proof_hash=proof.proof_hash,
            instances=[str(i) for i in proof.instances],
            instances_hash=digest,
            leaf=leaf,
            insecure_srs=package.insecure,
        )

    @unary
    def Submit(self, request, context):
        if request.mode not in MODES:
            raise InvalidArgument(f"unknown mode {request.mode}; use ANCHOR or ONCHAIN")
        mode = MODES[request.mode]
        principal = current_principal()
        if mode == ONCHAIN:  # one transaction per proof, paid by the operator's key
            require(principal, "admin", "Submit with mode ONCHAIN")
        package, proof, verdict, digest, leaf = self._verify(request)
        if not verdict.valid:
            raise InvalidArgument(f"proof rejected: {verdict.reason}")
        existing = self.outbox.get(proof.proof_hash)
        if existing is not None:
            return pb.SubmitResponse(attestation=self._record(existing), already_submitted=True)
        if self.max_queued_proofs > 0 and self.outbox.counts().get("pending", 0) >= self.max_queued_proofs:
            raise ResourceExhausted(
                f"the verifier has {self.max_queued_proofs} proofs waiting for the chain, "
                "its bound "
                "(verifier.max_queued_proofs); retry later"
            )
        self.registry.require_registered(package.model_id, package.name)
        self.queued.reserve(principal, proof.proof_hash)
        record, added = self.outbox.add(
            proof.proof_hash,
            package.model_id,
            mode,
            digest,
            leaf,
            proof=proof.proof_bytes,
            instances=proof.instances,
            rows=usage_rows(package, proof),
        )
        log.info("queued %s (%s, %s)", proof.proof_hash, package.name, mode)
        return pb.SubmitResponse(attestation=self._record(record), already_submitted=not added)

    @unary
    def GetAttestation(self, request, context):
        return self._record(self._lookup(request.proof_hash))

    @streaming
    def WatchAttestation(self, request, context):
        record = self._lookup(request.proof_hash)
        last = self._record(record)
        yield last
        deadline = time.monotonic() + self.stream_max_s
        while not record.final and context.is_active():
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"the stream was open {self.stream_max_s:g} s, the verifier's bound "
                    "(verifier.stream_max_s); watch again to go on"
                )
            self.outbox.wait_for_change(min(self.watch_poll_s, max(0.0, deadline - time.monotonic())))
            record = self.outbox.get(record.proof_hash)
            current = self._record(record)
            if current != last:
                last = current
                yield current
