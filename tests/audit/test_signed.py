"""The auditor's verify: only the checkpoint public key, no Vault secret (issue 19).

Every case here tampers with a trail the way someone with write access to the audit volume
could, and checks that ``verify_signed`` holding nothing but the public key names it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import chain, checkpoint, merkle, proofs, retention, signed, witness
from proxy.audit.checkpointer import CheckpointPolicy
from proxy.audit.writer import AuditWriter
from proxy.errors import NotReady
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key
from tests.audit.conftest import decision, lines, outcome, public, put_lines, write_trail


def _make(tmp_path: Path, key: Secret, signer: Ed25519Key, records: int = 30,
          writers: tuple[str, ...] = ("w1", "w2"), name: str = "audit") -> tuple[Path, Path]:
    d, wit = tmp_path / name, tmp_path / f"{name}-witness"
    wit.mkdir(exist_ok=True)
    for w in writers:
        write_trail(d, key, w, records=records, max_segment_bytes=3000,
                    checkpoints=CheckpointPolicy(signer, every_records=5, witness_dir=wit))
    return d, wit


def _check(d: Path, signer: Ed25519Key, wit: Path | None) -> signed.SignedReport:
    return signed.verify_signed(d, public(signer), witness_dir=wit)


def _failed(report: signed.SignedReport, *words: str) -> str:
    assert not report.ok, report.summary()
    text = report.summary()
    for word in words:
        assert word in text, text
    return text


def _rewrite(path: Path, edit: object) -> None:
    """Apply ``edit(records)`` to a segment's parsed records and write them back canonically."""
    recs = [orjson.loads(line) for line in lines(path)]
    edit(recs)  # type: ignore[operator]
    put_lines(path, [chain.canonical(r) + b"\n" for r in recs])


def test_signed_a_clean_trail_verifies_with_the_public_key_alone(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = _make(tmp_path, key, signer)
    report = _check(d, signer, wit)
    assert report.ok, report.summary()
    assert report.chains == 2 and not report.unsigned and report.witnessed > 0
    assert _check(d, signer, None).ok  # the local checkpoints alone are also consistent


def test_signed_edited_record_is_found(tmp_path: Path, key: Secret, signer: Ed25519Key) -> None:
    d, wit = _make(tmp_path, key, signer)
    seg = d / "w1.000000.jsonl"
    content = lines(seg)
    content[2] = content[2].replace(b'"decision":"allow"', b'"decision":"deny"')
    put_lines(seg, content)
    _failed(_check(d, signer, wit), "w1.000000.jsonl", "do not match the signed checkpoint")


@pytest.mark.parametrize("renumber", [False, True])
def test_signed_deleted_record_is_found(tmp_path: Path, key: Secret, signer: Ed25519Key,
                                        renumber: bool) -> None:
    d, wit = _make(tmp_path, key, signer)
    seg = d / "w1.000000.jsonl"

    def drop(recs: list[dict[str, object]]) -> None:
        del recs[3]
        if renumber:  # hide the gap: every later _seq one lower
            for r in recs[3:]:
                r["_seq"] = int(r["_seq"]) - 1  # type: ignore[call-overload]
    _rewrite(seg, drop)
    _failed(_check(d, signer, wit), "w1.000000.jsonl")


def test_signed_reordered_records_are_found(tmp_path: Path, key: Secret, signer: Ed25519Key) -> None:
    d, wit = _make(tmp_path, key, signer)

    def swap(recs: list[dict[str, object]]) -> None:
        recs[2], recs[3] = recs[3], recs[2]
        recs[2]["_seq"], recs[3]["_seq"] = recs[3]["_seq"], recs[2]["_seq"]
    _rewrite(d / "w1.000000.jsonl", swap)
    _failed(_check(d, signer, wit), "do not match the signed checkpoint")


def test_signed_inserted_record_is_found(tmp_path: Path, key: Secret, signer: Ed25519Key) -> None:
    d, wit = _make(tmp_path, key, signer)

    def insert(recs: list[dict[str, object]]) -> None:
        forged = {**recs[2], "request_id": "req-forged"}
        recs.insert(3, forged)
        for i, r in enumerate(recs):
            r["_seq"] = i
        recs[-1]["_records"] = len(recs) - 1 if recs[-1].get("_kind") == "seal" else None
    _rewrite(d / "w1.000000.jsonl", insert)
    _failed(_check(d, signer, wit), "w1.000000.jsonl")


def test_signed_checkpoint_that_does_not_match_the_records_is_found(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, _ = _make(tmp_path, key, signer)
    trail = orjson.loads((d / "TRAIL.json").read_bytes())["trail_id"]
    # Properly signed, right trail, writer and size, but over other lines (say, another run's).
    cp = checkpoint.sign(signer, trail=trail, writer="w1", size=7,
                         root=merkle.root_of([merkle.leaf_hash(b"x")] * 7), ts="2026-12-07T00:00:00Z")
    witness.append(witness.local_path(d, "w1"), cp.line())
    _failed(_check(d, signer, None), "do not match the signed checkpoint", "size 7")


def test_signed_rewritten_trail_resigned_with_another_key_is_found(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = _make(tmp_path, key, signer)
    seg = d / "w1.000000.jsonl"
    content = lines(seg)
    content[2] = content[2].replace(b'"decision":"allow"', b'"decision":"deny"')
    put_lines(seg, content)
    leaves = [merkle.leaf_hash(line.rstrip(b"\n"))
              for s in sorted(d.glob("w1.[0-9]*.jsonl")) for line in lines(s)]
    forger = Ed25519Key(ed25519.Ed25519PrivateKey.generate())
    path = witness.local_path(d, "w1")
    forged = [checkpoint.sign(forger, trail=c.trail, writer=c.writer, size=c.size,
                              root=merkle.root_of(leaves[: c.size]), ts=c.ts).line()
              for c in (e.checkpoint for e in witness.read(path)) if c is not None]
    put_lines(path, forged)  # every checkpoint now matches the edited lines, under the forger's key
    text = _failed(_check(d, signer, None), "signed by another key")
    assert checkpoint.key_id(forger.public_key()) in text
    _failed(_check(d, signer, wit), "do not match the signed checkpoint")


def test_signed_lines_cut_off_the_end_are_found_by_the_local_checkpoint(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, _ = _make(tmp_path, key, signer)
    last = sorted(d.glob("w2.[0-9]*.jsonl"))[-1]
    put_lines(last, lines(last)[:-3])
    _failed(_check(d, signer, None), "cut off the end", "its checkpoint file")


def _cut_to_checkpoint(d: Path, writer: str, keep: int) -> None:
    """Cut a chain and its local checkpoint file back together, so they agree."""
    cps = [e.checkpoint for e in witness.read(witness.local_path(d, writer)) if e.checkpoint]
    size = [c.size for c in cps if c.size <= keep][-1]
    seen = 0
    for seg in sorted(d.glob(f"{writer}.[0-9]*.jsonl")):
        content = lines(seg)
        if seen >= size:
            seg.unlink()
        elif seen + len(content) > size:
            put_lines(seg, content[: size - seen])
        seen += len(content)
    put_lines(witness.local_path(d, writer), [c.line() for c in cps if c.size <= size])


def test_signed_trail_cut_together_with_its_checkpoints_is_found_by_the_witness(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = _make(tmp_path, key, signer)
    _cut_to_checkpoint(d, "w2", keep=20)  # the newest chain: no other writer anchored its end
    assert _check(d, signer, None).ok  # consistent with itself: only the witness can tell
    _failed(_check(d, signer, wit), "the witness", "rolled back")


def test_signed_chain_cut_with_its_checkpoints_is_found_by_another_writers_signed_anchor(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, _ = _make(tmp_path, key, signer)  # w2 started after w1 closed: its open record anchors w1
    _cut_to_checkpoint(d, "w1", keep=20)
    _failed(_check(d, signer, None), "writer w2 signed that this chain had seq")


def test_signed_trail_rolled_back_to_an_earlier_checkpoint_is_found(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = tmp_path / "audit", tmp_path / "witness"
    wit.mkdir()
    w = AuditWriter(d, key, "w1", checkpoints=CheckpointPolicy(signer, every_records=5, witness_dir=wit))
    w.start_sync()
    for i in range(20):
        w.write_sync(decision(i))
    snapshot = tmp_path / "snapshot"
    shutil.copytree(d, snapshot)  # a backup taken while the writer ran
    for i in range(20, 40):
        w.write_sync(decision(i))
    w.close_sync()
    assert _check(d, signer, wit).ok
    shutil.rmtree(d)
    shutil.copytree(snapshot, d)  # ... restored later: every line and checkpoint in it is genuine
    assert _check(d, signer, None).ok
    _failed(_check(d, signer, wit), "rolled back")


def test_signed_deleted_chain_is_found(tmp_path: Path, key: Secret, signer: Ed25519Key) -> None:
    d, wit = _make(tmp_path, key, signer)
    for seg in d.glob("w2.[0-9]*.jsonl"):
        seg.unlink()
    _failed(_check(d, signer, None), "chain w2 is gone")
    witness.local_path(d, "w2").unlink()
    assert _check(d, signer, None).ok  # nothing left here says w2 existed...
    _failed(_check(d, signer, wit), "chain w2 is gone")  # ...but the witness does


def test_signed_checkpoints_from_another_trail_are_refused(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, _ = _make(tmp_path, key, signer, writers=("w1",))
    other, _ = _make(tmp_path, key, signer, writers=("w1",), name="other")
    shutil.copy(witness.local_path(other, "w1"), witness.local_path(d, "w1"))
    _failed(_check(d, signer, None), "names trail")
    shutil.copy(other / "TRAIL.json", d / "TRAIL.json")  # and the other trail's identity too
    _failed(_check(d, signer, None), "open record names another trail")


def test_signed_a_running_writers_unsigned_tail_is_listed_not_passed(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d = tmp_path / "audit"
    w = AuditWriter(d, key, "w1", checkpoints=CheckpointPolicy(signer, every_records=10))
    w.start_sync()
    for i in range(13):
        w.write_sync(decision(i))
    report = _check(d, signer, None)
    assert report.ok, report.summary()
    assert [(u.writer, u.first_seq, u.lines) for u in report.unsigned] == [("w1", 10, 4)]
    w.checkpoint_sync(force=True)
    assert not _check(d, signer, None).unsigned
    w.close_sync()


def test_signed_pruned_trail_still_verifies_from_the_frontier(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = _make(tmp_path, key, signer, writers=("w1",), records=60)
    old = 1_000_000_000.0
    for seg in sorted(d.glob("w1.[0-9]*.jsonl"))[:3]:
        os.utime(seg, (old, old))
    result = retention.prune(d, key, older_than_s=3600)
    assert len(result.removed) == 3
    report = _check(d, signer, wit)
    assert report.ok, report.summary()
    (proof,) = proofs.prove(d, "req-55", witness_dir=wit)  # a kept record still has its proof
    assert checkpoint.verify_proof(proof, public(signer))["request_id"] == "req-55"
    assert proofs.prove(d, "req-1", witness_dir=wit) == []  # a pruned one is gone
    seg = sorted(d.glob("w1.[0-9]*.jsonl"))[1]
    content = lines(seg)
    content[1] = content[1].replace(b'"decision":"allow"', b'"decision":"deny"')
    put_lines(seg, content)
    _failed(_check(d, signer, wit), seg.name)


def test_signed_a_chain_pruned_whole_is_listed_not_failed(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = _make(tmp_path, key, signer)
    old = 1_000_000_000.0
    for seg in d.glob("w1.[0-9]*.jsonl"):
        os.utime(seg, (old, old))
    retention.prune(d, key, older_than_s=3600)
    assert not list(d.glob("w1.[0-9]*.jsonl"))
    report = _check(d, signer, wit)  # the witness still remembers w1: the tombstone excuses it
    assert report.ok and report.pruned == ("w1",), report.summary()
    (d / "PRUNED.jsonl").unlink()
    _failed(_check(d, signer, wit), "chain w1 is gone")


def test_signed_prove_and_verify_a_single_record(tmp_path: Path, key: Secret, signer: Ed25519Key) -> None:
    d, wit = tmp_path / "audit", tmp_path / "witness"
    wit.mkdir()
    pol = CheckpointPolicy(signer, every_records=4, witness_dir=wit)
    write_trail(d, key, "w1", records=9, make=lambda i: decision(i) if i % 2 else outcome(i - 1),
                max_segment_bytes=3000, checkpoints=pol)
    found = proofs.prove(d, "req-3", witness_dir=wit)
    assert [orjson.loads(p.record)["phase"] for p in found] == ["decision", "outcome"]
    keys = public(signer)
    for p in found:
        assert checkpoint.verify_proof(p, keys)["request_id"] == "req-3"
    forged = orjson.loads(found[0].record)
    forged["intent"]["quantity"] = "100"
    altered = checkpoint.Proof(chain.canonical(forged), found[0].index, found[0].path,
                               found[0].checkpoint)
    with pytest.raises(checkpoint.CheckpointError, match="altered"):
        checkpoint.verify_proof(altered, keys)
    assert proofs.prove(d, "req-404", witness_dir=wit) == []


def test_signed_writer_refuses_to_start_without_its_witness_directory(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    """An unmounted witness volume must not silently become a folder on the trail's disk."""
    wit = tmp_path / "not-mounted"
    w = AuditWriter(tmp_path / "audit", key, "w1",
                    checkpoints=CheckpointPolicy(signer, witness_dir=wit))
    with pytest.raises(NotReady, match="witness"):
        w.start_sync()
    assert not wit.exists()


def test_signed_a_writer_without_checkpoints_keeps_its_open_records_as_before(
    tmp_path: Path, key: Secret
) -> None:
    d = tmp_path / "audit"
    write_trail(d, key, "w1", records=30, max_segment_bytes=2000)  # HMAC chain only
    opens = [orjson.loads(lines(seg)[0]) for seg in sorted(d.glob("w1.[0-9]*.jsonl"))]
    assert len(opens) > 1 and not any("_frontier" in o for o in opens)
    assert not witness.local_writers(d)
