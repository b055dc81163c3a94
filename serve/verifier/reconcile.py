"""The chain is the truth for every chain status: the verifier's records are checked
against it, and repaired where the chain lost something.

``Reconciler`` runs in the sender's thread (so its transactions never race the sender's
nonces), fully at start and then every ``reconcile_interval_s``. A periodic pass costs one
RPC while nothing changed: the block that confirmed our newest batch still has the hash we
recorded, so (blocks being a hash chain) every older confirmation stands too. Otherwise
(a reorg deeper than ``confirmations``, a chain reset, a local anvil that came back from
an older state file), every confirmed batch is checked: a root the registry has not
anchored, or a proof it has not attested, goes back to pending and is sent again; a model
registration the chain lost is made again from the package, or reported when this key
lacks the registrar role.

``ChainTruth`` is what ``GetAttestation`` answers from: a record the outbox holds as
anchored or attested is shown so only while the registry says so at that moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from serve.chain.registry import Registry
from serve.chain.rpc import ChainClient, ChainError, ChainUnavailable
from serve.verifier.outbox import ANCHOR, ANCHORED, ATTESTED, PENDING, Batch, Outbox, OutboxRecord

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
RETRY_S = 2.0  # after a failed pass (chain down): try again this soon, not on every sender step


@dataclass
class ReconcileReport:
    full: bool = False
    checked: int = 0
    resent: list[int] = field(default_factory=list)  # batch ids sent back to pending
    registered: list[str] = field(default_factory=list)  # model ids registered again
    problems: dict[str, str] = field(default_factory=dict)  # model id -> why it cannot be registered


class Reconciler:
    def __init__(self, outbox: Outbox, chain: ChainClient, registry: Callable[[], Registry],
                 refresh_registry: Callable[[], Registry], package_of: Callable[[str], object],
                 state_dir: Path, interval_s: float = DEFAULT_INTERVAL_S, metrics=None):
        """``registry()`` is the resolved registry; ``refresh_registry()`` resolves it again
        (deploying one when the chain lost it); ``package_of(model_id)`` finds the circuit
        package to register a lost model from (raising LookupError when there is none)."""
        self.outbox = outbox
        self.chain = chain
        self._registry = registry
        self._refresh_registry = refresh_registry
        self._package_of = package_of
        self.state_dir = Path(state_dir)
        self.interval_s = float(interval_s)
        self.metrics = metrics
        self._next_at = 0.0
        self._full_requested = threading.Event()
        self._full_requested.set()  # the first pass, at start, is a full one
        self.last_report: ReconcileReport | None = None

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next_at

    def request_full(self) -> None:
        """Something (GetAttestation) saw the chain deny a record: check everything soon."""
        self._full_requested.set()
        self._next_at = 0.0

    def _count(self, what: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.reconciled.labels(what).inc(n)

    def run(self) -> ReconcileReport:
        full = self._full_requested.is_set()
        self._full_requested.clear()
        try:
            report = self._run(full)
        except BaseException:
            if full:
                self._full_requested.set()  # not done: do it again next time
            self._next_at = time.monotonic() + min(self.interval_s, RETRY_S)
            raise
        self._next_at = time.monotonic() + self.interval_s
        self.last_report = report
        if report.resent or report.registered or report.problems:
            log.warning("reconciled with the chain: %d batch(es) sent again, models registered again: %s, problems: %s",
                        len(report.resent), report.registered or "none", report.problems or "none")
        return report

    def _run(self, full: bool) -> ReconcileReport:
        registry = self._registry()
        if not self.chain.has_code(registry.address):
            log.warning("the registry %s has no code on chain %d now; resolving it again", registry.address,
                        self.chain.chain_id())
            registry = self._refresh_registry()
            full = True
        if not full:
            full = self._chain_changed()
        report = ReconcileReport(full=full)
        for model_id in self.outbox.model_ids_in_use():
            if not registry.is_registered(model_id):
                problem = self.register_again(model_id)
                if problem is None:
                    report.registered.append(model_id)
                else:
                    report.problems[model_id] = problem
        if full:
            for batch in self.outbox.confirmed_batches():
                report.checked += 1
                missing = self._missing(registry, batch)
                if missing:
                    self.outbox.unconfirm(batch.id, missing)
                    report.resent.append(batch.id)
            self._count("batch", len(report.resent))
        return report

    def _chain_changed(self) -> bool:
        """True when the block that confirmed our newest batch is gone or is another block."""
        newest = self.outbox.confirmed_batches(newest_first=True, limit=1)
        if not newest or newest[0].block_number is None:
            return False
        batch = newest[0]
        if batch.block_hash is None:
            return True
        block = self.chain.rpc(lambda: self.chain.w3.eth.get_block(batch.block_number)) \
            if self.chain.block_number() >= batch.block_number else None
        return block is None or "0x" + bytes(block["hash"]).hex() != batch.block_hash.lower()

    def _missing(self, registry: Registry, batch: Batch) -> str | None:
        """Why the chain does not have what ``batch`` recorded; None when it does."""
        if batch.kind == ANCHOR:
            if registry.anchor_info(batch.root)["block_number"] == 0:
                return (f"the registry no longer has root {batch.root} (reorg or chain reset since block "
                        f"{batch.block_number}); sending it again")
            return None
        for proof_hash, model_id in self.outbox.batch_proofs(batch.id):
            record = registry.attestation(proof_hash)
            if record["block_number"] == 0 or record["model_id"].lower() != model_id.lower():
                return (f"the registry no longer has the attestation of {proof_hash} (reorg or chain reset since "
                        f"block {batch.block_number}); sending it again")
        return None

    def register_again(self, model_id: str) -> str | None:
        """Registers a model the chain lost, from its package; None when done, else why not."""
        registry = self._registry()
        try:
            if registry.is_registered(model_id):
                return None
            if registry.is_deprecated(model_id):
                return "the model is deprecated"
            if not registry.has_role("registrar", self.chain.address):
                return (f"the model is not registered in {registry.address} and this key ({self.chain.address}) "
                        f"lacks the registrar role: run `zkserve register` with a registrar key")
            try:
                package = self._package_of(model_id)
            except LookupError as error:
                return f"the model is not registered and no circuit package for it is known here ({error})"
            registry.register_model(package, self.state_dir)
        except ChainUnavailable:
            raise
        except ChainError as error:
            return f"registering it again failed: {error}"
        log.warning("model %s was not registered on chain %d (chain reset?): registered it again", model_id,
                    self.chain.chain_id())
        self._count("model")
        return None


class ChainTruth:
    """Checks a final record against the registry before it is shown."""

    def __init__(self, registry: Callable[[], Registry | None], reconciler: Reconciler | None = None):
        self._registry = registry
        self.reconciler = reconciler

    def check(self, record: OutboxRecord) -> OutboxRecord:
        if record.status not in (ANCHORED, ATTESTED):
            return record
        registry = self._registry()
        try:
            if registry is None:
                raise ChainUnavailable("the registry is not resolved yet")
            if record.status == ANCHORED:
                held = registry.is_anchored(record.leaf, record.merkle_path, record.merkle_root)
            else:
                on_chain = registry.attestation(record.proof_hash)
                held = on_chain["block_number"] != 0 and on_chain["model_id"].lower() == record.model_id.lower()
        except ChainError as error:
            return replace(record, status=PENDING, finalized_at=None,
                           last_error=f"{record.status} in block {record.block_number} as last seen, but the chain "
                                      f"cannot be asked now ({error})")
        if held:
            return record
        if self.reconciler is not None:
            self.reconciler.request_full()
        return replace(record, status=PENDING, finalized_at=None,
                       last_error=f"the chain does not have it now (it was {record.status} in block "
                                  f"{record.block_number}: reorg or chain reset); the verifier sends it again")
