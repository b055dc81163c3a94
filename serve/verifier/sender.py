"""Moves batches from the outbox onto the chain, one transaction in flight at a time.

For the oldest unconfirmed batch it: signs a transaction with the account's next nonce
(recorded before broadcasting), broadcasts it, and waits for a receipt with the configured
confirmations. It looks at every transaction it ever signed for the batch, so a receipt
for an earlier attempt still counts. A transaction the node forgot (dropped, or a node
restarted without it) is broadcast again byte for byte; one whose nonce went to another
transaction (replaced) is signed afresh, and so is one whose nonce lies beyond the
account's (the node lost state). Every failure is retried with backoff; nothing leaves the
outbox except by a receipt, or by the contract refusing it for a reason no retry can fix
(the proof does not verify, the model is deprecated, or unknown and not registrable).

The chain is the truth: the reconciler (serve/verifier/reconcile.py) runs in this thread,
at start and periodically, and sends again whatever the chain no longer has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from serve.chain.registry import Registry
from serve.chain.rpc import ChainClient, ChainError, ChainUnavailable, NonceTooLow, SignedTx, TxReverted
from serve.verifier.outbox import ANCHOR, Batch, Outbox
from serve.verifier.reconcile import Reconciler

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.2
# Contract errors no retry can fix: the proofs they name end rejected, with the reason.
FINAL_ERRORS = ("ProofRejected", "ProofRecordedUnderOtherModel", "DeprecatedModel")


class ChainSender:
    def __init__(self, outbox: Outbox, chain: ChainClient, registry: Callable[[], Registry], settings: dict,
                 reconciler: Reconciler | None = None, durable: Callable[[float], bool] | None = None):
        """``durable(t)``: whether the node has persisted its state since time ``t`` (the local
        anvil's periodic dump); a receipt counts as confirmed only once it is on disk."""
        self.outbox = outbox
        self.reconciler = reconciler
        self.durable = durable
        self._seen: dict[str, float] = {}  # tx hash -> when its receipt was first seen
        self.chain = chain
        self._registry = registry  # resolved lazily: the chain may be down when the service starts
        self.batch_size = int(settings["anchor_batch_size"])
        self.max_age_s = float(settings["anchor_max_age_s"])
        self.confirmations = max(1, int(settings["confirmations"]))
        self.retry_base_s = float(settings["retry_base_s"])
        self.retry_max_s = float(settings["retry_max_s"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chain-sender", daemon=True)

    def start(self) -> ChainSender:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with self.outbox.changed:
            self.outbox.changed.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.step():
                    self.outbox.wait_for_change(IDLE_WAIT_S)
            except Exception:  # noqa: BLE001 - the loop must survive anything; the outbox keeps the work
                log.exception("chain sender step failed; retrying")
                self._stop.wait(self.retry_base_s)

    def step(self) -> bool:
        """One unit of work; False when there was nothing to do right now."""
        if self.reconciler is not None and self.reconciler.due():
            try:
                self.reconciler.run()
            except ChainError as error:
                log.warning("reconciliation with the chain failed (%s); retrying later", error)
        self.outbox.form_batches(self.batch_size, self.max_age_s)
        batch = self.outbox.next_batch()
        if batch is None:
            return False
        try:
            self.advance(batch)
        except ChainUnavailable as error:
            delay = self.outbox.retry_later(batch.id, str(error), self.retry_base_s, self.retry_max_s)
            log.warning("batch %d: %s; retrying in %.1f s", batch.id, error, delay)
        except TxReverted as error:
            self._reverted(batch, error)
        return True

    # ---- one batch ----

    def advance(self, batch: Batch) -> None:
        if batch.state == "sent" and self._check_sent(batch):
            return
        registry = self._registry()
        call = (registry.anchor_call(bytes.fromhex(batch.root[2:]), batch.size, batch.model_ids, batch.model_rows)
                if batch.kind == ANCHOR
                else registry.attest_call(*self._attest_args(batch)))
        signed = self.chain.build_and_sign(call, self.chain.pending_nonce(), registry.abi)
        self.outbox.record_transaction(batch.id, signed.tx_hash, signed.nonce, signed.raw)
        log.info(
            "batch %d (%s, %d proofs): sending %s nonce %d",
            batch.id,
            batch.kind,
            batch.size,
            signed.tx_hash,
            signed.nonce,
        )
        try:
            self.chain.broadcast(signed)
        except NonceTooLow:
            self.outbox.requeue(batch.id)
            return
        self._check_sent(batch)

    def _attest_args(self, batch: Batch) -> tuple[str, bytes, list[int]]:
        _, model_id, proof, instances = self.outbox.onchain_payload(batch)
        return model_id, proof, instances

    def _check_sent(self, batch: Batch) -> bool:
        """Settles a sent batch if any of its transactions has a receipt; True when the batch
        needs nothing more now (confirmed, rejected, or waiting for its receipt)."""
        transactions = self.outbox.transactions(batch.id)
        latest_nonce = self.chain.latest_nonce()  # read before the receipts, so a race can't fake a replacement
        for tx in transactions:
            receipt = self.chain.receipt(tx.tx_hash)
            if receipt is None:
                continue
            depth = self.chain.block_number() - receipt["blockNumber"] + 1
            if depth < self.confirmations:
                self.outbox.wait_for_change(IDLE_WAIT_S)
                return True
            if receipt["status"] == 1 and not self._persisted(tx.tx_hash):
                self.outbox.wait_for_change(IDLE_WAIT_S)
                return True
            if receipt["status"] == 1:
                block_hash = receipt.get("blockHash")
                self.outbox.confirm(
                    batch.id, tx.tx_hash, receipt["blockNumber"], "0x" + bytes(block_hash).hex() if block_hash else None
                )
                log.info("batch %d confirmed in block %d (%s)", batch.id, receipt["blockNumber"], tx.tx_hash)
                return True
            raise TxReverted("the transaction failed when mined", tx.tx_hash)
        newest = transactions[0]
        if newest.nonce > self.chain.pending_nonce():
            # Nonces in between are gone (the node lost state): this one would wait for ever.
            log.warning("batch %d: nonce %d is beyond the account's next; signing again", batch.id, newest.nonce)
            self.outbox.forget_transactions(batch.id)
            return True
        if latest_nonce > newest.nonce:
            log.warning("batch %d: nonce %d was used by another transaction; signing again", batch.id, newest.nonce)
            return False
        if not self.chain.is_known(newest.tx_hash):
            log.warning("batch %d: %s unknown to the node (dropped); broadcasting it again", batch.id, newest.tx_hash)
            try:
                self.chain.broadcast(SignedTx(newest.tx_hash, newest.raw, newest.nonce))
            except NonceTooLow:
                return False
        self.outbox.wait_for_change(IDLE_WAIT_S)
        return True

    def _persisted(self, tx_hash: str) -> bool:
        """The local anvil keeps blocks in memory and dumps them every second: a block counts
        as confirmed only after a dump that followed its receipt, so a kill -9 loses none."""
        if self.durable is None:
            return True
        seen = self._seen.setdefault(tx_hash, time.time())
        if not self.durable(seen):
            return False
        self._seen.pop(tx_hash, None)
        return True

    def _reverted(self, batch: Batch, error: TxReverted) -> None:
        # Final: a verifier that refuses the proof, a deprecated model, a proof recorded under
        # another model. An unknown model is registered again from its package when this key
        # may (a chain reset); when it cannot be, that is final too. Anything else (a role
        # missing) may be fixed by an operator, so it is retried.
        reason = error.reason
        kind = reason.split("(", 1)[0]
        if kind == "UnknownModel":
            model_id = _model_in(reason, batch)
            problem = (
                self.reconciler.register_again(model_id)
                if self.reconciler is not None and model_id
                else "no package to register it from"
            )
            if problem is None:
                self.outbox.requeue(batch.id)
                return
            reason, kind = f"{reason}: {problem}", "final"
        if kind in FINAL_ERRORS or kind == "final":
            model_id = _model_in(reason, batch) if batch.kind == ANCHOR and len(batch.model_ids) > 1 else None
            log.warning("batch %d: contract refused it for good: %s", batch.id, reason)
            self.outbox.reject(batch.id, f"contract refused it: {reason}", error.tx_hash, model_id=model_id)
            return
        self.outbox.requeue(batch.id)
        delay = self.outbox.retry_later(
            batch.id, f"contract reverted: {error.reason}", self.retry_base_s, self.retry_max_s
        )
        log.warning("batch %d reverted (%s); retrying in %.1f s", batch.id, error.reason, delay)


def _model_in(reason: str, batch: Batch) -> str | None:
    """The model id a revert names (``UnknownModel(0x..)``), if it is one of the batch's."""
    for model_id in batch.model_ids:
        if model_id.lower() in reason.lower():
            return model_id
    return None


__all__ = ["ChainSender", "ChainError"]
