"""Vault lifecycle against a real OpenBao: key status, Vault down at start and while serving,
deleted secrets, AppRole token renewal past several TTLs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

POLICY = """
version = 1
client = "bot"

[[grants]]
account = "binance-a"
allow = ["read"]

[[grants]]
account = "binance-b"
allow = ["read"]
"""
POLICY_A = """
version = 1
client = "bot"

[[grants]]
account = "binance-a"
allow = ["read"]
"""
A = AccountSpec("binance-a", "binance", {"api_key": "lifeKeyA0123456789", "api_secret": "a" * 64})
B = AccountSpec("binance-b", "binance", {"api_key": "lifeKeyB0123456789", "api_secret": "b" * 64})


def balance(stack: Stack, account: str, token: str) -> httpx.Response:
    return httpx.get(f"{stack.proxy_url}/x/{account}/api/v3/account", timeout=10,
                     headers={"Proxy-Authorization": f"Bearer {token}", "Connection": "close"})


def eventually(check: Callable[[], bool], timeout_s: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s: {what}\n{stack.proxy_log()[-3000:]}")


def kv(stack: Stack):  # type: ignore[no-untyped-def]
    return stack.vault.client().secrets.kv.v2


def test_keys_status_reports_version_and_age_from_vault(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    with start_stack(tmp_path, [A, B], {"bot": POLICY}) as stack:
        kv(stack).create_or_update_secret(path="exchanges/binance-b", secret=dict(B.fields), mount_point="secret")
        out = stack.cli("keys", "status")
        assert out.returncode == 0, out.stderr
        rows = {r["account"]: r for r in map(json.loads, out.stdout.splitlines())}
        assert rows["binance-a"]["version"] == 1 and rows["binance-b"]["version"] == 2
        for row in rows.values():
            assert row["status"] == "ok"
            created = datetime.fromisoformat(row["created"].replace("Z", "+00:00"))
            assert abs((created - before).total_seconds()) < 120  # Vault's clock is this machine's
            assert 0 <= row["age_days"] < 0.01
        assert "SECRET" not in out.stdout + out.stderr and "a" * 64 not in out.stdout

        # the worker exports the same age as a metric
        eventually(lambda: len(stack.metric("proxy_key_age_seconds")) == 2, 15, "key age metric", stack)
        ages = dict(stack.metric("proxy_key_age_seconds"))
        assert all(0 <= age < 600 for age in ages.values()), ages

        # a deleted secret is an error line and exit 1
        kv(stack).delete_metadata_and_all_versions(path="exchanges/binance-b", mount_point="secret")
        out = stack.cli("keys", "status")
        assert out.returncode == 1
        rows = {r["account"]: r for r in map(json.loads, out.stdout.splitlines())}
        assert rows["binance-a"]["status"] == "ok"
        assert rows["binance-b"]["status"] == "error" and "no secret" in rows["binance-b"]["error"]


def test_deleted_or_destroyed_secret_stops_only_its_account(tmp_path: Path) -> None:
    with start_stack(tmp_path, [A, B], {"bot": POLICY}) as stack:
        token = stack.token("bot")
        assert balance(stack, "binance-a", token).status_code == 200
        assert balance(stack, "binance-b", token).status_code == 200

        # the whole secret deleted: account a stops, b goes on, /readyz stays 200 and says why
        kv(stack).delete_metadata_and_all_versions(path="exchanges/binance-a", mount_point="secret")
        eventually(lambda: balance(stack, "binance-a", token).status_code == 503, 15, "a stops", stack)
        r = balance(stack, "binance-a", token)
        assert r.headers["x-proxy-error"] == "not_ready" and "binance-a" in proxy_error(r)["message"]
        assert balance(stack, "binance-b", token).status_code == 200
        code, body = stack.readyz()
        assert code == 200 and any("binance-a" in s for s in body["accounts_stopped"])

        # the current version of b soft-deleted: b stops too
        kv(stack).delete_latest_version_of_secret(path="exchanges/binance-b", mount_point="secret")
        eventually(lambda: balance(stack, "binance-b", token).status_code == 503, 15, "b stops", stack)

        # new versions written: both come back, no restart
        for spec in (A, B):
            kv(stack).create_or_update_secret(path=f"exchanges/{spec.name}", secret=dict(spec.fields),
                                              mount_point="secret")
        for name in ("binance-a", "binance-b"):
            eventually(lambda n=name: balance(stack, n, token).status_code == 200, 15, f"{name} back", stack)  # type: ignore[misc]
        assert "accounts_stopped" not in stack.readyz()[1]

        # a destroyed current version stops the account as well
        current = kv(stack).read_secret_metadata(path="exchanges/binance-b", mount_point="secret")
        assert current["data"]["current_version"] == 2
        kv(stack).destroy_secret_versions(path="exchanges/binance-b", versions=[2], mount_point="secret")
        eventually(lambda: balance(stack, "binance-b", token).status_code == 503, 15, "b destroyed", stack)
        assert balance(stack, "binance-a", token).status_code == 200
        log = stack.proxy_log()
        assert "a" * 64 not in log and "b" * 64 not in log


def test_vault_down_at_start_not_ready_then_ready_without_restart(tmp_path: Path) -> None:
    with start_stack(tmp_path, [A], {"bot": POLICY_A}, persistent_vault=True, start_proxy=False) as stack:
        token = stack.token("bot")
        stack.vault.stop()
        proc = stack.start_proxy()
        eventually(lambda: _readyz_or_none(stack) is not None, 30, "admin listener up", stack)
        code, body = stack.readyz()
        assert code == 503 and any(r.startswith("vault:") for r in body["reasons"]), body
        r = balance(stack, "binance-a", token)
        assert r.status_code == 503 and r.headers["x-proxy-error"] == "not_ready"
        time.sleep(2)
        assert proc.poll() is None

        stack.vault.restart()
        stack.wait_ready(timeout_s=40)
        assert proc.poll() is None  # the same process: no restart
        assert balance(stack, "binance-a", token).status_code == 200


def _readyz_or_none(stack: Stack) -> tuple[int, dict[str, object]] | None:
    try:
        return stack.readyz()
    except httpx.HTTPError:
        return None


def test_vault_down_while_serving_grace_then_not_ready_then_back(tmp_path: Path) -> None:
    with start_stack(tmp_path, [A], {"bot": POLICY_A}, persistent_vault=True,
                     vault_toml="grace_period_s = 6") as stack:
        token = stack.token("bot")
        assert balance(stack, "binance-a", token).status_code == 200
        down_at = time.monotonic()
        stack.vault.stop()

        # within the grace period: still serving from memory; /readyz says Vault is down
        eventually(lambda: "vault" in stack.readyz()[1], 10, "readyz notices Vault down", stack)
        code, body = stack.readyz()
        if time.monotonic() - down_at < 5:
            assert code == 200 and body["vault"]["up"] is False
            assert balance(stack, "binance-a", token).status_code == 200

        # past it: 503 not_ready with a clear reason
        eventually(lambda: balance(stack, "binance-a", token).status_code == 503, 20, "grace ends", stack)
        assert time.monotonic() - down_at >= 6
        r = balance(stack, "binance-a", token)
        assert r.headers["x-proxy-error"] == "not_ready" and "grace period" in proxy_error(r)["message"]
        code, body = stack.readyz()
        assert code == 503 and any("grace_period_s" in s for s in body["reasons"]), body
        assert [v for _, v in stack.metric("proxy_vault_up")] == [0.0]
        assert sum(v for _, v in stack.metric("proxy_vault_errors_total")) >= 1

        # Vault back (same data, unsealed): serving again, no restart
        stack.vault.restart()
        eventually(lambda: balance(stack, "binance-a", token).status_code == 200, 20, "serving again", stack)
        assert stack.readyz()[0] == 200
        assert [v for _, v in stack.metric("proxy_vault_up")] == [1.0]


def test_approle_token_renewed_and_relogged_past_several_ttls(tmp_path: Path) -> None:
    with start_stack(tmp_path, [A], {"bot": POLICY_A}, start_proxy=False) as stack:
        client = stack.vault.client()
        client.sys.enable_auth_method("approle")
        client.sys.create_or_update_policy("proxy-read", """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
""")
        client.auth.approle.create_or_update_approle(
            "proxy", token_policies=["proxy-read"], token_ttl="8s", token_max_ttl="18s")
        role_id = client.auth.approle.read_role_id("proxy")["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id("proxy")["data"]["secret_id"]
        for name, value in (("role-id", role_id), ("secret-id", secret_id)):
            (tmp_path / name).write_text(value)
            (tmp_path / name).chmod(0o600)
        stack.edit_config('auth = "token"\ntoken_file = "vault-token"',
                          'auth = "approle"\nrole_id_file = "role-id"\nsecret_id_file = "secret-id"')
        stack.start_proxy()
        stack.wait_ready()
        token = stack.token("bot")

        started = time.monotonic()
        version = 1
        while time.monotonic() - started < 22:  # past two TTLs and the max TTL
            assert balance(stack, "binance-a", token).status_code == 200
            if time.monotonic() - started > 9 * version:  # refreshing still works: follow a rotation
                version += 1
                kv(stack).create_or_update_secret(path="exchanges/binance-a", secret=dict(A.fields),
                                                  mount_point="secret")
            time.sleep(1)
        eventually(lambda: [v for _, v in stack.metric("proxy_key_version")] == [float(version)], 10,
                   "the latest rotation was followed", stack)
        actions = dict(stack.metric("proxy_vault_token_renewals_total"))
        assert actions.get('{action="renew"}', 0) >= 1, actions
        assert actions.get('{action="login"}', 0) >= 1, actions
        assert not stack.metric("proxy_vault_errors_total"), stack.proxy_log()[-2000:]


def test_an_unreadable_revocation_list_counts_against_the_grace_period(tmp_path: Path) -> None:
    """A follow-up round that fails in an unexpected way (here a hand-edited revocation list)
    must not end the refresh loop: revocations could not be enforced, so the grace period runs
    out and the proxy refuses, then serves again once the list is fixed."""
    with start_stack(tmp_path, [A], {"bot": POLICY_A}, vault_toml="grace_period_s = 3") as stack:
        token = stack.token("bot")
        assert balance(stack, "binance-a", token).status_code == 200
        kv = stack.vault.client().secrets.kv.v2
        kv.create_or_update_secret(path="proxy/revocations", secret={"clients": "[1, 2]"},
                                   mount_point="secret")
        eventually(lambda: balance(stack, "binance-a", token).status_code == 503, 20, "grace ends", stack)
        assert sum(v for _, v in stack.metric("proxy_vault_errors_total")) >= 1
        assert "revocations" in stack.proxy_log()
        kv.create_or_update_secret(path="proxy/revocations", secret={"clients": "{}"}, mount_point="secret")
        eventually(lambda: balance(stack, "binance-a", token).status_code == 200, 20, "serving again", stack)


POOL_B = {"api_key": "lifeKeyPoolB0123456", "api_secret": "p" * 64}


def test_a_deleted_pool_key_stops_alone_the_pool_and_other_accounts_serve(tmp_path: Path) -> None:
    """A pool key whose secret is deleted (or whose current version is) is forgotten alone: the
    pool keeps serving with its other key, the other account is still refreshed (a rotation of
    it is picked up), and /readyz says which key stopped. Not a Vault outage."""
    from proxy_devkit.emulator.binance import BinanceKey

    with start_stack(tmp_path, [A, B], {"bot": POLICY}, start_proxy=False) as stack:
        stack.emulator("binance-a").add_key(BinanceKey(POOL_B["api_key"], hmac_secret=POOL_B["api_secret"]))
        kv(stack).create_or_update_secret(path="exchanges/binance-a2", secret=POOL_B, mount_point="secret")
        stack.edit_config('secret = "exchanges/binance-a"',
                          'secrets = ["exchanges/binance-a", "exchanges/binance-a2"]')
        stack.start_proxy(1)
        stack.wait_ready()
        token = stack.token("bot")
        emulator = stack.emulator("binance-a")

        def keys_used(n: int) -> set[str | None]:
            emulator.recorder.clear()
            for _ in range(n):
                assert balance(stack, "binance-a", token).status_code == 200
            return {r.header("X-MBX-APIKEY") for r in emulator.recorder.all() if r.path == "/api/v3/account"}

        assert keys_used(4) == {A.fields["api_key"], POOL_B["api_key"]}

        # the first key of the pool deleted entirely
        kv(stack).delete_metadata_and_all_versions(path="exchanges/binance-a", mount_point="secret")
        eventually(lambda: any("exchanges/binance-a:" in s for s in stack.readyz()[1].get("accounts_stopped", [])),
                   15, "readyz names the stopped pool key", stack)
        assert keys_used(4) == {POOL_B["api_key"]}
        code, body = stack.readyz()
        assert code == 200 and "vault" not in body, body
        # the refresh round still reaches the other account: its rotation is picked up
        kv(stack).create_or_update_secret(path="exchanges/binance-b", secret=dict(B.fields), mount_point="secret")
        eventually(lambda: ("{account=\"binance-b\"", 2.0) in
                   [(labels.split(",")[0].rstrip("}"), v) for labels, v in stack.metric("proxy_key_version")],
                   15, "binance-b rotated to version 2", stack)

        # the second key's current version soft-deleted too: the pool has no key left
        kv(stack).delete_latest_version_of_secret(path="exchanges/binance-a2", mount_point="secret")
        eventually(lambda: balance(stack, "binance-a", token).status_code == 503, 15, "pool stops", stack)
        assert balance(stack, "binance-b", token).status_code == 200
        assert "refresh from Vault failed" not in stack.proxy_log()

        # written again: the pool serves with both keys, no restart
        kv(stack).create_or_update_secret(path="exchanges/binance-a", secret=dict(A.fields), mount_point="secret")
        kv(stack).create_or_update_secret(path="exchanges/binance-a2", secret=POOL_B, mount_point="secret")
        eventually(lambda: balance(stack, "binance-a", token).status_code == 200, 15, "pool back", stack)
        eventually(lambda: "accounts_stopped" not in stack.readyz()[1], 15, "nothing stopped", stack)
        assert keys_used(4) == {A.fields["api_key"], POOL_B["api_key"]}


def test_keys_status_and_rotate_cover_every_key_of_a_pool(tmp_path: Path) -> None:
    """`keys status` prints one line per pool key with its path; `keys rotate --secret PATH`
    rotates a key other than the first, and refuses a path that is not the account's."""
    with start_stack(tmp_path, [A], {"bot": POLICY_A}, start_proxy=False) as stack:
        kv(stack).create_or_update_secret(path="exchanges/binance-a2", secret=POOL_B, mount_point="secret")
        stack.edit_config('secret = "exchanges/binance-a"',
                          'secrets = ["exchanges/binance-a", "exchanges/binance-a2"]')
        out = stack.cli("keys", "status")
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(r["account"], r["secret"], r["version"], r["status"]) for r in rows] == [
            ("binance-a", "exchanges/binance-a", 1, "ok"), ("binance-a", "exchanges/binance-a2", 1, "ok")]

        new = {"api_key": "lifeKeyPoolB2nd01234", "api_secret": "q" * 64}
        rotated = stack.cli("keys", "rotate", "--account", "binance-a", "--secret", "exchanges/binance-a2",
                            "--skip-exchange-check", stdin=json.dumps(new))  # the emulator lacks it
        assert rotated.returncode == 0, rotated.stderr
        assert "exchanges/binance-a2 version 2" in rotated.stderr
        read = kv(stack).read_secret_version(path="exchanges/binance-a2", mount_point="secret",
                                             raise_on_deleted_version=True)["data"]
        assert read["metadata"]["version"] == 2 and read["data"]["api_key"] == new["api_key"]
        first = kv(stack).read_secret_metadata(path="exchanges/binance-a", mount_point="secret")
        assert first["data"]["current_version"] == 1, "the first key is untouched"

        # a path that is not one of the account's keys: refused, nothing written
        wrong = stack.cli("keys", "rotate", "--account", "binance-a", "--secret", "exchanges/other",
                          stdin=json.dumps(new))
        assert wrong.returncode == 2 and "is not a key of account binance-a" in wrong.stderr
        assert "exchanges/binance-a, exchanges/binance-a2" in wrong.stderr

        # a deleted pool key: an error line naming its path, exit 1
        kv(stack).delete_metadata_and_all_versions(path="exchanges/binance-a2", mount_point="secret")
        out = stack.cli("keys", "status")
        assert out.returncode == 1
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(r["secret"], r["status"]) for r in rows] == [
            ("exchanges/binance-a", "ok"), ("exchanges/binance-a2", "error")]
        assert "key exchanges/binance-a2" in out.stderr
        assert "q" * 64 not in out.stdout + out.stderr + rotated.stdout + rotated.stderr
