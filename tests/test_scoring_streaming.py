"""Unit tests (no Ray, no server) of the streaming and audit pieces of scoring."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve.merkle import MerkleTree
from serve.scoring.commitment import StreamingRoot, pass_probability, sample_positions
from serve.scoring.inputs import iter_chunks, read_rows


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 64, 100])
def test_streaming_root_equals_merkle_tree(count):
    leaves = [os.urandom(32) for _ in range(count)]
    root = StreamingRoot()
    for leaf in leaves:
        root.add(leaf)
    assert root.root == MerkleTree.build(leaves).root


def test_sample_is_a_function_of_the_seed():
    first = sample_positions(b"s" * 32, 10_000, 50)
    assert first == sample_positions(b"s" * 32, 10_000, 50) and len(set(first)) == 50
    assert first != sample_positions(b"t" * 32, 10_000, 50)
    assert sample_positions(b"s" * 32, 10, 20) == list(range(10))


def test_pass_probability_is_below_the_binomial_bound():
    for fraction in (0.001, 0.01, 0.1):
        exact = pass_probability(100_000, 1000, fraction)
        assert exact <= (1 - fraction) ** 1000 + 1e-12
    assert pass_probability(1000, 1000, 0.01) == 0.0 and pass_probability(1000, 10, 0.0) == 1.0


def test_csv_chunks_keep_row_numbers_and_lines(tmp_path):
    path = tmp_path / "rows.csv"
    lines = ["a,b"] + [f"{i}.0,{i}.5" for i in range(10)]
    lines[4] = "1.0,x"  # data row 3, file line 5
    lines[7] = "1.0"  # data row 6
    path.write_text("\n".join(lines) + "\n")
    chunks = list(iter_chunks(path, [2], chunk_rows=4))
    assert [c.total for c in chunks] == [4, 4, 2] and [c.first_row for c in chunks] == [0, 4, 8]
    errors = {e.row_id: e for c in chunks for e in c.errors}
    assert set(errors) == {3, 6} and errors[3].line == 5 and "not a number" in errors[3].reason
    assert "wrong width" in errors[6].reason
    assert chunks[1].lines.tolist() == [6, 7, 9]
    rows = read_rows(path, [2])
    assert rows.row_ids.tolist() == [0, 1, 2, 4, 5, 7, 8, 9] and rows.total == 10


def test_npy_and_parquet_are_read_in_chunks(tmp_path):
    values = np.arange(40, dtype=np.float64).reshape(10, 4)
    np.save(tmp_path / "rows.npy", values)
    chunks = list(iter_chunks(tmp_path / "rows.npy", [4], chunk_rows=3))
    assert [len(c.row_ids) for c in chunks] == [3, 3, 3, 1]
    assert np.array_equal(np.concatenate([c.values for c in chunks]), values)
    pq.write_table(pa.table({f"f{i}": values[:, i] for i in range(4)}), tmp_path / "rows.parquet", row_group_size=4)
    chunks = list(iter_chunks(tmp_path / "rows.parquet", [4], chunk_rows=3))
    assert np.array_equal(np.concatenate([c.values for c in chunks]), values)


def test_domain_screen_names_input_feature_value_and_domain(tmp_path):
    from circuits import CircuitPackage
    from serve.scoring.screening import domain_check, screen_chunk

    manifest = {"name": "toy", "inputs": [{"name": "x", "shape": [1, 3]}],
                "input_domain": {"x": {"low": [-1, -1, -1], "high": [1, 1, 1], "source": "explicit", "margin": 0}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    package = CircuitPackage(tmp_path, manifest)
    path = tmp_path / "rows.csv"
    path.write_text("0,0,0\n0.5,0,10\n0,0,0\n-3,0,0\n")
    chunk = next(iter_chunks(path, [3]))
    row_ids, values, lines, errors = screen_chunk(domain_check(package), chunk)
    assert row_ids.tolist() == [0, 2] and lines.tolist() == [1, 3]
    assert [(e.row_id, e.line, e.stage) for e in errors] == [(1, 2, "domain"), (3, 4, "domain")]
    assert "input 'x' feature 2 of row 1 is 10" in errors[0].reason and "[-1, 1]" in errors[0].reason


def test_package_travels_by_model_id_into_a_private_cache(tmp_path):
    import stat

    from circuits import CompileOptions
    from circuits.demo import ensure_demo_packages
    from circuits.package import CircuitPackage, PackageError
    from circuits.transport import materialize, pack_package

    source = ensure_demo_packages(["demo-mlp"], CompileOptions(batch=8))["demo-mlp"]
    copy = tmp_path / "head-state" / "pkg"
    import shutil

    shutil.copytree(source.root, copy)
    packed = pack_package(CircuitPackage.load(copy))
    copy.parent.rename(tmp_path / "gone")  # the head's paths are unreadable from now on
    cache = tmp_path / "node-cache"
    package = materialize(source.model_id, packed, cache)
    assert package.model_id == source.model_id and package.root.parent == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert materialize(source.model_id, packed, cache).root == package.root  # cached
    with pytest.raises(PackageError):
        materialize("0x" + "00" * 32, packed, tmp_path / "other-cache")  # a package is not another model
    (package.root / "settings.json").write_text("{}")  # a corrupted cache entry is replaced, not used
    assert materialize(source.model_id, packed, cache).settings_path.read_text() != "{}"


def test_pair_hash_is_keccak_of_the_sorted_pair():
    from eth_utils import keccak

    from serve.merkle import hash_pair

    for _ in range(20):
        a, b = os.urandom(32), os.urandom(32)
        assert hash_pair(a, b) == hash_pair(b, a) == keccak(min(a, b) + max(a, b))
    with pytest.raises(ValueError):
        hash_pair(b"short", os.urandom(32))


def test_batched_digests_and_leaves_equal_the_per_row_definition():
    from serve.scoring.commitment import input_digest, input_digests, row_leaf, row_leaves

    rng = np.random.default_rng(3)
    values, ids = rng.normal(size=(40, 2, 3)), np.arange(40, dtype=np.int64) * 1_000_003
    outputs = [rng.normal(size=(40, 3)), rng.normal(size=(40, 2, 2))]
    digests = input_digests(values)
    leaves = row_leaves(ids, digests, outputs)
    for i in range(40):
        assert digests[32 * i : 32 * i + 32] == input_digest(values[i])
        assert leaves[32 * i : 32 * i + 32] == row_leaf(ids[i], input_digest(values[i]), [o[i] for o in outputs])
    assert input_digests(values[:0]) == row_leaves(ids[:0], b"", [o[:0] for o in outputs]) == b""


def _python_parser_only(monkeypatch):
    from serve.scoring import inputs

    def refuse(*_):
        raise inputs._IrregularCsv
        yield  # a generator, as the fast reader

    monkeypatch.setattr(inputs, "_arrow_csv_blocks", refuse)


@pytest.mark.parametrize("case", ["regular", "no_header", "blank_late", "bad_cell_late", "nan_inf", "wide_late",
                                  "empty_and_na", "spaces_and_quotes", "crlf"])
def test_fast_csv_reader_gives_what_the_record_parser_gives(tmp_path, monkeypatch, case):
    """pyarrow's reader for regular files, the record parser from the first irregular block on:
    the chunks (row ids, values, lines, errors) are the same as the record parser's alone."""
    rng = np.random.default_rng(4)
    rows = [",".join(f"{v:.4f}" for v in row) for row in rng.uniform(-1, 1, (2500, 4))]
    header = ["a,b,c,d"]
    lines = {
        "regular": header + rows,
        "no_header": rows,
        "blank_late": header + rows[:2100] + [""] + rows[2100:],
        "bad_cell_late": header + rows[:1500] + ["1,x,2,3"] + rows[1500:],
        "nan_inf": header + rows[:10] + ["nan,1,2,3", "inf,1,1,1", "-inf,0,0,0", "1e-3,+1,.5,5."] + rows[10:],
        "wide_late": rows[:1200] + ["1,2,3,4,5"] + rows[1200:],
        "empty_and_na": rows[:700] + ["1,,2,3", "NA,1,2,3", "null,1,1,1"] + rows[700:],
        "spaces_and_quotes": header + rows[:5] + [" 1, 2,3 ,4", '"1","2","3","4"'] + rows[5:],
        "crlf": header + rows,
    }[case]
    path = tmp_path / "rows.csv"
    path.write_bytes((("\r\n" if case == "crlf" else "\n").join(lines) + "\n").encode())
    fast = list(iter_chunks(path, [4], chunk_rows=1000))
    _python_parser_only(monkeypatch)
    slow = list(iter_chunks(path, [4], chunk_rows=1000))
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert (a.index, a.first_row, a.total) == (b.index, b.first_row, b.total)
        assert np.array_equal(a.row_ids, b.row_ids) and np.array_equal(a.values, b.values)
        assert np.array_equal(a.lines, b.lines)
        assert [(e.row_id, e.reason, e.line) for e in a.errors] == [(e.row_id, e.reason, e.line) for e in b.errors]


def test_chunk_table_holds_scored_and_refused_rows_in_row_order():
    from serve.scoring.commitment import input_digests, row_leaves
    from serve.scoring.infer import _chunk_table, rows_schema
    from serve.scoring.inputs import RowError

    ids = np.array([0, 2, 3], dtype=np.int64)
    values = np.arange(6, dtype=np.float64).reshape(3, 2)
    outputs = [values * 2]
    digests = input_digests(values)
    result = {"error": "", "outputs": outputs, "digests": digests, "leaves": row_leaves(ids, digests, outputs)}
    table = _chunk_table(rows_schema(["y"]), ["y"], ids, [RowError(1, "not a number", 3)], result)
    rows = table.to_pylist()
    assert [r["row_id"] for r in rows] == [0, 1, 2, 3] and [r["status"] for r in rows] == ["ok", "error", "ok", "ok"]
    assert rows[1]["line"] == 3 and rows[1]["leaf"] is None and rows[1]["reason"] == "not a number"
    assert rows[2]["y"] == [4.0, 6.0] and rows[2]["input_digest"] == digests[32:64]
    failed = _chunk_table(rows_schema(["y"]), ["y"], ids, [], {"error": "inference failed: boom", "outputs": [],
                                                               "digests": b"", "leaves": b""})
    assert failed.column("status").to_pylist() == ["error"] * 3 and failed.column("leaf").null_count == 3
    assert set(failed.column("reason").to_pylist()) == {"inference failed: boom"}


@pytest.mark.parametrize("runs", [[1], [2, 3], [5, 64, 1, 130], [0, 1000], [3, 1, 1, 512, 7]])
def test_streaming_root_extend_equals_merkle_tree(runs):
    leaves = [os.urandom(32) for _ in range(sum(runs))]
    root, done = StreamingRoot(), 0
    for size in runs:
        root.extend(leaves[done : done + size]) if size != 1 else root.add(leaves[done])
        done += size
    assert root.count == len(leaves) and root.root == MerkleTree.build(leaves).root
