"""One schema: the keys the README documents are exactly the keys the loader accepts."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from proxy import config

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS: dict[str, type[BaseModel]] = {
    "server": config.ServerConfig, "vault": config.VaultConfig, "state": config.StateConfig,
    "audit": config.AuditConfig, "policies": config.DirConfig, "tokens": config.TokenConfig,
    "keys": config.KeysConfig, "accounts": config.AccountConfig,
}


def documented() -> dict[str, set[str]]:
    """Section -> keys in the README's configuration example (commented-out keys included)."""
    text = README.read_text().split("## Configuration", 1)[1]
    block = text.split("```toml", 1)[1].split("```", 1)[0]
    keys: dict[str, set[str]] = {}
    section = ""
    for line in block.splitlines():
        head = re.match(r"#?\s*\[\[?([a-z_]+)\]\]?", line)
        if head:
            section = head.group(1)
            keys.setdefault(section, set())
            continue
        key = re.match(r"#?\s*([a-z_]+)\s*=", line)
        if key and section:
            keys[section].add(key.group(1))
    return keys


def test_every_documented_key_is_accepted_and_every_accepted_key_documented() -> None:
    readme = documented()
    assert set(readme) == set(SECTIONS) == set(config.Config.model_fields)
    for section, model in SECTIONS.items():
        assert readme[section] == set(model.model_fields), section
