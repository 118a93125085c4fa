"""``[tokens]`` is validated like every other section (issue 14, case 9): a negative or zero
TTL, an empty issuer or audience, or a default longer than the maximum is refused at load, with
the file, the key and what to use instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, load
from proxy.errors import ConfigError

BASE = '[vault]\naddr = "http://127.0.0.1:8200"\n'


def _load(tmp_path: Path, tokens: str) -> Config:
    path = tmp_path / "proxy.toml"
    path.write_text(BASE + "[tokens]\n" + tokens)
    return load(path)


@pytest.mark.parametrize(("tokens", "fragment"), [
    ("default_ttl_s = -1\n", "tokens.default_ttl_s: must be between 1 and"),
    ("default_ttl_s = 0\n", "tokens.default_ttl_s: must be between 1 and"),
    ("max_ttl_s = -86400\n", "tokens.max_ttl_s: must be between 1 and"),
    ('default_ttl_s = "30d"\n', "tokens.default_ttl_s: must be a int"),
    ('issuer = ""\n', "tokens.issuer: '': use a non-empty name"),
    ('issuer = "  "\n', "tokens.issuer: '  ': use a non-empty name"),
    ('audience = ""\n', "tokens.audience: '': use a non-empty name"),
    ('audience = "signing-proxy\\n"\n', "tokens.audience: 'signing-proxy\\n': use a non-empty name"),
    ("default_ttl_s = 100\nmax_ttl_s = 10\n",
     "tokens.default_ttl_s: 100 is longer than max_ttl_s (10); lower default_ttl_s or raise max_ttl_s"),
    ("ttl = 5\n", "tokens.ttl: unknown key"),
])
def test_tokens_settings_are_refused_with_the_fix(tmp_path: Path, tokens: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, tokens)
    assert str(tmp_path / "proxy.toml") in str(err.value)
    assert fragment in str(err.value)


def test_tokens_defaults_and_explicit_values_load(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert (cfg.tokens.issuer, cfg.tokens.audience) == ("signing-proxy", "signing-proxy")
    assert (cfg.tokens.default_ttl_s, cfg.tokens.max_ttl_s) == (30 * 86400, 366 * 86400)
    cfg = _load(tmp_path, 'issuer = "desk-a"\naudience = "proxy-a"\ndefault_ttl_s = 3600\nmax_ttl_s = 3600\n')
    assert (cfg.tokens.issuer, cfg.tokens.default_ttl_s, cfg.tokens.max_ttl_s) == ("desk-a", 3600, 3600)
