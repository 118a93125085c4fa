"""Every exchange fact lives in its exchange's module: no other module of the package names an
exchange, in code, strings, comments or docstrings.

Generic code asks the exchange object (``exchange.capabilities``) instead of keeping a table
keyed by exchange name, so a tenth exchange is one module plus one emulator. Allowed to name
exchanges: ``proxy/exchanges/<name>.py`` (or a package ``proxy/exchanges/<name>/``), each naming
only itself; the registry ``proxy/exchanges/__init__.py``; the emulators
(``proxy_devkit/emulator/``); and the demo, which narrates one scripted bot session against one
emulator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy import exchanges

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "proxy"
DEVKIT = ROOT / "proxy_devkit"
NAMES = exchanges.NAMES
#: an exchange's name as a word of its own (``binance_emulator`` and ``Binance's`` count too)
MENTION = re.compile(r"(?<![A-Za-z])(" + "|".join(NAMES) + r")(?![A-Za-z])", re.IGNORECASE)
ALLOWED_ELSEWHERE = {DEVKIT / "demo.py"}


def _owner(path: Path) -> str | None:
    """The exchange whose module (or package) ``path`` belongs to, if any."""
    rel = path.relative_to(PACKAGE / "exchanges") if path.is_relative_to(PACKAGE / "exchanges") else None
    if rel is None:
        return None
    head = rel.parts[0].removesuffix(".py")
    return head if head in NAMES else None


def _generic_modules() -> list[Path]:
    found = [p for p in sorted(PACKAGE.rglob("*.py")) if _owner(p) is None]
    found += [p for p in sorted(DEVKIT.rglob("*.py")) if "emulator" not in p.relative_to(DEVKIT).parts]
    return [p for p in found if p != PACKAGE / "exchanges" / "__init__.py" and p not in ALLOWED_ELSEWHERE]


GENERIC = _generic_modules()


def test_exchange_names_the_scan_sees_the_whole_package() -> None:
    assert len(GENERIC) > 50  # the walk found the package, not an empty directory
    assert PACKAGE / "guards" / "key_vetting.py" in GENERIC


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(ROOT)))
def test_exchange_names_appear_only_in_exchange_modules(path: Path) -> None:
    hits = [
        f"{n}: {line.strip()[:100]}"
        for n, line in enumerate(path.read_text().splitlines(), 1) if MENTION.search(line)
    ]
    assert not hits, "an exchange fact outside its exchange module; declare it as a capability:\n" + \
        "\n".join(hits)


@pytest.mark.parametrize("name", NAMES)
def test_exchange_names_each_exchange_module_names_only_itself(name: str) -> None:
    here = PACKAGE / "exchanges"
    paths = [here / f"{name}.py"] if (here / f"{name}.py").exists() else sorted((here / name).rglob("*.py"))
    assert paths and all(p.exists() for p in paths)
    for path in paths:
        others = {m.lower() for m in MENTION.findall(path.read_text())} - {name}
        assert not others, f"{path.relative_to(ROOT)} names {sorted(others)}"


def test_exchange_names_the_pattern_matches_a_name_in_any_spelling() -> None:
    assert MENTION.search("Binance's 418") and MENTION.search("binance_emulator")
    assert MENTION.search("OKX demo") and not MENTION.search("lookxyz")
