"""RFC 9162 Merkle tree hashing (Certificate Transparency 2.0, section 2.1): pure, no I/O.

Leaves are hashed as ``SHA-256(0x00 || data)`` and interior nodes as
``SHA-256(0x01 || left || right)``; the tree over ``n`` leaves splits at the largest power of
two below ``n``. The prefixes keep a leaf from passing for a node (second-preimage attacks), so
a root commits to exactly one sequence of leaves, in order. :class:`CompactTree` keeps only the
right edge of the tree (one hash per set bit of its size), so a writer pays about two hashes per
record and holds ``log2(n)`` hashes whatever the length of its chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from proxy.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}): the hash of an empty string (RFC 9162 2.1.1)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already leaf-hashed entries (the straightforward recursive definition)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return hashes[lo]
    k = _split(hi - lo)
    return node_hash(_mth(hashes, lo, lo + k), _mth(hashes, lo + k, hi))


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, *, start: int = 0, frontier: Sequence[bytes] = (),
) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 2.1.3.1 for the tree of ``start + len(leaf_hashes)`` leaves.

    ``leaf_hashes`` are the leaves from ``start`` on; the ones before (pruned) are represented by
    ``frontier``, the tree's right edge at ``start`` (see CompactTree). That is enough for any
    leaf at or after ``start``: every sibling on its path that lies wholly before ``start`` is a
    maximal aligned subtree there, which is exactly a frontier node.
    """
    n = start + len(leaf_hashes)
    if not start <= index < n:
        raise ProofError(f"leaf {index} is not among the leaves {start}..{n - 1} of the tree")
    known = dict(zip(_frontier_ranges(start), frontier, strict=True))

    def subtree(lo: int, hi: int) -> bytes:
        if hi <= start:
            if (lo, hi) not in known:
                raise ProofError("the proof needs a subtree of pruned lines that is not kept")
            return known[(lo, hi)]
        if lo >= start:
            return _mth(leaf_hashes, lo - start, hi - start)
        k = _split(hi - lo)
        return node_hash(subtree(lo, lo + k), subtree(lo + k, hi))

    proof: list[bytes] = []
    lo, hi, m = 0, n, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            proof.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subtree(lo, lo + k))
            lo, m = lo + k, m - k
    proof.reverse()  # the path is listed from the leaf up
    return proof


def _frontier_ranges(size: int) -> list[tuple[int, int]]:
    """The leaf ranges of a tree's frontier nodes, largest first (one per set bit of size)."""
    ranges, lo = [], 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            ranges.append((lo, lo + (1 << bit)))
            lo += 1 << bit
    return ranges


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2); ProofError if it cannot fit."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise ProofError("a proof hash is not 32 bytes")
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    return r


class CompactTree:
    """An append-only Merkle tree that keeps only its right edge (the 'frontier').

    ``frontier`` holds the roots of the perfect subtrees that make up the tree, largest first;
    their sizes are the set bits of ``size``. A tree can be resumed from a frontier (after older
    segments were pruned): the root it then computes is only right if the frontier was, which a
    signed checkpoint over that root settles.
    """

    __slots__ = ("_nodes", "size")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if size < 0 or len(frontier) != size.bit_count():
            raise ValueError("a frontier has one hash per set bit of the tree size")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise ValueError("frontier hashes are 32 bytes")
        self.size = size
        self._nodes = list(frontier)

    @property
    def frontier(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (see :func:`leaf_hash`)."""
        nodes, n = self._nodes, self.size
        nodes.append(leaf)
        while n & 1:
            right = nodes.pop()
            nodes[-1] = node_hash(nodes[-1], right)
            n >>= 1
        self.size += 1

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        acc = self._nodes[-1]
        for h in reversed(self._nodes[:-1]):
            acc = node_hash(h, acc)
        return acc

    def copy(self) -> CompactTree:
        return CompactTree(self.size, self._nodes)


__all__ = [
    "EMPTY_ROOT",
    "CompactTree",
    "ProofError",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "root_of",
]
