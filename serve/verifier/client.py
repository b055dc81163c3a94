"""A small client of ``zkserve.v1.Verifier`` for the serving app, the CLI and tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zkserve.v1 import verifier_pb2 as pb
from zkserve.v1 import verifier_pb2_grpc

from circuits import Proof
from serve.security import tls

MODES = {"anchor": pb.SUBMIT_MODE_ANCHOR, "onchain": pb.SUBMIT_MODE_ONCHAIN}
FINAL = {pb.ATTESTATION_STATUS_ANCHORED, pb.ATTESTATION_STATUS_ATTESTED, pb.ATTESTATION_STATUS_REJECTED}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
TOKEN_ENV = "ZKSERVE_API_KEY"  # the bearer token when none is passed


def status_name(record: pb.AttestationRecord) -> str:
    return pb.AttestationStatus.Name(record.status).removeprefix("ATTESTATION_STATUS_").lower()


class VerifierClient:
    """``token``: the API key (``zkserve keys create``), else ``$ZKSERVE_API_KEY``, else none.
    ``root_cert``: a PEM file to trust (the server's self-signed certificate or its CA) for a
    TLS channel; ``tls=True`` without it trusts the system roots."""

    def __init__(self, target: str = "127.0.0.1:9100", timeout_s: float = 60.0, retries: int = 5,
                 token: str | None = None, root_cert: str | Path | None = None, tls_enabled: bool | None = None,
                 server_name: str | None = None):
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        if tls_enabled or (tls_enabled is None and root_cert):
            self._channel = grpc.secure_channel(target, tls.channel_credentials(root_cert),
                                                options=tls.name_override(server_name))
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = verifier_pb2_grpc.VerifierStub(self._channel)

    @classmethod
    def for_config(cls, zkserve: dict, token: str | None = None, **kwargs) -> VerifierClient:
        """A client of the verifier the config describes (its certificate trusted when TLS is on)."""
        from serve.ports import client_target

        verifier = zkserve["verifier"]
        kwargs.setdefault("server_name", tls.loopback_server_name(verifier["host"], verifier.get("tls_cert_file")))
        return cls(client_target(verifier["host"], int(verifier["port"])), token=token,
                   root_cert=verifier.get("tls_cert_file"), **kwargs)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> VerifierClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _payload(proof: Proof | bytes | str) -> bytes:
        if isinstance(proof, Proof):
            return proof.to_json().encode()
        return proof.encode() if isinstance(proof, str) else bytes(proof)

    def _call(self, method, request):
        """Retries UNAVAILABLE with backoff: every RPC here is idempotent (Submit keys on the
        proof hash), so a retry never queues a proof twice."""
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(min(5.0, 0.2 * 2 ** attempt))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        stub = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service="zkserve.v1.Verifier"), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"verifier at {self.target} not serving after {timeout_s:.0f} s")
            time.sleep(0.2)

    def verify(self, model_id: str, proof: Proof | bytes | str) -> pb.VerifyResponse:
        return self._call(self._stub.Verify, pb.VerifyRequest(model_id=model_id, proof=self._payload(proof)))

    def submit(self, model_id: str, proof: Proof | bytes | str, mode: str = "anchor") -> pb.SubmitResponse:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        request = pb.SubmitRequest(model_id=model_id, proof=self._payload(proof), mode=MODES[mode])
        return self._call(self._stub.Submit, request)

    def get(self, proof_hash: str) -> pb.AttestationRecord:
        return self._call(self._stub.GetAttestation, pb.GetAttestationRequest(proof_hash=proof_hash))

    def watch(self, proof_hash: str, timeout_s: float | None = None) -> Iterator[pb.AttestationRecord]:
        return self._stub.WatchAttestation(pb.GetAttestationRequest(proof_hash=proof_hash), timeout=timeout_s,
                                           metadata=self._metadata)

    def wait_final(self, proof_hash: str, timeout_s: float = 120.0, not_yet_submitted_ok: bool = False
                   ) -> pb.AttestationRecord:
        """Polls until the record is anchored, attested or rejected (survives service restarts).
        With `not_yet_submitted_ok`, NOT_FOUND means someone else's Submit is still on its way."""
        retryable = RETRYABLE | ({grpc.StatusCode.NOT_FOUND} if not_yet_submitted_ok else set())
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                record = self.get(proof_hash)
                if record.status in FINAL:
                    return record
            except grpc.RpcError as error:
                if error.code() not in retryable:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proof_hash} not final after {timeout_s:.0f} s")
            time.sleep(0.2)
