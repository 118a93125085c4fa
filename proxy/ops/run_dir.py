"""The private directory one ``serve --workers N`` shares between its workers and supervisor.

Created by the supervisor (``mkdtemp``: mode 0700, under ``$TMPDIR`` or /tmp; private /tmp
under systemd, a tmpfs in the container) and removed when it exits. Every file is replaced
whole (write a temporary file, then ``rename``), so a reader sees an old or a new version,
never half of one:

- ``worker-<pid>.json``: a worker's status, about every second and before it answers
  ``/metrics``: its metrics snapshot, readiness reasons and details (proxy/ops/status.py);
- ``live.json``: the pids the supervisor is running now (written at each spawn and exit);
- ``retired.json``: counters and histograms of workers that exited, summed, and their pids.
  When a worker exits the supervisor folds its last snapshot in here, *then* deletes its file;
  a reader reads the worker files first and ``retired.json`` after, skipping the files of
  retired pids, so a counter is never counted twice nor lost for a moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from proxy.ops.metrics import Snapshot
from proxy.ops.metrics_merge import add, from_json, to_json

_LIVE = "live.json"
_RETIRED = "retired.json"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls) -> RunDir:
        path = Path(tempfile.mkdtemp(prefix="signing-proxy-run-"))
        path.chmod(0o700)
        return cls(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- workers ---------------------------------------------------------------------------

    def write_worker(self, pid: int, doc: Mapping[str, Any]) -> None:
        self._write(f"worker-{pid}.json", doc)

    def read_workers(self) -> dict[int, dict[str, Any]]:
        """Every worker file that can be read now (one deleted meanwhile is skipped)."""
        found: dict[int, dict[str, Any]] = {}
        for path in self.path.glob("worker-*.json"):
            pid = path.stem.removeprefix("worker-")
            doc = self._read(path.name)
            if pid.isdigit() and isinstance(doc, dict):
                found[int(pid)] = doc
        return found

    # -- supervisor ------------------------------------------------------------------------

    def write_live(self, pids: Iterable[int]) -> None:
        self._write(_LIVE, {"pids": sorted(pids)})

    def read_live(self) -> set[int] | None:
        """The supervisor's running pids; None before it has written them."""
        doc = self._read(_LIVE)
        if not isinstance(doc, dict) or not isinstance(doc.get("pids"), list):
            return None
        return {int(p) for p in doc["pids"] if isinstance(p, int)}

    def read_retired(self) -> tuple[frozenset[int], Snapshot]:
        doc = self._read(_RETIRED)
        if not isinstance(doc, dict):
            return frozenset(), Snapshot()
        try:
            return frozenset(int(p) for p in doc.get("pids", [])), from_json(doc.get("metrics", {}))
        except (TypeError, ValueError):
            return frozenset(), Snapshot()

    def retire(self, pid: int) -> None:
        """Fold an exited worker's last snapshot into the retired totals, then drop its file."""
        pids, total = self.read_retired()
        doc = self._read(f"worker-{pid}.json")
        if isinstance(doc, dict):
            with contextlib.suppress(ValueError):
                total = add(total, from_json(doc.get("metrics", {})))
        self._write(_RETIRED, {"pids": sorted(pids | {pid}), "metrics": to_json(total)})
        with contextlib.suppress(FileNotFoundError):
            (self.path / f"worker-{pid}.json").unlink()

    def reuse(self, pid: int) -> None:
        """A new worker got the pid of a retired one: its own file must count again."""
        pids, total = self.read_retired()
        if pid in pids:
            self._write(_RETIRED, {"pids": sorted(pids - {pid}), "metrics": to_json(total)})

    # -- files -----------------------------------------------------------------------------

    def _write(self, name: str, doc: Mapping[str, Any]) -> None:
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(doc, default=str, separators=(",", ":")))
        os.replace(tmp, self.path / name)

    def _read(self, name: str) -> object:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None
