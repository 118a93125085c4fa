"""Real processes: several writers on one trail, and kill -9 in the middle of writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from proxy.audit import signed, witness
from proxy.audit.verify import verify
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key
from tests.audit.conftest import lines, public, put_lines

ROOT = Path(__file__).resolve().parents[2]


def _spawn(
    directory: Path, key: Secret, writer_id: str, count: int, conc: int,
    signing: tuple[Ed25519Key, Path] | None = None,
) -> subprocess.Popen[str]:
    env = {**os.environ, "AUDIT_TEST_KEY": key.reveal(), "PYTHONPATH": str(ROOT)}
    if signing is not None:
        env["AUDIT_TEST_SIGNING_PEM"] = signing[0]._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        env["AUDIT_TEST_WITNESS"] = str(signing[1])
    return subprocess.Popen(
        [sys.executable, "-m", "tests.audit.writer_child", str(directory), writer_id,
         str(count), str(conc)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_processes_several_writers_share_one_trail(tmp_path: Path, key: Secret) -> None:
    procs = [_spawn(tmp_path, key, f"proc{n}", 150, 8) for n in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    report = verify(tmp_path, key)
    assert report.ok, report.summary()
    assert (report.records, report.chains) == (4 * 300, 4)
    assert report.segments > 4  # rotation happened under concurrency too
    assert not report.open_chains and not report.intents_without_outcome


def _kill_while_writing(directory: Path, key: Secret, writer_id: str,
                        signing: tuple[Ed25519Key, Path] | None = None) -> None:
    proc = _spawn(directory, key, writer_id, -1, 16, signing)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sum(p.stat().st_size for p in directory.glob(f"{writer_id}.*.jsonl")) > 200_000:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_processes_kill_9_leaves_at_most_a_torn_last_record(tmp_path: Path, key: Secret) -> None:
    _kill_while_writing(tmp_path, key, "victim")
    report = verify(tmp_path, key)
    assert report.ok, report.summary()
    assert not report.problems
    assert len(report.torn) <= 1
    assert report.open_chains == ("victim",)
    assert report.records > 100
    assert len(report.intents_without_outcome) <= 16


def test_processes_restart_closes_the_crashed_chain(tmp_path: Path, key: Secret) -> None:
    _kill_while_writing(tmp_path, key, "victim")
    w = AuditWriter(tmp_path, key, "successor")
    w.start_sync()  # sees victim's lock is free: anchors its end as closed
    w.close_sync()
    report = verify(tmp_path, key)
    assert report.ok, report.summary()
    assert report.open_chains == ()
    last = sorted(tmp_path.glob("victim.*.jsonl"))[-1]
    content = lines(last)
    keep = content[:-1] if content[-1].endswith(b"\n") else content[:-2]
    put_lines(last, keep)  # cut one whole record off the crashed chain's end
    report = verify(tmp_path, key)
    assert not report.ok and report.first_bad is not None
    assert report.first_bad.location.file == last.name
    assert "cut off" in report.first_bad.reason


def test_processes_signed_trail_of_several_workers_and_a_kill_9_verifies_with_the_public_key(
    tmp_path: Path, key: Secret, signer: Ed25519Key
) -> None:
    d, wit = tmp_path / "audit", tmp_path / "witness"
    d.mkdir()
    wit.mkdir()
    procs = [_spawn(d, key, f"proc{n}", 150, 8, (signer, wit)) for n in range(3)]
    _kill_while_writing(d, key, "victim", (signer, wit))
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    keys = public(signer)
    report = signed.verify_signed(d, keys, witness_dir=wit)
    assert report.ok, report.summary()
    assert report.chains == 4 and len(report.torn) <= 1
    assert {u.writer for u in report.unsigned} <= {"victim"}  # only the killed one may lag
    assert report.witnessed > 0

    # every tamper case below is found with the public key alone
    victim = sorted(d.glob("victim.[0-9]*.jsonl"))[0]
    original = lines(victim)
    edited = list(original)
    edited[5] = edited[5].replace(b'"decision":"allow"', b'"decision":"deny"')
    put_lines(victim, edited)
    assert not signed.verify_signed(d, keys, witness_dir=wit).ok
    put_lines(victim, original)

    closed = sorted(d.glob("proc1.[0-9]*.jsonl"))
    for seg in closed[1:]:
        seg.unlink()  # cut proc1 back to its first segment...
    cps = [e.checkpoint for e in witness.read(witness.local_path(d, "proc1")) if e.checkpoint]
    first = len(lines(closed[0]))
    put_lines(closed[0], lines(closed[0])[: max(c.size for c in cps if c.size <= first)])
    put_lines(witness.local_path(d, "proc1"),  # ...and its local checkpoints with it
              [c.line() for c in cps if c.size <= first])
    report = signed.verify_signed(d, keys, witness_dir=wit)
    assert not report.ok and "rolled back" in report.summary()
