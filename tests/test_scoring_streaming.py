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
