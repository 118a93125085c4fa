"""[server.limits]: the pre-authentication bounds are configurable, checked and defaulted."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load
from proxy.errors import ConfigError
from proxy.model.limits import ClientLimits

BASE = """
[server]
listen = "127.0.0.1:8700"
admin_listen = "127.0.0.1:8701"
{limits}
[vault]
addr = "http://127.0.0.1:8200"
token_file = "vault-token"
"""


def _load(tmp_path: Path, limits: str) -> ClientLimits:
    path = tmp_path / "proxy.toml"
    path.write_text(BASE.format(limits=limits))
    return load(path).server.limits.values()


def test_limits_default_when_absent_and_read_when_set(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == ClientLimits()
    got = _load(tmp_path, "[server.limits]\nmax_headers = 32\nhead_timeout_s = 2\n")
    assert (got.max_headers, got.head_timeout_s, got.max_head_bytes) == (32, 2.0, ClientLimits().max_head_bytes)


@pytest.mark.parametrize(("line", "fragment"), [
    ("max_headers = 0", "server.limits.max_headers: must be between 8 and 1000"),
    ("head_timeout_s = \"10\"", "server.limits.head_timeout_s: must be a float"),
    ("max_header = 10", "server.limits.max_header: unknown key"),
])
def test_limits_refuse_nonsense_naming_the_key(tmp_path: Path, line: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _load(tmp_path, f"[server.limits]\n{line}\n")
