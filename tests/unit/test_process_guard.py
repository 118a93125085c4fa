"""Start-up hardening: no core dumps, not dumpable, umask 077, no root, private files, loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.server import hardening as process_guard

LINUX = sys.platform.startswith("linux")


def _run_isolated(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter: hardening changes the whole process, not the test's."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_harden_process_disables_core_dumps_dumpability_and_sets_umask() -> None:
    result = _run_isolated(
        """
        import json, os, resource
        from proxy.server import hardening as process_guard
        os.umask(0o022)
        before = process_guard.is_dumpable()
        process_guard.harden_process()
        umask = os.umask(0o077)
        print(json.dumps({
            "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
            "before": before,
            "after": process_guard.is_dumpable(),
            "umask": umask,
        }))
        """
    )
    assert result["core"] == [0, 0]
    assert result["umask"] == 0o077
    if LINUX:
        assert result["before"] is True
        assert result["after"] is False


def test_harden_process_core_limit_cannot_be_raised_again() -> None:
    result = _run_isolated(
        """
        import json, resource
        from proxy.server import hardening as process_guard
        process_guard.harden_process()
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (1 << 20, 1 << 20))
            raised = True
        except (ValueError, OSError):
            raised = False
        print(json.dumps({"raised": raised}))
        """
    )
    # Root may raise a hard limit again; anyone else may not. The test suite may run as root.
    if os.geteuid() != 0:
        assert result["raised"] is False


@pytest.mark.skipif(not LINUX, reason="/proc is Linux")
def test_harden_process_makes_proc_mem_owned_by_root() -> None:
    # A non-dumpable process's /proc/<pid> files belong to root, so the same user cannot read
    # its memory or environment.
    result = _run_isolated(
        """
        import json, os
        from proxy.server import hardening as process_guard
        process_guard.harden_process()
        st = os.stat(f"/proc/{os.getpid()}/environ")
        print(json.dumps({"uid": st.st_uid}))
        """
    )
    assert result["uid"] == 0


def test_files_created_after_hardening_are_private(tmp_path: Path) -> None:
    target = tmp_path / "state.db"
    _run_isolated(
        f"""
        import json
        from proxy.server import hardening as process_guard
        process_guard.harden_process()
        open({str(target)!r}, "w").close()
        print("{{}}")
        """
    )
    assert target.stat().st_mode & 0o777 == 0o600


def test_refuse_root_refuses_uid_zero_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "getuid", lambda: 0)
    with pytest.raises(ConfigError) as info:
        process_guard.refuse_root(allow=False)
    assert "refusing to run as root" in str(info.value)
    assert "--unsafe-allow-root" in str(info.value)


def test_refuse_root_refuses_effective_root_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    with pytest.raises(ConfigError):
        process_guard.refuse_root(allow=False)


def test_refuse_root_allows_root_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "getuid", lambda: 0)
    process_guard.refuse_root(allow=True)


def test_refuse_root_accepts_an_unprivileged_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    process_guard.refuse_root(allow=False)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_check_private_file_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "secret-id"
    f.write_text("x")
    f.chmod(mode)
    process_guard.check_private_file(f)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o440, 0o444])
def test_check_private_file_refuses_group_or_other_readable(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "secret-id"
    f.write_text("x")
    f.chmod(mode)
    with pytest.raises(ConfigError) as info:
        process_guard.check_private_file(f)
    assert info.value.file == str(f)
    assert info.value.problem == f"readable by group or others; run chmod 600 {f}"


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_check_private_file_refuses_group_or_other_writable(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "config.toml"
    f.write_text("x")
    f.chmod(mode)
    with pytest.raises(ConfigError) as info:
        process_guard.check_private_file(f)
    assert "writable by group or others" in str(info.value)


def test_check_private_file_follows_symlinks_to_the_real_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text("x")
    real.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="readable by group or others"):
        process_guard.check_private_file(link)


def test_check_private_file_folder_suggests_chmod_700(tmp_path: Path) -> None:
    d = tmp_path / "policies"
    d.mkdir()
    d.chmod(0o755)
    with pytest.raises(ConfigError, match="run chmod 700"):
        process_guard.check_private_file(d)
    d.chmod(0o700)
    process_guard.check_private_file(d)


def test_check_private_file_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        process_guard.check_private_file(tmp_path / "absent")
    assert "cannot be read" in info.value.problem


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:8700", ("127.0.0.1", 8700)),
        ("127.0.0.2:8700", ("127.0.0.2", 8700)),
        ("localhost:8701", ("localhost", 8701)),
        ("[::1]:8700", ("::1", 8700)),
        ("[::ffff:127.0.0.1]:8700", ("::ffff:127.0.0.1", 8700)),
        ("::1:8700", ("::1", 8700)),  # as config.Listen prints [::1]:8700
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_check_listen_address_accepts_loopback(addr: str, expected: tuple[str, int]) -> None:
    assert process_guard.check_listen_address(addr, allow_non_loopback=False) == expected


@pytest.mark.parametrize(
    "addr",
    [
        "0.0.0.0:8700",
        "[::]:8700",
        ":::8700",
        "10.0.0.5:8700",
        "proxy.internal:8700",
        "[2001:db8::1]:80",
        "2001:db8::1:80",
    ],
)
def test_check_listen_address_refuses_non_loopback_unless_allowed(addr: str) -> None:
    with pytest.raises(ConfigError) as info:
        process_guard.check_listen_address(addr, allow_non_loopback=False)
    assert "not a loopback address" in info.value.problem
    assert "allow_non_loopback" in info.value.problem
    host, port = process_guard.check_listen_address(addr, allow_non_loopback=True)
    assert port > 0
    assert host


@pytest.mark.parametrize(
    "addr", ["8700", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "[::1]8700", ":80", "fe80::zz:80", "a:b:80"]
)
def test_check_listen_address_refuses_malformed(addr: str) -> None:
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        process_guard.check_listen_address(addr, allow_non_loopback=True)


def test_check_listen_address_names_the_setting_and_file() -> None:
    with pytest.raises(ConfigError) as info:
        process_guard.check_listen_address(
            "0.0.0.0:8701", False, setting="server.admin_listen", config_file="/etc/p.toml"
        )
    assert info.value.file == "/etc/p.toml"
    assert info.value.problem.startswith("server.admin_listen = '0.0.0.0:8701'")
