"""deploy/systemd: the unit carries the hardening it promises, and systemd itself agrees."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from proxy import config as proxy_config

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNIT = SYSTEMD / "signing-proxy.service"
INTERPRETER = "/opt/signing-proxy/venv/bin/python"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {raw!r}"
        sections[current][key.strip()].append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key} should be set exactly once, got {values}"
    return values[0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("LimitCORE", "0"),
        ("UMask", "0077"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("StateDirectoryMode", "0700"),
        ("KeyringMode", "private"),
    ],
)
def test_unit_sets_hardening_directive(service: dict[str, list[str]], key: str, value: str) -> None:
    assert one(service, key) == value


def test_unit_runs_as_a_dedicated_unprivileged_user(service: dict[str, list[str]]) -> None:
    user = one(service, "User")
    assert user == "signing-proxy"
    assert one(service, "Group") == "signing-proxy"
    assert "DynamicUser" not in service or one(service, "DynamicUser") == "no"
    sysusers = (SYSTEMD / "signing-proxy.sysusers.conf").read_text()
    assert re.search(rf"^u {user} - .* /usr/sbin/nologin$", sysusers, re.M)


def test_unit_restricts_address_families(service: dict[str, list[str]]) -> None:
    families = set(one(service, "RestrictAddressFamilies").split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_unit_filters_system_calls(service: dict[str, list[str]]) -> None:
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert any(f.startswith("~") and "@privileged" in f for f in filters)


def test_unit_serves_in_isolated_mode_without_unsafe_flags(service: dict[str, list[str]]) -> None:
    argv = one(service, "ExecStart").split()
    assert argv[0] == INTERPRETER
    assert argv[1:5] == ["-I", "-B", "-m", "proxy"]
    assert argv[5:] == ["serve", "--config", "/etc/signing-proxy/config.toml"]
    assert not any(a.startswith("--unsafe") for a in argv)


def test_unit_does_not_restart_on_configuration_errors(service: dict[str, list[str]]) -> None:
    assert "3" in one(service, "RestartPreventExitStatus").split()


def test_unit_passes_vault_credentials_as_systemd_credentials(
    service: dict[str, list[str]],
) -> None:
    creds = dict(v.split(":", 1) for v in service["LoadCredential"])
    assert set(creds) == {"vault-role-id", "vault-secret-id"}
    assert all(p.startswith("/etc/signing-proxy/credentials/") for p in creds.values())
    assert "-/etc/signing-proxy/credentials" in service["InaccessiblePaths"]
    cfg = proxy_config.load(SYSTEMD / "config.toml")
    run = Path("/run/credentials/signing-proxy.service")
    assert cfg.vault.auth == "approle"
    assert cfg.vault.role_id_file == run / "vault-role-id"
    assert cfg.vault.secret_id_file == run / "vault-secret-id"


def test_example_config_listens_on_loopback_and_keeps_state_in_state_directory() -> None:
    cfg = proxy_config.load(SYSTEMD / "config.toml")
    assert cfg.server.listen.host == "127.0.0.1"
    assert cfg.server.admin_listen.host == "127.0.0.1"
    assert not cfg.server.allow_non_loopback
    assert cfg.state.path is not None
    assert cfg.state.path.parent == Path("/var/lib/signing-proxy")
    assert cfg.audit_dir.parent == Path("/var/lib/signing-proxy")


def _verifiable_copy(tmp_path: Path) -> Path:
    # `verify` checks that ExecStart's binary exists: point it at this interpreter.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INTERPRETER, sys.executable))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    unit = _verifiable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    messages = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if unit.name in line or "Unknown" in line or "ignoring" in line
    ]
    assert result.returncode == 0, result.stderr
    assert messages == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    unit = _verifiable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
