"""Outbox bookkeeping the reconciliation relies on, and the insecure-SRS rule: plain SQLite
and pure functions, no chain or server."""

from __future__ import annotations

import sqlite3
import time
from types import SimpleNamespace

import pytest

from serve.chain.registry import insecure_srs_refusal
from serve.verifier.outbox import ANCHORED, PENDING, REJECTED, Outbox, reason_kind


def leaf(n: int) -> str:
    return "0x" + bytes([n]).rjust(32, b"\x01").hex()


def add(outbox, n: int, model: str = "0xaa", rows: int = 1):
    return outbox.add(f"0x{n:064x}", model, "anchor", "0x" + "00" * 32, leaf(n), rows=rows)


def test_batches_state_rows_per_model(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    for n, model in enumerate(["0xaa", "0xbb", "0xaa"], start=1):
        add(outbox, n, model, rows=4)
    assert outbox.form_batches(3, 3600) == 1
    batch = outbox.next_batch()
    assert batch.model_ids == ["0xaa", "0xbb"] and batch.model_rows == [8, 4]


def test_unconfirm_sends_a_batch_again(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    for n in (1, 2):
        add(outbox, n)
    outbox.form_batches(2, 3600)
    batch = outbox.next_batch()
    outbox.record_transaction(batch.id, "0x" + "11" * 32, 5, b"raw")
    outbox.confirm(batch.id, "0x" + "11" * 32, 7, "0x" + "22" * 32)
    assert outbox.get(f"0x{1:064x}").status == ANCHORED
    assert outbox.confirmed_batches()[0].block_hash == "0x" + "22" * 32
    outbox.unconfirm(batch.id, "the registry no longer has root")
    record = outbox.get(f"0x{1:064x}")
    assert record.status == PENDING and record.block_number is None and record.merkle_path  # same batch, same path
    assert outbox.transactions(batch.id) == [] and outbox.next_batch().id == batch.id
    assert outbox.confirmed_batches() == []


def test_reject_one_model_rebatches_the_rest(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    add(outbox, 1, "0xaa")
    add(outbox, 2, "0xbb")
    outbox.form_batches(2, 3600)
    batch = outbox.next_batch()
    outbox.reject(batch.id, "contract refused it: DeprecatedModel(0xaa)", model_id="0xaa")
    assert outbox.get(f"0x{1:064x}").status == REJECTED
    survivor = outbox.get(f"0x{2:064x}")
    assert survivor.status == PENDING and survivor.batch_id is None
    assert outbox.rejected_by_reason() == {"DeprecatedModel": 1}
    assert outbox.form_batches(1, 3600) == 1 and outbox.next_batch().model_ids == ["0xbb"]


def test_an_older_outbox_file_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE proofs (proof_hash TEXT PRIMARY KEY, model_id TEXT NOT NULL, mode TEXT NOT NULL,
        instances_hash TEXT NOT NULL, leaf TEXT NOT NULL UNIQUE, proof BLOB, instances TEXT,
        status TEXT NOT NULL DEFAULT 'pending', batch_id INTEGER, merkle_path TEXT, reason TEXT,
        submitted_at REAL NOT NULL, finalized_at REAL);
        CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, root TEXT,
                              size INTEGER NOT NULL,
        model_ids TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued', tx_hash TEXT, block_number INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT,
        created_at REAL NOT NULL, confirmed_at REAL);
        INSERT INTO batches (kind, root, size, model_ids, created_at) VALUES ('anchor', '0x01', 2, '["0xaa"]', 0);""")
    db.commit()
    db.close()
    batch = Outbox(path).next_batch()
    assert batch.model_rows == [2]  # one row per proof, as before usage was counted
    assert batch.model_ids == ["0xaa"] and batch.block_hash is None


@pytest.mark.parametrize(
    "reason, kind",
    [
        ("contract refused it: DeprecatedModel(0x12)", "DeprecatedModel"),
        ("contract refused it: ProofRejected(0x12)", "ProofRejected"),
        ("something odd: !!", "other"),
    ],
)
def test_reason_kind(reason, kind):
    assert reason_kind(reason) == kind


@pytest.mark.parametrize(
    "insecure, chain_id, local, allow, refused",
    [
        (False, 1, False, False, False),  # a ceremony SRS goes anywhere
        (True, 31337, True, False, False),  # the local anvil zkserve starts
        (True, 31337, False, False, True),  # an anvil given by URL is someone's chain
        (True, 1, False, False, True),
        (True, 1, False, True, False),  # explicitly allowed
    ],
)
def test_insecure_srs_refusal(insecure, chain_id, local, allow, refused):
    package = SimpleNamespace(insecure=insecure, name="demo-mlp")
    message = insecure_srs_refusal(package, chain_id, local, allow)
    assert (message is not None) == refused
    if refused:
        assert "--allow-insecure-srs" in message and str(chain_id) in message


def test_a_failed_reconciliation_is_retried_soon_not_on_every_step(tmp_path):
    from serve.chain.rpc import ChainUnavailable
    from serve.verifier.reconcile import RETRY_S, Reconciler

    def down():
        raise ChainUnavailable("http://node unreachable")

    reconciler = Reconciler(
        Outbox(tmp_path / "o.sqlite"),
        chain=None,
        registry=down,
        refresh_registry=down,
        package_of=down,
        state_dir=tmp_path,
        interval_s=30,
    )
    assert reconciler.due()
    with pytest.raises(ChainUnavailable):
        reconciler.run()
    assert not reconciler.due()
    assert reconciler.due(time.monotonic() + RETRY_S + 0.1)
    reconciler.request_full()
    assert reconciler.due()


def test_a_lost_registration_without_the_registrar_role_is_reported(tmp_path):
    from types import SimpleNamespace as Fake

    from serve.verifier.reconcile import Reconciler

    registry = Fake(
        address="0xREG",
        is_registered=lambda _: False,
        is_deprecated=lambda _: False,
        has_role=lambda role, account: role == "anchorer",
    )
    chain = Fake(address="0xANCHORER", chain_id=lambda: 1)
    reconciler = Reconciler(
        Outbox(tmp_path / "o.sqlite"),
        chain,
        lambda: registry,
        lambda: registry,
        package_of=lambda _: pytest.fail("must not register without the role"),
        state_dir=tmp_path,
    )
    problem = reconciler.register_again("0xaa")
    assert "lacks the registrar role" in problem and "0xANCHORER" in problem
    registry.is_deprecated = lambda _: True
    assert reconciler.register_again("0xaa") == "the model is deprecated"
