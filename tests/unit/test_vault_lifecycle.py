"""Token renewal and the grace period, decided from times given as arguments (no Vault here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load
from proxy.errors import ConfigError, SecretSourceError, VaultUnreachable
from proxy.keys.session import TokenKeeper, VaultHealth, renewal_capped, token_action, vault_state
from proxy.keys.vault import TokenLease


def test_token_action_renews_at_two_thirds_of_the_ttl() -> None:
    lease = TokenLease(30, True)
    assert token_action(lease, 19.9, 30) == "none"
    assert token_action(lease, 20.0, 30) == "renew"


def test_token_action_root_token_never_expires() -> None:
    assert token_action(TokenLease(0, False), 10**9, 0) == "none"


def test_token_action_logs_in_when_not_renewable() -> None:
    assert token_action(TokenLease(30, False), 21, 30) == "login"


def test_renewal_capped_by_max_ttl_means_log_in() -> None:
    assert not renewal_capped(TokenLease(30, True), 30)
    assert not renewal_capped(TokenLease(20, True), 30)
    assert renewal_capped(TokenLease(19, True), 30)


def test_token_keeper_logs_in_at_once_when_renewal_is_capped() -> None:
    clock, src = Clock(), FakeSource(TokenLease(30, True), TokenLease(5, True))
    keeper = TokenKeeper(src, clock)
    clock.t += 21
    assert keeper.maintain() == "login"
    assert src.calls == ["renew", "login"] and src.lease.ttl_s == 30


class FakeSource:
    """Stands in for VaultSecretSource's token calls (unit test: no I/O)."""

    def __init__(self, lease: TokenLease, renew: TokenLease | Exception) -> None:
        self.lease, self.renew = lease, renew
        self.calls: list[str] = []

    def login(self) -> None:
        self.calls.append("login")
        self.lease = TokenLease(30, True)

    def renew_self(self) -> TokenLease:
        self.calls.append("renew")
        if isinstance(self.renew, Exception):
            raise self.renew
        self.lease = self.renew
        return self.lease


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_keeper_renews_then_waits_again() -> None:
    clock, src = Clock(), FakeSource(TokenLease(30, True), TokenLease(30, True))
    keeper = TokenKeeper(src, clock)
    clock.t += 10
    assert keeper.maintain() == "none"
    clock.t += 11
    assert keeper.maintain() == "renew" and keeper.renewals == 1
    clock.t += 10
    assert keeper.maintain() == "none"
    assert src.calls == ["renew"]


def test_token_keeper_logs_in_again_when_renewal_is_refused() -> None:
    clock, src = Clock(), FakeSource(TokenLease(30, True), SecretSourceError("renewing: Forbidden"))
    keeper = TokenKeeper(src, clock)
    clock.t += 25
    assert keeper.maintain() == "login"
    assert src.calls == ["renew", "login"] and keeper.logins == 1


def test_token_keeper_unreachable_vault_is_raised_not_retried_as_login() -> None:
    clock, src = Clock(), FakeSource(TokenLease(30, True), VaultUnreachable("down"))
    keeper = TokenKeeper(src, clock)
    clock.t += 25
    with pytest.raises(VaultUnreachable):
        keeper.maintain()
    assert src.calls == ["renew"]


def test_vault_state_grace_counts_down_then_expires() -> None:
    assert vault_state(None, 50.0, 300, "").up
    s = vault_state(100.0, 250.0, 300, "ConnectionError")
    assert not s.up and s.grace_left_s == 150 and not s.expired
    s = vault_state(100.0, 400.0, 300, "ConnectionError")
    assert s.expired and "grace_period_s" in s.reason(300) and "ConnectionError" in s.reason(300)


def test_vault_health_remembers_the_first_failure_and_resets() -> None:
    clock = Clock()
    health = VaultHealth(5, clock)
    health.failed("a")
    clock.t += 3
    health.failed("b")
    assert health.state().down_for_s == 3 and health.state().last_error == "b"
    clock.t += 3
    assert health.state().expired
    health.ok()
    assert health.state().up and not health.state().expired


BASE = """
[vault]
addr = "http://127.0.0.1:8200"
token_file = "vault-token"
"""


def test_config_vault_grace_and_keys_rotation_defaults(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(BASE)
    cfg = load(tmp_path / "p.toml")
    assert cfg.vault.grace_period_s == 300 and cfg.keys.rotation_warn_days == 90
    (tmp_path / "p.toml").write_text(BASE + "grace_period_s = 5\n[keys]\nrotation_warn_days = 30\n")
    cfg = load(tmp_path / "p.toml")
    assert cfg.vault.grace_period_s == 5 and cfg.keys.rotation_warn_days == 30


@pytest.mark.parametrize(("extra", "fragment"), [
    ("grace_period_s = -1\n", "vault.grace_period_s: must be between"),
    ("grace_period_s = \"5m\"\n", "vault.grace_period_s: must be a float"),
    ("[keys]\nrotation_warn_days = 0\n", "keys.rotation_warn_days: must be between 1 and 3650"),
    ("[keys]\nrotation_warn_day = 90\n", "keys.rotation_warn_day: unknown key"),
])
def test_config_vault_and_keys_are_strict(tmp_path: Path, extra: str, fragment: str) -> None:
    (tmp_path / "p.toml").write_text(BASE + extra)
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "p.toml")
    assert str(tmp_path / "p.toml") in str(err.value) and fragment in str(err.value)
