"""serve.merkle: trees and paths as AttestationRegistry checks them (the contract side is
in tests/e2e/test_chain_registry.py)."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_abi.packed import encode_packed
from eth_utils import keccak

from serve.merkle import MerkleTree, hash_pair, instances_hash, leaf_of, process_path, verify_path


def leaves(n: int) -> list[bytes]:
    return [keccak(i.to_bytes(32, "big")) for i in range(n)]


def test_pair_hash_is_sorted_and_symmetric():
    a, b = leaves(2)
    assert hash_pair(a, b) == hash_pair(b, a) == keccak(min(a, b) + max(a, b))


def test_single_leaf_is_its_own_root():
    (leaf,) = leaves(1)
    tree = MerkleTree.build([leaf])
    assert tree.root == leaf and tree.path(0) == []


@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_leaf_proves_inclusion(size):
    items = leaves(size)
    tree = MerkleTree.build(items)
    for index, leaf in enumerate(items):
        path = tree.path(index)
        assert len(path) <= (size - 1).bit_length()
        assert verify_path(leaf, path, tree.root)


def test_wrong_leaf_or_path_fails():
    items = leaves(5)
    tree = MerkleTree.build(items)
    assert not verify_path(items[0], tree.path(1), tree.root)
    assert not verify_path(keccak(b"other"), tree.path(0), tree.root)
    assert process_path(items[4], tree.path(4)) == tree.root


def test_rejects_empty_duplicate_and_malformed_leaves():
    with pytest.raises(ValueError, match="at least one"):
        MerkleTree.build([])
    with pytest.raises(ValueError, match="duplicate"):
        MerkleTree.build(leaves(2) * 2)
    with pytest.raises(ValueError, match="32-byte"):
        MerkleTree.build([b"short"])
    with pytest.raises(IndexError):
        MerkleTree.build(leaves(3)).path(3)


def test_leaf_matches_solidity_encoding():
    instances = [0, 1, 2**256 - 1, 21888242871839275222246617145695360494939400904740379587287990663435116740616]
    assert instances_hash(instances) == keccak(encode_packed(["uint256[]"], [instances]))
    model, proof = keccak(b"model"), keccak(b"proof")
    digest = instances_hash(instances)
    assert leaf_of(model, proof, digest) == keccak(encode(["bytes32", "bytes32", "bytes32"], [model, proof, digest]))
