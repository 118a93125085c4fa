"""The configuration loader: strict, with messages that say what to use."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load
from proxy.errors import ConfigError

BASE = """
[server]
listen = "127.0.0.1:8700"
admin_listen = "127.0.0.1:8701"
[vault]
addr = "http://127.0.0.1:8200"
token_file = "vault-token"
[[accounts]]
name = "binance-main"
exchange = "binance"
secret = "exchanges/binance-main"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return path


def test_config_loads_contract_example_with_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, BASE))
    acct = cfg.accounts[0]
    assert acct.base_url == "https://api.binance.com" and not acct.custom_base_url
    assert cfg.vault.token_file == tmp_path / "vault-token"
    assert cfg.state.backend == "sqlite" and cfg.state.path == tmp_path / "state.db"
    assert cfg.audit_dir == tmp_path / "audit" and cfg.policies_dir == tmp_path / "policies"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BASE + "\n[extra]\na = 1\n", "config.extra: unknown key"),
        (BASE.replace('token_file = "vault-token"', 'token_file = "vault-token"\ntokn = 1'), "vault.tokn: unknown key"),
        (BASE.replace('listen = "127.0.0.1:8700"', 'listen = "nope"'), "server.listen"),
        (BASE.replace('exchange = "binance"', 'exchange = "ftx"'), "unknown exchange 'ftx'"),
        (BASE + 'base_url = "http://127.0.0.1:9000"\n', "unsafe_custom_base_url = true"),
        (BASE.replace('[vault]', '[vault]\nauth = "ldap"'), "use \"token\" or \"approle\""),
        (BASE.replace('[vault]', '[vault]\nauth = "approle"'), "role_id_file"),
        (BASE + '[[accounts]]\nname = "binance-main"\nexchange = "binance"\nsecret = "x"\n', "used twice"),
        (BASE.replace('name = "binance-main"', 'name = "Binance Main"'), "lower-case"),
        (BASE + 'environment = "staging"\n', "use \"live\" or \"testnet\""),
        (BASE.replace('exchange = "binance"', 'exchange = "kraken"') + 'environment = "testnet"\n',
         "no testnet environment"),
        ("[state]\nbackend = \"redis\"\n", "url"),
        ("not toml at all [", "not valid TOML"),
        (BASE.replace('exchange = "binance"', 'exchange = "okx"') + "recv_window_ms = 5000\n",
         "accounts[binance-main].recv_window_ms: okx has no receive window to set; remove the key"),
        (BASE + 'nonce_unit = "us"\n',
         "accounts[binance-main].nonce_unit: binance signs with a timestamp, not a nonce; remove the key"),
        (BASE.replace('[vault]', '[vault]\ntimeout_s = 0'), "vault.timeout_s: must be between 0 and 60"),
        ("[state]\nsynchronous = \"off\"\n" + BASE, "state.synchronous: 'off': use \"full\""),
    ],
)
def test_config_rejects_with_file_and_fix(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    assert str(tmp_path / "proxy.toml") in str(err.value)
    assert fragment in str(err.value)


def test_config_custom_base_url_needs_the_unsafe_flag(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, BASE + 'base_url = "http://127.0.0.1:9000"\nunsafe_custom_base_url = true\n'))
    assert cfg.accounts[0].custom_base_url and cfg.accounts[0].base_url == "http://127.0.0.1:9000"


def test_config_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.toml")


def test_config_weight_budget_defaults_from_the_exchange_and_unsafe_flag(tmp_path: Path) -> None:
    acct = load(write(tmp_path, BASE)).accounts[0]
    assert acct.weight_per_minute == 6000 and acct.unsafe_allow_withdraw_capable_key is False
    acct = load(write(tmp_path, BASE + "weight_per_minute = 0\nunsafe_allow_withdraw_capable_key = true\n")).accounts[0]
    assert acct.weight_per_minute is None and acct.unsafe_allow_withdraw_capable_key is True
    okx = BASE.replace('"binance"', '"okx"')
    assert load(write(tmp_path, okx)).accounts[0].weight_per_minute is None


@pytest.mark.parametrize(("line", "expected"), [
    ("weight_per_minute = -1", "accounts[binance-main].weight_per_minute: must be between 0"),
    ('weight_per_minute = "6000"', "accounts[binance-main].weight_per_minute: must be a int"),
    ('unsafe_allow_withdraw_capable_key = "yes"', "unsafe_allow_withdraw_capable_key: must be a bool"),
])
def test_config_safety_keys_are_strict(tmp_path: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, BASE + line + "\n"))
    assert expected in str(exc.value)
