"""Per-account signing mode: ``signing`` and ``transit_key``, strictly validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load
from proxy.errors import ConfigError

BASE = """
[vault]
addr = "http://127.0.0.1:8200"
{vault}
[[accounts]]
name = "main"
exchange = "{exchange}"
secret = "exchanges/main"
{account}
"""


def _load(tmp_path: Path, account: str, exchange: str = "binance", vault: str = ""):  # type: ignore[no-untyped-def]
    path = tmp_path / "proxy.toml"
    path.write_text(BASE.format(account=account, exchange=exchange, vault=vault))
    return load(path)


def test_config_signing_defaults_to_local(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert (cfg.accounts[0].signing, cfg.accounts[0].transit_key) == ("local", None)
    assert cfg.vault.transit_mount == "transit"


def test_config_transit_key_defaults_to_the_account_name(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'signing = "transit"', vault='transit_mount = "proxy-transit"')
    assert (cfg.accounts[0].signing, cfg.accounts[0].transit_key) == ("transit", "main")
    assert cfg.vault.transit_mount == "proxy-transit"
    cfg = _load(tmp_path, 'signing = "transit"\ntransit_key = "binance-main-v1"', exchange="kraken")
    assert cfg.accounts[0].transit_key == "binance-main-v1"


@pytest.mark.parametrize(("account", "exchange", "fragment"), [
    ('signing = "vault"', "binance", 'accounts[main].signing: \'vault\': use "local" (the default) or "transit"'),
    ('transit_key = "k"', "binance", 'accounts[main].transit_key: is only for signing = "transit"'),
    ('signing = "transit"\ntransit_key = "a/b"', "binance", "accounts[main].transit_key: 'a/b': use letters"),
    ('signing = "transit"', "coinbase", 'coinbase cannot sign through Vault Transit'),
    ('signing = "transit"\ntransit_keys = "k"', "okx", "accounts[main].transit_keys: unknown key"),
])
def test_config_transit_mistakes_name_the_fix(tmp_path: Path, account: str, exchange: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, account, exchange)
    assert fragment in str(err.value) and "proxy.toml" in str(err.value)


def test_config_transit_mount_must_be_a_plain_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vault\.transit_mount"):
        _load(tmp_path, "", vault='transit_mount = "../x"')
