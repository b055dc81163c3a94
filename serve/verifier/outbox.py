"""The verifier's outbox: every proof accepted by Submit, and the transactions that record
it on chain, in one SQLite file (WAL mode, synchronous=FULL).

A proof is committed here before Submit answers, and every transaction is committed
(nonce, hash, signed bytes) before it is broadcast, so after a kill -9 the sender finds
everything it needs to resume: proofs not yet batched, batches not yet confirmed, and the
exact transactions it may already have sent.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serve.merkle import MerkleTree

PENDING, ANCHORED, ATTESTED, REJECTED = "pending", "anchored", "attested", "rejected"
FINAL = (ANCHORED, ATTESTED, REJECTED)
ANCHOR, ONCHAIN = "anchor", "onchain"

SCHEMA = """
CREATE TABLE IF NOT EXISTS proofs (
    proof_hash     TEXT PRIMARY KEY,
    model_id       TEXT NOT NULL,
    mode           TEXT NOT NULL CHECK (mode IN ('anchor', 'onchain')),
    instances_hash TEXT NOT NULL,
    leaf           TEXT NOT NULL UNIQUE,
    proof          BLOB,             -- raw proof bytes, kept only for onchain mode (to resend after a reorg)
    instances      TEXT,             -- JSON decimal strings, kept only for onchain mode
    rows           INTEGER NOT NULL DEFAULT 1,  -- rows the proof proves (read from its instances)
    status         TEXT NOT NULL DEFAULT 'pending',
    batch_id       INTEGER REFERENCES batches(id),
    merkle_path    TEXT,             -- JSON hex list, anchor mode
    reason         TEXT,
    submitted_at   REAL NOT NULL,
    finalized_at   REAL
);
CREATE INDEX IF NOT EXISTS proofs_unbatched ON proofs(mode, status, batch_id, submitted_at);
CREATE TABLE IF NOT EXISTS batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL CHECK (kind IN ('anchor', 'onchain')),
    root            TEXT,            -- anchor batches
    size            INTEGER NOT NULL,
    model_ids       TEXT NOT NULL,   -- JSON list
    model_rows      TEXT,            -- JSON list: rows proven per model_ids entry
    state           TEXT NOT NULL DEFAULT 'queued',  -- queued | sent | confirmed | rejected
    tx_hash         TEXT,            -- the confirmed transaction
    block_number    INTEGER,
    block_hash      TEXT,            -- of the confirming block: a reorg or chain reset changes it
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    confirmed_at    REAL
);
CREATE TABLE IF NOT EXISTS transactions (
    tx_hash  TEXT PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    nonce    INTEGER NOT NULL,
    raw      BLOB NOT NULL,
    sent_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_batch ON transactions(batch_id);
"""
# Columns added after the first release: (table, column, definition), added to older files on open.
MIGRATIONS = (
    ("proofs", "rows", "INTEGER NOT NULL DEFAULT 1"),
    ("batches", "model_rows", "TEXT"),
    ("batches", "block_hash", "TEXT"),
)


@dataclass
class OutboxRecord:
    """The verifier's record of one submitted proof: its mode, chain status and batch (not the
    serving app's ``serve.protocol.types.ProofRecord``, which is a request's proof)."""

    proof_hash: str
    model_id: str
    mode: str
    instances_hash: str
    leaf: str
    status: str
    submitted_at: float
    batch_id: int | None = None
    merkle_path: list[str] = field(default_factory=list)
    reason: str | None = None
    finalized_at: float | None = None
    # from the batch
    merkle_root: str | None = None
    batch_size: int = 0
    tx_hash: str | None = None
    block_number: int | None = None
    attempts: int = 0
    last_error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass
class Batch:
    id: int
    kind: str
    root: str | None
    size: int
    model_ids: list[str]
    state: str
    attempts: int
    last_error: str | None
    model_rows: list[int] = field(default_factory=list)  # rows per model_ids entry
    tx_hash: str | None = None
    block_number: int | None = None
    block_hash: str | None = None

    @classmethod
    def from_row(cls, row) -> Batch:
        model_ids = json.loads(row["model_ids"])
        rows = json.loads(row["model_rows"]) if row["model_rows"] else [row["size"]] * len(model_ids)
        return cls(row["id"], row["kind"], row["root"], row["size"], model_ids, row["state"], row["attempts"],
                   row["last_error"], rows, row["tx_hash"], row["block_number"], row["block_hash"])


@dataclass
class Transaction:
    tx_hash: str
    nonce: int
    raw: bytes
    sent_at: float


class Outbox:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed Submit survives power loss too
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)  # notified after every commit that changes a proof

    def _migrate(self) -> None:
        for table, column, definition in MIGRATIONS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, notify: bool = True):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if notify:
                self.changed.notify_all()

    # ---- Submit ----

    def add(self, proof_hash: str, model_id: str, mode: str, instances_hash: str, leaf: str,
            proof: bytes | None = None, instances: list[int] | None = None, rows: int = 1) -> tuple[OutboxRecord, bool]:
        """Queues a verified proof; returns (record, newly_added). A known hash is left as it is.
        ``rows``: the rows the proof proves (from its instances), counted on chain as usage."""
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO proofs (proof_hash, model_id, mode, instances_hash, leaf, proof, instances, "
                "rows,"
                " submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    proof_hash,
                    model_id,
                    mode,
                    instances_hash,
                    leaf,
                    proof if mode == ONCHAIN else None,
                    json.dumps([str(i) for i in instances]) if mode == ONCHAIN and instances is not None else None,
                    int(rows),
                    time.time(),
                ),
            ).rowcount
        return self.get(proof_hash), bool(inserted)

    # ---- lookups ----

    def get(self, proof_hash: str) -> OutboxRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT p.*, b.root AS b_root, b.size AS b_size, b.tx_hash AS b_tx, b.block_number AS b_block,"
                " b.attempts AS b_attempts, b.last_error AS b_error,"
                " (SELECT t.tx_hash FROM transactions t WHERE t.batch_id = p.batch_id"
                " ORDER BY t.sent_at DESC LIMIT 1) AS t_latest"
                " FROM proofs p LEFT JOIN batches b ON b.id = p.batch_id WHERE p.proof_hash = ?",
                (proof_hash,),
            ).fetchone()
        if row is None:
            return None
        last_error = row["b_error"]
        if row["status"] == PENDING and not last_error:
            last_error = self._head_of_line_error()
        return OutboxRecord(
            proof_hash=row["proof_hash"],
            model_id=row["model_id"],
            mode=row["mode"],
            instances_hash=row["instances_hash"],
            leaf=row["leaf"],
            status=row["status"],
            submitted_at=row["submitted_at"],
            batch_id=row["batch_id"],
            merkle_path=json.loads(row["merkle_path"]) if row["merkle_path"] else [],
            reason=row["reason"],
            finalized_at=row["finalized_at"],
            merkle_root=row["b_root"],
            batch_size=row["b_size"] or 0,
            tx_hash=row["b_tx"] or row["t_latest"],
            block_number=row["b_block"],
            attempts=row["b_attempts"] or 0,
            last_error=last_error,
        )

    def _head_of_line_error(self) -> str | None:
        """Why the queue is stuck, for proofs waiting behind the batch that is failing."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, last_error FROM batches WHERE state IN ('queued', 'sent') ORDER BY id LIMIT 1"
            ).fetchone()
        return f"waiting behind batch {row['id']}: {row['last_error']}" if row and row["last_error"] else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {row[0]: row[1] for row in self._db.execute("SELECT status, COUNT(*) FROM proofs GROUP BY status")}

    def wait_for_change(self, timeout_s: float) -> None:
        with self.changed:
            self.changed.wait(timeout_s)

    # ---- batching ----

    def form_batches(self, anchor_batch_size: int, anchor_max_age_s: float, now: float | None = None) -> int:
        """Groups unbatched proofs: anchor proofs into Merkle batches (full ones, or the
        rest once the oldest is old enough), each onchain proof into its own batch."""
        now = time.time() if now is None else now
        formed = 0
        with self._transaction() as db:
            for row in db.execute(
                "SELECT proof_hash, model_id, rows FROM proofs WHERE mode = 'onchain'"
                " AND status = 'pending' AND batch_id IS NULL ORDER BY submitted_at"
            ).fetchall():
                batch_id = self._insert_batch(db, ONCHAIN, None, 1, [row["model_id"]], [row["rows"]], now)
                db.execute("UPDATE proofs SET batch_id = ? WHERE proof_hash = ?", (batch_id, row["proof_hash"]))
                formed += 1
            while True:
                rows = db.execute(
                    "SELECT proof_hash, model_id, leaf, rows, submitted_at FROM proofs"
                    " WHERE mode = 'anchor'"
                    " AND status = 'pending' AND batch_id IS NULL ORDER BY submitted_at, rowid LIMIT ?",
                    (anchor_batch_size,),
                ).fetchall()
                if not rows or (len(rows) < anchor_batch_size and now - rows[0]["submitted_at"] < anchor_max_age_s):
                    break
                tree = MerkleTree.build([bytes.fromhex(r["leaf"][2:]) for r in rows])
                model_ids = sorted({r["model_id"] for r in rows})
                model_rows = [sum(r["rows"] for r in rows if r["model_id"] == m) for m in model_ids]
                batch_id = self._insert_batch(db, ANCHOR, "0x" + tree.root.hex(), len(rows), model_ids, model_rows, now)
                for index, r in enumerate(rows):
                    path = json.dumps(["0x" + h.hex() for h in tree.path(index)])
                    db.execute(
                        "UPDATE proofs SET batch_id = ?, merkle_path = ? WHERE proof_hash = ?",
                        (batch_id, path, r["proof_hash"]),
                    )
                formed += 1
        return formed

    @staticmethod
    def _insert_batch(
        db, kind: str, root: str | None, size: int, model_ids: list[str], model_rows: list[int], now: float
    ) -> int:
        return db.execute(
            "INSERT INTO batches (kind, root, size, model_ids, model_rows, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, root, size, json.dumps(model_ids), json.dumps(model_rows), now),
        ).lastrowid

    def oldest_unbatched_age(self, now: float | None = None) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(submitted_at) FROM proofs WHERE status = 'pending' AND batch_id IS NULL"
            ).fetchone()
        return None if row[0] is None else (time.time() if now is None else now) - row[0]

    # ---- sending ----

    def next_batch(self, now: float | None = None) -> Batch | None:
        """The oldest batch not yet on chain, if its backoff has passed. One at a time, in
        order, so there is never more than one of our transactions in flight."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM batches WHERE state IN ('queued', 'sent') ORDER BY id LIMIT 1"
            ).fetchone()
        if row is None or row["next_attempt_at"] > now:
            return None
        return Batch.from_row(row)

    def onchain_payload(self, batch: Batch) -> tuple[str, str, bytes, list[int]]:
        with self._lock:
            row = self._db.execute(
                "SELECT proof_hash, model_id, proof, instances FROM proofs WHERE batch_id = ?", (batch.id,)
            ).fetchone()
        return row["proof_hash"], row["model_id"], bytes(row["proof"]), [int(i) for i in json.loads(row["instances"])]

    def transactions(self, batch_id: int) -> list[Transaction]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM transactions WHERE batch_id = ? ORDER BY sent_at DESC", (batch_id,)
            ).fetchall()
        return [Transaction(r["tx_hash"], r["nonce"], bytes(r["raw"]), r["sent_at"]) for r in rows]

    def record_transaction(self, batch_id: int, tx_hash: str, nonce: int, raw: bytes) -> None:
        """Committed before the broadcast: a crash after sending still knows the hash."""
        with self._transaction(notify=False) as db:
            db.execute(
                "INSERT OR IGNORE INTO transactions (tx_hash, batch_id, nonce, raw, sent_at) VALUES (?, ?, ?, ?, ?)",
                (tx_hash, batch_id, nonce, raw, time.time()),
            )
            db.execute("UPDATE batches SET state = 'sent' WHERE id = ?", (batch_id,))

    def requeue(self, batch_id: int) -> None:
        """The nonce of our last transaction went to another one: sign afresh."""
        with self._transaction(notify=False) as db:
            db.execute("UPDATE batches SET state = 'queued' WHERE id = ?", (batch_id,))

    def retry_later(self, batch_id: int, error: str, base_s: float, max_s: float) -> float:
        """Exponential backoff with jitter; the error is shown to GetAttestation callers."""
        with self._transaction() as db:
            attempts = db.execute(
                "UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE id = ? RETURNING attempts",
                (error, batch_id),
            ).fetchone()[0]
            delay = min(max_s, base_s * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
            db.execute("UPDATE batches SET next_attempt_at = ? WHERE id = ?", (time.time() + delay, batch_id))
        return delay

    def confirm(self, batch_id: int, tx_hash: str, block_number: int, block_hash: str | None = None) -> None:
        # An onchain proof keeps its bytes: a reorg or chain reset may need it sent again.
        with self._transaction() as db:
            kind = db.execute("SELECT kind FROM batches WHERE id = ?", (batch_id,)).fetchone()["kind"]
            now = time.time()
            db.execute(
                "UPDATE batches SET state = 'confirmed', tx_hash = ?, block_number = ?, block_hash = ?,"
                " confirmed_at = ?, last_error = NULL WHERE id = ?",
                (tx_hash, block_number, block_hash, now, batch_id),
            )
            db.execute(
                "UPDATE proofs SET status = ?, finalized_at = ?, reason = NULL WHERE batch_id = ?",
                (ANCHORED if kind == ANCHOR else ATTESTED, now, batch_id),
            )

    def reject(self, batch_id: int, reason: str, tx_hash: str | None = None, model_id: str | None = None) -> None:
        """The contract refused the batch for good: its proofs (or, with ``model_id``, only
        that model's) are final with the reason; the others go back to be batched again."""
        with self._transaction() as db:
            now = time.time()
            db.execute(
                "UPDATE batches SET state = 'rejected', tx_hash = ?, last_error = ? WHERE id = ?",
                (tx_hash, reason, batch_id),
            )
            scope, args = ("", ()) if model_id is None else (" AND model_id = ?", (model_id,))
            db.execute(
                "UPDATE proofs SET status = 'rejected', reason = ?, finalized_at = ?, proof = NULL"
                f" WHERE batch_id = ?{scope}",
                (reason, now, batch_id, *args),
            )
            db.execute(
                "UPDATE proofs SET batch_id = NULL, merkle_path = NULL WHERE batch_id = ? AND status = 'pending'",
                (batch_id,),
            )

    # ---- reconciliation with the chain ----

    def confirmed_batches(self, newest_first: bool = False, limit: int | None = None) -> list[Batch]:
        order = "DESC" if newest_first else "ASC"
        query = f"SELECT * FROM batches WHERE state = 'confirmed' ORDER BY id {order}" + (" LIMIT ?" if limit else "")
        with self._lock:
            rows = self._db.execute(query, (limit,) if limit else ()).fetchall()
        return [Batch.from_row(row) for row in rows]

    def batch_proofs(self, batch_id: int) -> list[tuple[str, str]]:
        """(proof_hash, model_id) of each proof in the batch."""
        with self._lock:
            rows = self._db.execute(
                "SELECT proof_hash, model_id FROM proofs WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def model_ids_in_use(self) -> list[str]:
        """Models of proofs not rejected: the registrations the chain must still have."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT model_id FROM proofs WHERE status != 'rejected' ORDER BY model_id")
            return [row[0] for row in rows.fetchall()]

    def unconfirm(self, batch_id: int, reason: str) -> None:
        """The chain does not have what this batch recorded (reorg, chain reset): its proofs
        go back to pending and the batch is sent again, signed afresh."""
        with self._transaction() as db:
            db.execute("DELETE FROM transactions WHERE batch_id = ?", (batch_id,))
            db.execute(
                "UPDATE batches SET state = 'queued', tx_hash = NULL, block_number = NULL, block_hash = NULL,"
                " confirmed_at = NULL, attempts = 0, next_attempt_at = 0, last_error = ? WHERE id = ?",
                (reason, batch_id),
            )
            db.execute(
                "UPDATE proofs SET status = 'pending', finalized_at = NULL, reason = NULL WHERE batch_id = ?",
                (batch_id,),
            )

    def forget_transactions(self, batch_id: int) -> None:
        """Our transactions of a batch that the node will never mine (their nonces are beyond
        the account's, after the node lost state): sign afresh."""
        with self._transaction(notify=False) as db:
            db.execute("DELETE FROM transactions WHERE batch_id = ?", (batch_id,))
            db.execute("UPDATE batches SET state = 'queued' WHERE id = ?", (batch_id,))

    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected proofs by the contract error that ended them (for metrics)."""
        with self._lock:
            rows = self._db.execute("SELECT reason FROM proofs WHERE status = 'rejected'").fetchall()
        counts: dict[str, int] = {}
        for (reason,) in rows:
            kind = reason_kind(reason or "")
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def reason_kind(reason: str) -> str:
    """``DeprecatedModel`` from "contract reverted: DeprecatedModel(0x..)", for metric labels."""
    text = reason.split(": ", 1)[-1] if ": " in reason else reason
    name = text.split("(", 1)[0].strip()
    return name if name.isidentifier() else "other"
