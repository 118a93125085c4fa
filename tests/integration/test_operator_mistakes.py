"""Issue 14, cases 5 and 6: a process that cannot work says so and stops (real ``serve``).

* A worker that cannot start is respawned with a growing delay; after repeated young deaths
  the supervisor gives up with a clear message and exit 1; one worker alone exits 1 with one
  line, never a traceback; a graceful stop is bounded (a stuck worker is killed).
* A state path whose directory does not exist is a start-up error naming ``state.path``; a
  brand-new store is said once in the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

BINANCE = {"api_key": "binanceKey0123456789", "api_secret": "b" * 64}
POLICY = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read"]\n'
STATE = 'path = "state.db"'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("mistakes"), [AccountSpec("binance-main", "binance", BINANCE)],
                     {"bot": POLICY}, start_proxy=False) as s:
        yield s


@pytest.fixture
def fresh(stack: Stack) -> Iterator[Stack]:
    """The stack with its original configuration and an empty proxy log after each test."""
    original = stack.config_path.read_text()
    (stack.dir / "proxy.log").write_bytes(b"")
    yield stack
    stack.stop_proxy()
    stack.config_path.write_text(original)


def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait(timeout=120)


def test_missing_state_directory_is_a_start_up_error_naming_the_key(fresh: Stack) -> None:
    fresh.edit_config(STATE, 'path = "no-such-dir/state.db"')
    assert _exit_code(fresh.start_proxy()) == 3
    log = fresh.proxy_log()
    assert "state.path" in log and "no-such-dir" in log
    assert not (fresh.dir / "no-such-dir").exists()
    assert "Traceback" not in log


def test_a_brand_new_store_is_said_once(fresh: Stack) -> None:
    fresh.edit_config(STATE, 'path = "brand-new.db"')
    fresh.start_proxy()
    fresh.wait_ready()
    fresh.stop_proxy()
    fresh.start_proxy()
    fresh.wait_ready()
    assert fresh.proxy_log().count("is new: no idempotency or nonce history") == 1


def test_a_state_store_that_cannot_be_opened_stops_serve_before_any_worker(fresh: Stack) -> None:
    (fresh.dir / "a-directory").mkdir(exist_ok=True)
    fresh.edit_config(STATE, 'path = "a-directory"')  # its parent exists; sqlite cannot open it
    assert _exit_code(fresh.start_proxy(workers=2)) == 1
    log = fresh.proxy_log()
    assert "state store" in log and "a-directory" in log  # serve's start-up replay opens it first
    assert "worker" not in log.lower() and "Traceback" not in log


def _rate_limit_file_unopenable(fresh: Stack) -> None:
    """What only a worker opens: the rate-limit file beside the state store (a directory; a
    store of this test's own, so the stack's next tests keep theirs)."""
    fresh.edit_config(STATE, 'path = "limits-blocked.db"')
    (fresh.dir / "limits-blocked.db.limits").mkdir(exist_ok=True)


def test_workers_that_cannot_start_make_the_supervisor_give_up(fresh: Stack) -> None:
    _rate_limit_file_unopenable(fresh)
    assert _exit_code(fresh.start_proxy(workers=2)) == 1
    log = fresh.proxy_log()
    assert "giving up" in log and "exited within" in log
    assert 5 <= log.count("failed: NotReady") <= 7  # backed off, then stopped: not forever
    assert "Traceback" not in log


def test_one_worker_that_cannot_start_exits_with_one_line(fresh: Stack) -> None:
    _rate_limit_file_unopenable(fresh)
    assert _exit_code(fresh.start_proxy(workers=1)) == 1
    log = fresh.proxy_log()
    assert "the worker failed: NotReady" in log
    assert "Traceback" not in log


def test_a_stuck_worker_cannot_hold_up_the_stop(fresh: Stack) -> None:
    fresh.edit_config("[vault]", "stop_timeout_s = 1\n\n[vault]")
    proc = fresh.start_proxy(workers=2)
    fresh.wait_ready()
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGSTOP)  # a worker that will never answer SIGTERM
    proc.send_signal(signal.SIGTERM)
    _exit_code(proc)
    assert f"worker {children[0]} did not stop within 1 s; killing it" in fresh.proxy_log()


# ------------------------------------------------------------------ case 7

NEW_SECRET = "N3wSecretValue" + "x" * 50


def test_keys_rotate_refuses_key_material_with_surrounding_whitespace(fresh: Stack) -> None:
    for bad in (NEW_SECRET + "\n", " " + NEW_SECRET):
        out = fresh.cli("keys", "rotate", "--account", "binance-main",
                        stdin=json.dumps({"api_key": "binanceKey0123456789", "api_secret": bad}))
        assert out.returncode == 2, out.stderr
        assert "api_secret" in out.stderr and "whitespace" in out.stderr
        assert NEW_SECRET not in out.stderr + out.stdout


def test_a_secret_written_with_a_newline_is_reported_at_load_and_the_old_key_kept(fresh: Stack) -> None:
    fresh.start_proxy()
    fresh.wait_ready()
    fresh.vault.client().secrets.kv.v2.create_or_update_secret(  # as `bao kv put api_secret=@file` would
        path="exchanges/binance-main", mount_point="secret",
        secret={"api_key": "binanceKey0123456789", "api_secret": NEW_SECRET + "\n"})
    deadline = time.monotonic() + 30
    while "starts or ends with whitespace" not in fresh.proxy_log():
        assert time.monotonic() < deadline, fresh.proxy_log()[-2000:]
        time.sleep(0.2)
    log = fresh.proxy_log()
    assert "account binance-main:" in log and "api_secret" in log
    assert "still signing with the version loaded before" in log
    assert NEW_SECRET not in log
    r = httpx.get(fresh.proxy_url + "/x/binance-main/api/v3/account", timeout=30,
                  headers={"Proxy-Authorization": f"Bearer {fresh.token('bot')}"})
    assert r.status_code == 200, r.text  # the emulator knows the old secret only
    fresh.vault.client().secrets.kv.v2.create_or_update_secret(
        path="exchanges/binance-main", mount_point="secret", secret=BINANCE)


# ------------------------------------------------------------------ case 10

@pytest.mark.parametrize("which", ["config", "vault-token"])
def test_every_command_applies_the_same_file_mode_rule(fresh: Stack, which: str) -> None:
    path = fresh.config_path if which == "config" else fresh.dir / "vault-token"
    path.chmod(0o640)
    try:
        answers = {}
        for command in (["policy", "check"], ["keys", "status"], ["audit", "verify"], ["serve"]):
            out = fresh.cli(*command)
            answers[" ".join(command)] = (out.returncode, out.stderr.strip().splitlines()[-1:])
    finally:
        path.chmod(0o600)
    expected = (3, [f"error: {path}: readable by group or others; run chmod 600 {path}"])
    assert answers == dict.fromkeys(answers, expected)


# ------------------------------------------------------------------ case 8

def _current_version(stack: Stack) -> int:
    meta = stack.vault.client().secrets.kv.v2.read_secret_metadata(path="exchanges/binance-main",
                                                                    mount_point="secret")
    return int(meta["data"]["current_version"])


def test_keys_rotate_checks_the_new_key_at_the_exchange_first(fresh: Stack) -> None:
    before = _current_version(fresh)
    unknown = {"api_key": "keyTheExchangeNeverIssued", "api_secret": "u" * 64}
    out = fresh.cli("keys", "rotate", "--account", "binance-main", stdin=json.dumps(unknown))
    assert out.returncode == 1, out.stderr
    assert "binance refused a signed GET /sapi/v1/account/apiRestrictions" in out.stderr
    assert "HTTP 401" in out.stderr and "nothing was written" in out.stderr  # the exchange's reason
    assert "u" * 64 not in out.stderr
    assert _current_version(fresh) == before
    known = fresh.cli("keys", "rotate", "--account", "binance-main", stdin=json.dumps(BINANCE))
    assert known.returncode == 0, known.stderr
    assert "binance accepted a signed GET" in known.stderr
    assert _current_version(fresh) == before + 1


def test_keys_rollback_makes_the_previous_version_current(fresh: Stack) -> None:
    fresh.start_proxy()
    fresh.wait_ready()
    unknown = {"api_key": "keyTheExchangeNeverIssued", "api_secret": "u" * 64}
    out = fresh.cli("keys", "rotate", "--account", "binance-main", "--skip-exchange-check",
                    stdin=json.dumps(unknown))
    assert out.returncode == 0 and "not checked" in out.stderr, out.stderr
    bad = _current_version(fresh)
    back = fresh.cli("keys", "rollback", "--account", "binance-main")
    assert back.returncode == 0, back.stderr
    assert f"wrote version {bad - 1} of secret/exchanges/binance-main again as version {bad + 1}" in back.stderr
    current = fresh.vault.client().secrets.kv.v2.read_secret_version(
        path="exchanges/binance-main", mount_point="secret", raise_on_deleted_version=True)["data"]
    assert current["data"] == BINANCE and current["metadata"]["version"] == bad + 1
    headers = {"Proxy-Authorization": f"Bearer {fresh.token('bot')}"}
    deadline = time.monotonic() + 30
    while True:  # the proxy follows the rolled-back version and signs with the known key again
        r = httpx.get(fresh.proxy_url + "/x/binance-main/api/v3/account", headers=headers, timeout=30)
        if r.status_code == 200 and f"now signs with key version {bad + 1}" in fresh.proxy_log():
            break
        assert time.monotonic() < deadline, fresh.proxy_log()[-2000:]
        time.sleep(0.2)


def test_a_rotated_key_the_exchange_refuses_falls_back_to_the_previous_version(fresh: Stack) -> None:
    fresh.start_proxy()
    fresh.wait_ready()
    good = _current_version(fresh)
    unknown = {"api_key": "keyTheExchangeNeverIssued", "api_secret": "u" * 64}
    out = fresh.cli("keys", "rotate", "--account", "binance-main", "--skip-exchange-check",
                    stdin=json.dumps(unknown))
    assert out.returncode == 0, out.stderr
    said = f"the exchange refused key version {good + 1}"
    deadline = time.monotonic() + 30
    while said not in fresh.proxy_log():
        assert time.monotonic() < deadline, fresh.proxy_log()[-3000:]
        time.sleep(0.2)
    assert f"signing with version {good} until" in fresh.proxy_log()
    headers = {"Proxy-Authorization": f"Bearer {fresh.token('bot')}"}
    for _ in range(3):  # every request is signed with the previous key, which the exchange knows
        r = httpx.get(fresh.proxy_url + "/x/binance-main/api/v3/account", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        sent = dict(fresh.emulator("binance-main").recorder.all()[-1].headers)
        assert sent["x-mbx-apikey"] == BINANCE["api_key"]
    _, ready = fresh.readyz()
    assert said in ready["keys_fallback"]["binance-main"]
    status = fresh.cli("keys", "status")
    row = json.loads(status.stdout.splitlines()[0])
    assert said in row["serving"] and said in status.stderr
    assert fresh.cli("keys", "rollback", "--account", "binance-main").returncode == 0
    deadline = time.monotonic() + 30
    while "the fallback to version" not in fresh.proxy_log():
        httpx.get(fresh.proxy_url + "/x/binance-main/api/v3/account", headers=headers, timeout=30)
        assert time.monotonic() < deadline, fresh.proxy_log()[-3000:]
        time.sleep(0.2)
    assert "keys_fallback" not in fresh.readyz()[1]
