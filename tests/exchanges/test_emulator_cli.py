"""``python -m proxy_devkit.emulator``: its help says how the key is given, and an empty secret
on stdin is warned about."""

from __future__ import annotations

import io
import subprocess
import sys

from proxy_devkit.emulator.__main__ import read_secret
from tests.support.stack import REPO


def test_emulator_help_says_how_the_key_is_given() -> None:
    out = subprocess.run([sys.executable, "-m", "proxy_devkit.emulator", "--help"], capture_output=True,
                         text=True, cwd=REPO, timeout=60, check=True).stdout
    assert "--api-key" in out and "standard input" in out and "echo" in out
    assert "binance" in out and "deribit" in out


def test_emulator_reads_the_secret_from_stdin_and_warns_when_it_is_empty() -> None:
    err = io.StringIO()
    assert read_secret(io.StringIO("  the-secret\n"), err) == "the-secret" and err.getvalue() == ""
    assert read_secret(io.StringIO("\n"), err) == ""
    assert "warning: no API secret on stdin" in err.getvalue()
