"""Configuration of key pools (``secrets = [...]``) and of exchange clock tracking."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, load
from proxy.errors import ConfigError

BASE = """
[vault]
addr = "http://127.0.0.1:8200"
token_file = "vault-token"
[[accounts]]
name = "kraken-main"
exchange = "kraken"
"""


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return load(path)


def test_config_key_pool_lists_every_path(tmp_path: Path) -> None:
    cfg = _load(tmp_path, BASE + 'secrets = ["exchanges/kraken-a", "exchanges/kraken-b"]\n')
    acct = cfg.accounts[0]
    assert acct.secret == "exchanges/kraken-a", "the first key keeps the single-key meaning"
    assert acct.secrets == acct.secret_paths == ("exchanges/kraken-a", "exchanges/kraken-b")


def test_config_single_secret_is_a_pool_of_one(tmp_path: Path) -> None:
    acct = _load(tmp_path, BASE + 'secret = "exchanges/kraken-a"\n').accounts[0]
    assert acct.secrets == () and acct.secret_paths == ("exchanges/kraken-a",)
    assert acct.exchange_clock


@pytest.mark.parametrize(("extra", "fragment"), [
    ('secret = "exchanges/a"\nsecrets = ["exchanges/b"]\n', "accounts[kraken-main].secrets: set either"),
    ("", "accounts[kraken-main].secret: is required"),
    ("secrets = []\n", "list 1 to 32 KV paths"),
    ('secrets = "exchanges/a"\n', "secrets: must be a list"),
    ('secrets = ["exchanges/a", "exchanges/a"]\n', "listed twice"),
    ('secrets = ["exchanges/a", "../b"]\n', "must be a KV path"),
    ('secrets = ["exchanges/a", 3]\n', "must be a KV path"),
    ('secret = "exchanges/a"\nexchange_clock = true\n', "kraken has no server-time endpoint"),
    ('secret = "exchanges/a"\nexchange_clock = "yes"\n', "exchange_clock: must be a bool"),
])
def test_config_key_pool_refusals_name_the_fix(tmp_path: Path, extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, BASE + extra)
    assert str(tmp_path / "proxy.toml") in str(err.value)
    assert fragment in str(err.value)


def test_config_exchange_clock_can_be_turned_off(tmp_path: Path) -> None:
    text = BASE.replace('"kraken"', '"binance"') + 'secret = "exchanges/b"\nexchange_clock = false\n'
    assert not _load(tmp_path, text).accounts[0].exchange_clock
