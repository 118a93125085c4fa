"""deploy/docker: non-root, read-only friendly, no build tools in the final image, health check."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

from proxy import config as proxy_config  # noqa: E402
from proxy.server.hardening import check_listen_address  # noqa: E402

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"
HEALTHCHECK = DOCKER / "healthcheck.py"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; comments dropped (also inside continuations), lines joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((DOCKER / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_dockerfile_is_multi_stage_on_a_slim_base(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["build", "runtime"]
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert all(s.base == "${PYTHON_IMAGE}" for s in stages)


def test_final_image_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000
    assert gid.isdigit() and int(gid) >= 1000
    # USER comes after every RUN: nothing runs as root once it is set.
    keywords = [kw for kw, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")


def test_final_image_has_no_build_tools_or_installer(final: Stage) -> None:
    runs = " ".join(final.all("RUN"))
    for tool in ("apt-get install", "apk add", "gcc", "build-essential", "make ", "pip install"):
        assert tool not in runs
    assert "pip uninstall --yes pip setuptools wheel" in runs
    copies = final.all("COPY")
    from_build = [c for c in copies if c.startswith("--from=")]
    assert from_build == ["--from=build /opt/venv /opt/venv"]


def test_build_stage_strips_pip_and_the_demo_vault_and_precompiles(stages: list[Stage]) -> None:
    build = " ".join(stages[0].all("RUN"))
    assert "openbao" not in build and "proxy_devkit" not in build  # the serving install has no devkit
    assert "pip uninstall --yes pip setuptools wheel" in build
    assert "compileall" in build  # a read-only root file system never needs to write .pyc


def test_build_stage_installs_only_from_the_hashed_lock(stages: list[Stage]) -> None:
    runs = stages[0].all("RUN")
    installs = [part.strip() for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs[:2] == [
        "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements/serve.txt",
        "/opt/venv/bin/pip install --no-compile --require-hashes -r requirements/build.txt",
    ]
    # the project itself: nothing resolved, nothing downloaded
    assert installs[2:] == ["/opt/venv/bin/pip install --no-compile --no-deps --no-build-isolation ."]
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!requirements/serve.txt" in ignore and "!requirements/build.txt" in ignore


def test_final_image_is_ready_for_a_read_only_root_filesystem(final: Stage) -> None:
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert final.all("VOLUME") == ['["/var/lib/signing-proxy"]']
    assert final.all("WORKDIR") == ["/var/lib/signing-proxy"]


def test_final_image_health_check_calls_healthz(final: Stage) -> None:
    (check,) = final.all("HEALTHCHECK")
    assert "CMD" in check
    exec_form = json.loads(check.split("CMD", 1)[1])
    assert exec_form == ["python", "-I", "/usr/local/bin/signing-proxy-healthcheck"]
    assert any(
        c.endswith("deploy/docker/healthcheck.py /usr/local/bin/signing-proxy-healthcheck")
        for c in final.all("COPY")
    )
    assert "/healthz" in HEALTHCHECK.read_text()


def test_entrypoint_is_exec_form_without_unsafe_flags(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    assert argv == [
        "python",
        "-I",
        "-m",
        "proxy",
        "serve",
        "--config",
        "/etc/signing-proxy/config.toml",
    ]
    assert not any(a.startswith("--unsafe") for a in argv)
    assert final.all("EXPOSE") == ["8700"]


def test_build_context_is_allow_listed() -> None:
    lines = [
        ln.strip()
        for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    assert "!proxy/" in lines
    assert not [ln for ln in lines if ln.startswith("!") and ("tests" in ln or ".git" in ln)]


def test_compose_runs_the_image_hardened() -> None:
    svc = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["signing-proxy"]
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["ulimits"]["core"] == 0
    assert svc["user"] == "10001:10001"
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
    assert any(v.endswith(":/etc/signing-proxy:ro") for v in svc["volumes"])
    assert "privileged" not in svc and "cap_add" not in svc


def test_container_config_opens_the_bot_port_on_purpose_only() -> None:
    cfg = proxy_config.load(DOCKER / "config.toml")
    assert cfg.server.allow_non_loopback is True
    check_listen_address(str(cfg.server.listen), cfg.server.allow_non_loopback)
    check_listen_address(str(cfg.server.admin_listen), allow_non_loopback=False)
    assert str(cfg.vault.secret_id_file).startswith("/etc/signing-proxy/")


# --- the health check script itself ----------------------------------------------------------


class _Admin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response({"/healthz": 200, "/readyz": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def admin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Admin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(base: str, *args: str) -> int:
    env = {**os.environ, "SIGNING_PROXY_ADMIN": base}
    return subprocess.run(
        [sys.executable, "-I", str(HEALTHCHECK), *args],
        env=env,
        capture_output=True,
        timeout=10,
        check=False,
    ).returncode


def test_healthcheck_passes_on_healthz_200(admin: str) -> None:
    assert _healthcheck(admin) == 0


def test_healthcheck_ready_fails_on_readyz_503(admin: str) -> None:
    assert _healthcheck(admin, "--ready") == 1


def test_healthcheck_fails_when_nothing_listens(admin: str) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _healthcheck(f"http://127.0.0.1:{port}") == 1
    assert _healthcheck("file:///etc/passwd") == 2
