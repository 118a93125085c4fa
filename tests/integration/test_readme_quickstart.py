"""The README's operator quickstart, run as written: every ``sh`` block between its markers,
in order, in one bash shell, in a fresh folder. So the quickstart cannot drift from the code.

Three things differ from a reader's run, and only these: the ``pip install`` line is skipped
(the package under test is already importable), the fixed ports are swapped for free ones (the
suite runs in parallel), and as root ``serve`` gets ``--unsafe-allow-root``, as the text says.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from proxy_devkit.dev_vault import bao_binary
from proxy_devkit.emulator.server import free_port
from tests.support.stack import REPO

START, END = "<!-- quickstart -->", "<!-- /quickstart -->"


def quickstart_script() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split(START, 1)[1].split(END, 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 10, "the quickstart lost its steps"
    return "\n".join(blocks)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the quickstart waits with curl")
def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    script = quickstart_script()
    for step in ("bao server -dev", "bao kv put", "python3 -m proxy_devkit.emulator binance",
                 "python3 -m proxy init", "python3 -m proxy policy check", "python3 -m proxy token issue",
                 "python3 -m proxy serve", "create_order", "cancel_order"):
        assert step in script, step
    script = "\n".join(line for line in script.splitlines() if not line.startswith("python3 -m pip install"))
    ports = ("8200", "9001", "8700", "8701")
    for n, port in enumerate(ports):
        script = script.replace(port, f"@PORT{n}@")
    for n in range(len(ports)):
        script = script.replace(f"@PORT{n}@", str(free_port()))
    if os.geteuid() == 0:
        script = script.replace("python3 -m proxy serve --config proxy.toml",
                                "python3 -m proxy serve --config proxy.toml --unsafe-allow-root")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(bao_binary()).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "quickstart.log"  # a file, not a pipe: background servers keep it open
    with log.open("w") as sink:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=100)
        except subprocess.TimeoutExpired:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever a failed step left running
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"^balance: BTC 2(\.0)?$", out, re.M), out[-2000:]
    assert re.search(r"^placed \S+ open$", out, re.M), out[-2000:]
    assert "cancelled canceled" in out, out[-2000:]
    assert "quickstart-bot" in out  # the audit table
