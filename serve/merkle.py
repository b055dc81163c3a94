"""Merkle trees of attestation leaves, hashed exactly as ``AttestationRegistry`` checks them.

Pairs are hashed sorted (``keccak256(min(a, b) ++ max(a, b))``, as OpenZeppelin's
MerkleProof), so an inclusion path is just the list of sibling hashes, with no left/right
flags. A node without a sibling moves up a level unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from eth_abi import encode
from eth_utils import keccak

Hash = bytes  # 32 bytes


class _PairKeccak(threading.local):
    """keccak256 of one 64-byte message through pycryptodome's C core, one reused state per
    thread (the C calls release the GIL): eth_utils.keccak spends most of its time per call in
    Python wrappers, and a job's Merkle tree hashes as many pairs as it has rows."""

    def __init__(self) -> None:
        from Crypto.Hash.keccak import _raw_keccak_lib as lib
        from Crypto.Util._raw_api import VoidPointer, c_size_t, c_ubyte, create_string_buffer, get_raw_buffer

        self._state = VoidPointer()
        if lib.keccak_init(self._state.address_of(), c_size_t(64), c_ubyte(24)):
            raise RuntimeError("keccak_init failed")
        self._pointer, self._out, self._raw = self._state.get(), create_string_buffer(32), get_raw_buffer
        self._reset, self._absorb, self._digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest

    def __call__(self, message: bytes) -> Hash:
        self._reset(self._pointer)
        self._absorb(self._pointer, message, 64)
        self._digest(self._pointer, self._out, 32, 1)  # 1: keccak's padding, not SHA-3's
        return self._raw(self._out)


def _pair_keccak():
    """The fast pair hash, or eth_utils.keccak where pycryptodome's core cannot be loaded or
    gives another answer on a known vector."""
    try:
        fast = _PairKeccak()
        probe = bytes(range(64))
        return fast if fast(probe) == keccak(probe) else keccak
    except Exception:  # noqa: BLE001 - any trouble with the C core: the plain path is always right
        return keccak


keccak64 = _pair_keccak()  # keccak256 of a 64-byte message (two nodes)


def hash_pair(a: Hash, b: Hash) -> Hash:
    if len(a) != 32 or len(b) != 32:
        raise ValueError("Merkle nodes are 32-byte hashes")
    return keccak64(a + b) if a < b else keccak64(b + a)


def instances_hash(instances: list[int]) -> Hash:
    """``keccak256(abi.encodePacked(uint256[]))``: each element as 32 big-endian bytes."""
    return keccak(b"".join(int(value).to_bytes(32, "big") for value in instances))


def leaf_of(model_id: Hash, proof_hash: Hash, instances_digest: Hash) -> Hash:
    """The registry's ``leafOf``: binds model, proof bytes and public instances."""
    return keccak(encode(["bytes32", "bytes32", "bytes32"], [model_id, proof_hash, instances_digest]))


def process_path(leaf: Hash, path: list[Hash]) -> Hash:
    node = leaf
    for sibling in path:
        node = hash_pair(node, sibling)
    return node


@dataclass(frozen=True)
class MerkleTree:
    """All levels of the tree; ``levels[0]`` are the leaves in the order given."""

    levels: tuple[tuple[Hash, ...], ...]

    @classmethod
    def build(cls, leaves: list[Hash]) -> MerkleTree:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        if len(set(leaves)) != len(leaves):
            raise ValueError("duplicate leaves: each proof goes into a batch once")
        if any(len(leaf) != 32 for leaf in leaves):
            raise ValueError("leaves must be 32-byte hashes")
        levels = [tuple(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [hash_pair(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])
            levels.append(tuple(above))
        return cls(tuple(levels))

    @property
    def root(self) -> Hash:
        return self.levels[-1][0]

    @property
    def leaves(self) -> tuple[Hash, ...]:
        return self.levels[0]

    def path(self, index: int) -> list[Hash]:
        """Sibling hashes from leaf ``index`` up to the root."""
        if not 0 <= index < len(self.leaves):
            raise IndexError(f"leaf index {index} out of range 0..{len(self.leaves) - 1}")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return path


def verify_path(leaf: Hash, path: list[Hash], root: Hash) -> bool:
    return process_path(leaf, path) == root
