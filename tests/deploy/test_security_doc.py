"""SECURITY.md covers what the issue asks: assets, boundaries, each threat's guarantees and
limits, the exchange-side settings, and how to report a vulnerability."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "SECURITY.md"

THREATS = [
    "A compromised bot",
    "A compromised proxy host",
    "A malicious operator",
    "A network peer",
    "A curious operator",
    "Replay",
    "SSRF",
    "Denial of service",
    "Supply chain",
]


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^(#{2,3} .+)$", text, flags=re.M)
    return {parts[i].lstrip("# ").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.fixture(scope="module")
def doc() -> dict[str, str]:
    return sections(DOC.read_text())


@pytest.mark.parametrize(
    "heading",
    [
        "Assets",
        "Trust boundaries",
        "Threat model",
        "Exchange-side settings (required)",
        "Reporting a vulnerability",
    ],
)
def test_security_doc_has_section(doc: dict[str, str], heading: str) -> None:
    assert heading in doc


@pytest.mark.parametrize("threat", THREATS)
def test_each_threat_says_what_is_and_is_not_guaranteed(doc: dict[str, str], threat: str) -> None:
    body = doc[threat]
    assert "*Guaranteed" in body
    assert "*Not guaranteed:*" in body


def test_exchange_side_settings_name_the_three_musts(doc: dict[str, str]) -> None:
    body = doc["Exchange-side settings (required)"].lower()
    assert "no withdrawal rights" in body
    assert "ip allowlist" in body
    assert "sub-accounts" in body and "trading capital" in body
