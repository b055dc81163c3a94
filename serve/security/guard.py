"""Authentication, rights and per-key quotas: one step in front of every RPC (health excepted).

``Guard.authenticate`` reads ``authorization: Bearer <token>`` and returns the key's
``Principal`` (or, with auth off, an anonymous principal holding every right);
``Guard.admit`` charges the key's requests/s token bucket. Failures are the domain errors of
``serve.errors`` (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from serve.errors import PermissionDenied, ResourceExhausted, Unauthenticated, Unavailable
from serve.security.files import InsecureFile
from serve.security.keystore import RIGHTS, KeyStore, KeyStoreError, keys_path

log = logging.getLogger(__name__)

# Methods anyone may call: liveness and readiness only.
OPEN_METHODS = frozenset({
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
    "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady",
})
OPEN_PREFIXES = ("/v2/health/",)  # KServe v2 REST liveness/readiness
ANY_KEY = ""  # needs a valid key, no particular right
# The right each method needs; a method missing here needs `admin` (closed by default).
METHOD_RIGHTS: dict[str, str] = {
    "/zkserve.v1.Verifier/Verify": "verify",
    "/zkserve.v1.Verifier/GetAttestation": "verify",
    "/zkserve.v1.Verifier/WatchAttestation": "verify",
    "/zkserve.v1.Verifier/Submit": "submit",  # ONCHAIN mode spends the operator's gas: admin (checked in Submit)
    "/zkserve.v1.Attestation/Predict": "predict",
    "/zkserve.v1.Attestation/GetProof": "predict",
    "/zkserve.v1.Attestation/WatchProof": "predict",
    "/zkserve.v1.Attestation/ListModels": "predict",
    "/inference.GRPCInferenceService/ModelInfer": "predict",
    "/inference.GRPCInferenceService/ModelReady": "predict",
    "/inference.GRPCInferenceService/ModelMetadata": "predict",
    "/inference.GRPCInferenceService/ServerMetadata": "predict",
    "/inference.GRPCInferenceService/RepositoryIndex": "predict",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANY_KEY,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": ANY_KEY,
}
REST_PREFIX = "/v2/"  # every other KServe v2 REST route is inference: `predict`


def is_open(method: str) -> bool:
    return method in OPEN_METHODS or method.startswith(OPEN_PREFIXES)


def required_right(method: str) -> str:
    if method in METHOD_RIGHTS:
        return METHOD_RIGHTS[method]
    return "predict" if method.startswith(REST_PREFIX) else "admin"


@dataclass(frozen=True)
class Principal:
    key_id: str
    rights: frozenset[str]
    requests_per_s: float | None = None  # the key's own quota; None: the guard's default

    def has(self, right: str) -> bool:
        return right == ANY_KEY or right in self.rights or "admin" in self.rights


ANONYMOUS = Principal("anonymous", frozenset(RIGHTS))

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("zkserve_principal", default=None)


def current_principal() -> Principal | None:
    """The principal of the RPC this thread is serving (set by the interceptor)."""
    return _current.get()


def require(principal: Principal | None, right: str, what: str) -> None:
    if principal is None:
        raise PermissionDenied(f"{what} needs the {right!r} right and the caller was not authenticated")
    if not principal.has(right):
        raise PermissionDenied(f"{what} needs the {right!r} right; API key {principal.key_id} has "
                               f"{', '.join(sorted(principal.rights)) or 'none'} (create a key with --right {right})")


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens, self.stamp = burst, clock()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is due."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Guard:
    """One per server. ``requests_per_s`` <= 0 turns the rate quota off."""

    def __init__(self, auth_enabled: bool, store: KeyStore | None, requests_per_s: float = 0.0,
                 burst_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if auth_enabled and store is None:
            raise ValueError("authentication needs a key store")
        self.auth_enabled = auth_enabled
        self.store = store
        self.requests_per_s = float(requests_per_s)
        self.burst_s = float(burst_s)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, auth_enabled: bool, keys_file: Path, requests_per_s: float = 0.0,
                      burst_s: float = 2.0) -> Guard:
        return cls(bool(auth_enabled), KeyStore(Path(keys_file)) if auth_enabled else None, requests_per_s, burst_s)

    @classmethod
    def for_section(cls, zkserve: Mapping, section: str) -> Guard:
        """The guard of one exposed port (``ingress`` or ``verifier``) from the config's zkserve section."""
        settings = zkserve[section]
        return cls.from_settings(bool(settings["auth_enabled"]), keys_path(zkserve["state_dir"], settings["keys_file"]),
                                 float(settings["requests_per_s"]), float(settings["burst_s"]))

    def check_store(self) -> int:
        """At start: the key store is readable and private (raises InsecureFile/KeyStoreError);
        the number of active keys."""
        if not self.auth_enabled:
            return 0
        active = sum(key.active for key in self.store.api_keys())
        if not active:
            log.warning("authentication is on but %s holds no active API key: every call but health will be "
                        "refused; create one with `zkserve keys create NAME --right verify`", self.store.path)
        return active

    @staticmethod
    def token_of(metadata: Mapping[str, str]) -> str | None:
        value = metadata.get("authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def authenticate(self, metadata: Mapping[str, str], method: str) -> Principal:
        if not self.auth_enabled:
            return ANONYMOUS
        token = self.token_of(metadata)
        if token is None:
            raise Unauthenticated(f"{method} needs an API key: send the metadata header "
                                  f"'authorization: Bearer <token>' (tokens come from `zkserve keys create`)")
        try:
            key = self.store.lookup(token)
        except (InsecureFile, KeyStoreError) as error:  # changed under a running service
            log.error("API key store unusable: %s", error)
            raise Unavailable("the service cannot read its API key store; the operator must fix it "
                              "(see its log)") from None
        if key is None:
            raise Unauthenticated("the API key is unknown or revoked; ask the operator for a valid one")
        principal = Principal(key.key_id, frozenset(key.rights), key.requests_per_s)
        require(principal, required_right(method), method)
        return principal

    def admit(self, principal: Principal, kind: str) -> None:
        rate = principal.requests_per_s if principal.requests_per_s is not None else self.requests_per_s
        if rate <= 0:
            return
        with self._lock:
            bucket = self._buckets.get(principal.key_id)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[principal.key_id] = TokenBucket(rate, max(1.0, rate * self.burst_s), self._clock)
            wait_s = bucket.take()
        if wait_s:
            raise ResourceExhausted(f"API key {principal.key_id} is over its quota of {rate:g} requests/s "
                                    f"({kind}); retry in {wait_s:.2f} s")

    def scope(self, principal: Principal) -> contextvars.Token:
        """Makes ``principal`` the current one for this thread's RPC; pair with ``unscope``."""
        return _current.set(principal)

    @staticmethod
    def unscope(token: contextvars.Token) -> None:
        _current.reset(token)


class QueuedProofs:
    """A bound on the proofs one key has queued and not yet final. ``still_queued`` says
    whether a proof id is still waiting; finished ones are forgotten as they are seen."""

    def __init__(self, per_key: int, still_queued: Callable[[str], bool]):
        self.per_key = int(per_key)
        self._still_queued = still_queued
        self._queued: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def reserve(self, principal: Principal, proof_id: str) -> None:
        if self.per_key <= 0:
            return
        with self._lock:
            mine = self._queued.setdefault(principal.key_id, set())
            if proof_id in mine:
                return
            mine.intersection_update({p for p in mine if self._still_queued(p)})
            if len(mine) >= self.per_key:
                raise ResourceExhausted(f"API key {principal.key_id} has {len(mine)} proofs queued, its limit; "
                                        f"wait for some to be attested (WatchAttestation) and retry")
            mine.add(proof_id)
