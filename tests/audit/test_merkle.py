"""RFC 9162 Merkle hashing against the Certificate Transparency test vectors (data, in
vectors/ct_merkle.json, with their source) and against a straightforward implementation of the
RFC's recursive definitions written here, independent of proxy.audit.merkle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from proxy.audit import merkle

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ct_merkle.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]


# --- the RFC's definitions, written out plainly (RFC 9162 2.1.1 and 2.1.3.1) ---------------

def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


# --- the published vectors -----------------------------------------------------------------

def test_merkle_empty_leaf_and_node_hashes_match_the_ct_vectors() -> None:
    assert merkle.EMPTY_ROOT.hex() == VECTORS["empty_root"]
    assert merkle.root_of([]).hex() == VECTORS["empty_root"]
    for data, want in VECTORS["leaf_hashes"]:
        assert merkle.leaf_hash(bytes.fromhex(data)).hex() == want
    for left, right, want in VECTORS["node_hashes"]:
        assert merkle.node_hash(bytes.fromhex(left), bytes.fromhex(right)).hex() == want


def test_merkle_roots_of_1_to_8_leaves_match_the_ct_vectors() -> None:
    tree = merkle.CompactTree()
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    for n, want in enumerate(VECTORS["roots"], start=1):
        tree.append(hashes[n - 1])
        assert tree.size == n
        assert tree.root().hex() == want
        assert merkle.root_of(hashes[:n]).hex() == want


def test_merkle_a_real_ct_inclusion_proof_leads_to_its_signed_root() -> None:
    v = VECTORS["inclusion"]
    leaf = merkle.leaf_hash(bytes.fromhex(v["leaf"]))
    assert leaf.hex() == v["leaf_hash"]
    path = [bytes.fromhex(h) for h in v["path"]]
    assert merkle.root_from_inclusion(v["index"], v["size"], leaf, path).hex() == v["root"]
    with pytest.raises(merkle.ProofError):  # the same path cannot fit a leaf much further on
        merkle.root_from_inclusion(v["index"] + 2 ** (len(path) + 1), v["size"], leaf, path)
    assert merkle.root_from_inclusion(v["index"] + 1, v["size"], leaf, path).hex() != v["root"]


# --- against the plain definitions, every size and index -----------------------------------

def test_merkle_matches_the_rfc_definition_for_every_size_and_index_up_to_70() -> None:
    data = [bytes([i % 256]) * (i % 5) for i in range(70)]
    hashes = [merkle.leaf_hash(x) for x in data]
    tree = merkle.CompactTree()
    for n in range(1, len(data) + 1):
        tree.append(hashes[n - 1])
        want = ref_mth(data[:n])
        assert tree.root() == want, n
        for m in range(n):
            proof = merkle.inclusion_proof(hashes[:n], m)
            assert proof == ref_path(m, data[:n]), (m, n)
            assert merkle.root_from_inclusion(m, n, hashes[m], proof) == want


def test_merkle_proofs_fail_for_another_leaf_index_size_or_length() -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    root = merkle.root_of(hashes)
    proof = merkle.inclusion_proof(hashes, 5)
    assert merkle.root_from_inclusion(5, 8, merkle.leaf_hash(b"other"), proof) != root
    assert merkle.root_from_inclusion(4, 8, hashes[5], proof) != root
    for bad in (proof[:-1], [*proof, proof[0]]):
        with pytest.raises(merkle.ProofError):
            merkle.root_from_inclusion(5, 8, hashes[5], bad)
    for index, size in ((8, 8), (-1, 8), (0, 0)):
        with pytest.raises(merkle.ProofError):
            merkle.root_from_inclusion(index, size, hashes[0], [])
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_proof(hashes, 8)


def test_merkle_proofs_after_pruning_need_only_the_frontier() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(40)]
    for start in range(0, 40, 3):
        tree = merkle.CompactTree()
        for h in hashes[:start]:
            tree.append(h)
        for n in range(start + 1, 41, 5):
            for m in range(start, n):
                got = merkle.inclusion_proof(hashes[start:n], m, start=start, frontier=tree.frontier)
                assert got == merkle.inclusion_proof(hashes[:n], m), (start, n, m)
    with pytest.raises(merkle.ProofError):  # a pruned leaf itself cannot be proved
        merkle.inclusion_proof(hashes[8:20], 3, start=8, frontier=[merkle.root_of(hashes[:8])])


def test_merkle_a_tree_resumed_from_its_frontier_goes_on_identically() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(45)]
    whole = merkle.CompactTree()
    for i, h in enumerate(hashes):
        if i == 29:
            resumed = merkle.CompactTree(whole.size, whole.frontier)
        whole.append(h)
    for h in hashes[29:]:
        resumed.append(h)
    assert resumed.root() == whole.root() == merkle.root_of(hashes)
    with pytest.raises(ValueError):
        merkle.CompactTree(29, whole.frontier[:1])


def test_merkle_and_checkpoint_core_do_no_io() -> None:
    """The pure core: hashing, signing and checking on bytes; files live in witness/signed."""
    import ast

    import proxy.audit.checkpoint as cp_module

    allowed = {"__future__", "hashlib", "base64", "binascii", "collections", "dataclasses",
               "typing", "orjson", "cryptography", "proxy"}
    for module in (merkle, cp_module):
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert name.split(".")[0] in allowed, (module.__name__, name)
                assert not name.startswith("proxy.") or name in ("proxy.audit", "proxy.errors"), name
