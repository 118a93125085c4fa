"""verify detects and locates every kind of tampering, and stays quiet on an intact trail."""

from __future__ import annotations

import secrets
from pathlib import Path

import orjson

from proxy.audit import chain
from proxy.audit.verify import verify
from proxy.model.sensitive import Secret
from tests.audit.conftest import decision, lines, outcome, put_lines, write_trail

SEG0 = "w1.000000.jsonl"


def _trail(tmp_path: Path, key: Secret, **opts: object) -> Path:
    d = tmp_path / "audit"
    write_trail(d, key, **opts)  # type: ignore[arg-type]
    return d


def test_verify_intact_trail_is_ok(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    report = verify(d, key)
    assert report.ok, report.summary()
    assert (report.records, report.chains, report.segments) == (10, 1, 1)
    assert report.first_bad is None and not report.torn and not report.open_chains


def test_verify_edit_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    rec = orjson.loads(content[4])
    rec["decision"] = "deny"
    content[4] = chain.canonical(rec) + b"\n"
    put_lines(d / SEG0, content)
    report = verify(d, key)
    assert not report.ok
    assert report.first_bad is not None
    assert (report.first_bad.location.file, report.first_bad.location.line) == (SEG0, 5)
    assert "MAC" in report.first_bad.reason


def test_verify_byte_level_edit_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    content[6] = content[6].replace(b'":', b'": ', 1)  # same JSON, different bytes
    put_lines(d / SEG0, content)
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.line == 7


def test_verify_deletion_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    del content[4]
    put_lines(d / SEG0, content)
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.line == 5
    assert "deleted" in report.first_bad.reason


def test_verify_insertion_of_a_duplicate_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    content.insert(5, content[4])
    put_lines(d / SEG0, content)
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.line == 6
    assert "inserted" in report.first_bad.reason


def test_verify_insertion_of_a_forged_record_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    forged = orjson.loads(content[4])
    forged["request_id"] = "forged"
    content.insert(4, chain.canonical(forged) + b"\n")  # right seq, wrong MAC
    put_lines(d / SEG0, content)
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.line == 5


def test_verify_reorder_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    content[4], content[5] = content[5], content[4]
    put_lines(d / SEG0, content)
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.line == 5
    assert "reordered" in report.first_bad.reason


def test_verify_truncated_sealed_segment_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key, records=40, max_segment_bytes=2000)
    content = lines(d / SEG0)
    assert b'"_kind":"seal"' in content[-1]
    put_lines(d / SEG0, content[:-3])
    report = verify(d, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == SEG0
    assert report.first_bad.location.line == len(content) - 2
    assert "cut off" in report.first_bad.reason


def test_verify_deleted_last_segment_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key, records=40, max_segment_bytes=2000)
    segs = sorted(d.glob("w1.*.jsonl"))
    assert len(segs) >= 3
    segs[-1].unlink()
    report = verify(d, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == segs[-1].name
    assert "missing" in report.first_bad.reason


def test_verify_deleted_middle_segment_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key, records=40, max_segment_bytes=2000)
    segs = sorted(d.glob("w1.*.jsonl"))
    segs[1].unlink()
    report = verify(d, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == segs[1].name
    assert "missing" in report.first_bad.reason


def test_verify_deleted_first_segment_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key, records=40, max_segment_bytes=2000)
    (d / SEG0).unlink()
    report = verify(d, key)
    assert report.first_bad is not None and "deleted" in report.first_bad.reason


def test_verify_cut_end_of_a_chain_another_writer_anchored(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    write_trail(d, key, writer_id="w2", records=2)  # its open record anchors w1's final seal
    content = lines(d / SEG0)
    put_lines(d / SEG0, content[:-3])  # seal and two records gone: looks like a crash
    report = verify(d, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == SEG0
    assert report.first_bad.location.line == len(content) - 2
    assert "cut off" in report.first_bad.reason


def test_verify_whole_chain_deleted_is_detected(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    write_trail(d, key, writer_id="w2", records=2)
    (d / SEG0).unlink()
    report = verify(d, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == "w2.000000.jsonl"
    assert "w1" in report.first_bad.reason and "deleted" in report.first_bad.reason


def test_verify_record_copied_from_another_trail_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    other = tmp_path / "other"
    write_trail(other, key)  # same key, same writer id, different trail
    mine, theirs = lines(d / SEG0), lines(other / SEG0)
    mine[3] = theirs[3]
    put_lines(d / SEG0, mine)
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.line == 4


def test_verify_chain_copied_from_another_trail_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    other = tmp_path / "other"
    write_trail(other, key, writer_id="w9")
    (d / "w9.000000.jsonl").write_bytes((other / "w9.000000.jsonl").read_bytes())
    report = verify(d, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == "w9.000000.jsonl"
    assert report.first_bad.location.line == 1


def test_verify_wrong_key_fails_at_the_trail_file(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    report = verify(d, Secret(secrets.token_hex(32)))
    assert not report.ok and report.first_bad is not None
    assert report.first_bad.location.file == "TRAIL.json"
    assert "key" in report.first_bad.reason


def test_verify_missing_trail_file_fails(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    (d / "TRAIL.json").unlink()
    assert not verify(d, key).ok


def test_verify_stray_jsonl_file_fails(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    (d / "extra.jsonl").write_bytes(b"{}\n")
    report = verify(d, key)
    assert report.first_bad is not None and report.first_bad.location.file == "extra.jsonl"


def test_verify_torn_last_record_is_reported_not_failed(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key, close=False)
    with (d / SEG0).open("ab") as f:
        f.write(b'{"_mac":"ab","_seq":11,"clie')
    report = verify(d, key)
    assert report.ok, report.summary()
    assert [(t.file, t.line) for t in report.torn] == [(SEG0, 12)]
    assert report.open_chains == ("w1",)


def test_verify_lists_intents_without_outcome(tmp_path: Path, key: Secret) -> None:
    d = tmp_path / "audit"

    def make(i: int) -> dict[str, object]:
        if i < 6:
            return decision(i, decision="deny" if i == 5 else "allow")
        return outcome([0, 1, 3][i - 6])

    write_trail(d, key, records=9, make=make)
    report = verify(d, key)
    assert report.ok
    assert [p.request_id for p in report.intents_without_outcome] == ["req-2", "req-4"]
    assert report.intents_without_outcome[0].location.line == 4


def test_verify_cut_end_of_the_only_closed_chain_is_located(tmp_path: Path, key: Secret) -> None:
    d = _trail(tmp_path, key)
    content = lines(d / SEG0)
    put_lines(d / SEG0, content[:-2])  # seal and one record gone
    report = verify(d, key)
    assert report.first_bad is not None
    assert (report.first_bad.location.file, report.first_bad.location.line) == (
        SEG0, len(content) - 1,
    )
    assert "cut off" in report.first_bad.reason


def test_verify_crash_right_after_a_rotation_seal_is_open_not_bad(
    tmp_path: Path, key: Secret
) -> None:
    d = _trail(tmp_path, key, records=40, max_segment_bytes=2000, close=False)
    segs = sorted(d.glob("w1.*.jsonl"))
    segs[-1].unlink()  # as if killed between the seal and the next segment's creation
    report = verify(d, key)
    assert report.ok, report.summary()
    assert report.open_chains == ("w1",)


def test_verify_idempotent_replay_is_not_an_intent_without_outcome(tmp_path: Path, key: Secret) -> None:
    recs = [decision(1, idempotent_replay=True, rule="idempotency.replay"), decision(2)]
    write_trail(tmp_path, key, records=2, make=lambda i: recs[i])
    report = verify(tmp_path, key)
    assert report.ok
    assert [p.request_id for p in report.intents_without_outcome] == ["req-2"]
