"""The demo's narration is bold on a terminal only, and never with NO_COLOR set (no-color.org)."""

from __future__ import annotations

import io

import pytest

from proxy_devkit import demo


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "no_color", "bold"), [
    (True, None, True), (True, "1", False), (False, None, False), (False, "1", False),
])
def test_demo_bold_only_on_a_terminal_without_no_color(
    monkeypatch: pytest.MonkeyPatch, tty: bool, no_color: str | None, bold: bool
) -> None:
    out = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    demo._say("step", "detail")
    assert ("\033[" in out.getvalue()) is bold
    assert "▶ step" in out.getvalue() and "detail" in out.getvalue()
