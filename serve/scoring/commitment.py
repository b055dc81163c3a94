"""What an audit-sampled job commits to, and how its sample is drawn from that commitment.

Every scored row becomes one Merkle leaf (serve.merkle's sorted-pair keccak tree, the one
AttestationRegistry checks):

    leaf = sha256("zkserve.row.v1" || uint64_be(row_id) || sha256(input row as float64 LE)
                  || the row's outputs as float64 LE, in manifest order)

(sha256 for leaves because it is several times faster here than keccak; inner nodes are
keccak, as the registry's isAnchored recomputes them.)

The root over all leaves (rows in file order) is fixed before any sample is drawn. The
sample seed is then the hash of the block that anchored the root (`--submit`), or on a
chain-less run sha256(root || stated seed): positions are drawn by hashing the seed with a
counter, so anyone holding the root and the seed re-derives exactly the same rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np

from serve.merkle import Hash, hash_pair

LEAF_FORMAT = "zkserve.row.v1"
_LEAF_TAG = LEAF_FORMAT.encode()


def input_digest(row: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f8").tobytes()).digest()


def row_leaf(row_id: int, digest: bytes, outputs: Iterable[np.ndarray]) -> Hash:
    body = b"".join(np.ascontiguousarray(np.ravel(o), dtype="<f8").tobytes() for o in outputs)
    return hashlib.sha256(_LEAF_TAG + int(row_id).to_bytes(8, "big") + digest + body).digest()


def _hash_rows(matrix: np.ndarray) -> bytes:
    """sha256 of each row of a uint8 matrix, concatenated: one slice and one hash per row, the
    least Python a per-row hash can cost."""
    data, step = matrix.tobytes(), matrix.shape[1]
    sha256 = hashlib.sha256
    return b"".join([sha256(data[start:start + step]).digest() for start in range(0, len(data), step)])


def input_digests(values: np.ndarray) -> bytes:
    """input_digest of every row of `values` ([n, *row_shape]), as n x 32 bytes."""
    if not len(values):
        return b""
    return _hash_rows(np.ascontiguousarray(values, dtype="<f8").reshape(len(values), -1).view(np.uint8))


def row_leaves(row_ids: np.ndarray, digests: bytes, outputs: list[np.ndarray]) -> bytes:
    """row_leaf of every row, as n x 32 bytes: `digests` n x 32 bytes, `outputs` one [n, ...] array per
    output in manifest order. The leaf messages are laid out as one matrix, then hashed row by row."""
    count = len(row_ids)
    if not count:
        return b""
    parts = [
        np.broadcast_to(np.frombuffer(_LEAF_TAG, np.uint8), (count, len(_LEAF_TAG))),
        np.asarray(row_ids, dtype=">u8").reshape(count, 1).view(np.uint8),
        np.frombuffer(digests, np.uint8).reshape(count, 32),
        *[np.ascontiguousarray(np.asarray(o).reshape(count, -1), dtype="<f8").view(np.uint8) for o in outputs],
    ]
    return _hash_rows(np.concatenate(parts, axis=1))


class StreamingRoot:
    """The root MerkleTree.build would give over the same leaves, in O(log n) memory.

    MerkleTree pairs each level left to right and lifts an odd last node unchanged, which is
    the same as keeping a stack of complete subtrees and folding it right to left at the end.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, Hash]] = []  # (height, hash), heights strictly decreasing
        self.count = 0

    def add(self, leaf: Hash) -> None:
        node, height = leaf, 0
        while self._stack and self._stack[-1][0] == height:
            node = hash_pair(self._stack.pop()[1], node)
            height += 1
        self._stack.append((height, node))
        self.count += 1

    def extend(self, leaves: Iterable[Hash]) -> None:
        for leaf in leaves:
            self.add(leaf)

    @property
    def root(self) -> Hash:
        if not self._stack:
            raise ValueError("a Merkle root needs at least one leaf")
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = hash_pair(left, node)
        return node


def sample_size(leaves: int, fraction: float) -> int:
    return min(leaves, max(1, math.ceil(fraction * leaves))) if leaves else 0


def chainless_seed(root: Hash, stated_seed: str) -> bytes:
    return hashlib.sha256(root + b"|" + stated_seed.encode()).digest()


def sample_positions(seed: bytes, leaves: int, size: int) -> list[int]:
    """`size` distinct leaf positions in [0, leaves), sorted: position j of the draw is
    int(sha256(seed || uint64_be(counter))) mod leaves, repeats skipped."""
    if size >= leaves:
        return list(range(leaves))
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < size:
        digest = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        chosen.add(int.from_bytes(digest, "big") % leaves)
        counter += 1
    return sorted(chosen)


def pass_probability(leaves: int, size: int, wrong_fraction: float) -> float:
    """Probability that a job with round(wrong_fraction x leaves) wrong rows has none of them in a
    uniform sample of `size` rows without replacement (hypergeometric): C(n-m, k) / C(n, k)."""
    wrong = round(wrong_fraction * leaves)
    if wrong == 0:
        return 1.0
    if size > leaves - wrong:
        return 0.0
    log_p = (math.lgamma(leaves - wrong + 1) - math.lgamma(leaves - wrong - size + 1)
             - math.lgamma(leaves + 1) + math.lgamma(leaves - size + 1))
    return math.exp(log_p)


def detection_guarantee(leaves: int, size: int) -> dict:
    """The job report's statement of what the sample catches."""
    fractions = (0.0001, 0.001, 0.005, 0.01, 0.05, 0.1)
    detect95 = 1 - 0.05 ** (1 / size) if size else 1.0
    return {
        "rows_committed": leaves,
        "rows_sampled": size,
        "statement": (f"a job in which a fraction f of the {leaves} committed rows is wrong passes this audit only "
                      f"if none of the {size} sampled rows is wrong: probability C(n-fn, k)/C(n, k) <= (1-f)^k "
                      f"with n={leaves}, k={size}; a wrong fraction >= {detect95:.3g} is caught with probability "
                      f">= 95%"),
        "pass_probability": {f"{f:g}": pass_probability(leaves, size, f) for f in fractions},
        "bound_1_minus_f_pow_k": {f"{f:g}": (1 - f) ** size for f in fractions},
        "fraction_caught_95pct": detect95,
    }
