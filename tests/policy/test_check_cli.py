"""``python -m proxy policy check``: exit 0 ok, 3 invalid files, 4 failing cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from proxy.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    (tmp_path / "policies" / "config" / "proxy.toml").chmod(0o600)  # the one file-mode rule
    return tmp_path / "policies"


def check(examples: Path) -> int:
    return main(["policy", "check", "--config", str(examples / "config" / "proxy.toml")])


def test_check_examples_pass(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(examples) == 0
    out = capsys.readouterr()
    assert "FAIL" not in out.out and "policy test cases passed" in out.err


def test_check_invalid_policy_exits_3(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = examples / "dashboard.toml"
    path.write_text(path.read_text().replace('allow = ["read"]', 'allow = ["read", "withdraw"]', 1))
    assert check(examples) == 3
    assert "dashboard.toml: grants[0].allow: 'withdraw' can never be granted" in capsys.readouterr().out


def test_check_invalid_test_file_exits_3(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (examples / "broken.tests.toml").write_text('version = 1\n[[cases]]\nname = "x"\nexpect = "maybe"\n')
    assert check(examples) == 3
    assert "broken.tests.toml: cases[0].expect" in capsys.readouterr().out


def test_check_failing_case_exits_4(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = examples / "market-maker.toml"
    path.write_text(path.read_text().replace('max_order_qty = "0.5"', 'max_order_qty = "5"', 1))
    assert check(examples) == 4
    out = capsys.readouterr().out
    assert "FAIL" in out and "(BTC quantity over the cap): expected deny (max_order_qty), got deny (max_order_notional)" in out


def test_check_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["policy", "check", "--help"])
    text = capsys.readouterr().out
    assert "3 an invalid policy" in text and "4 a failing test case" in text
