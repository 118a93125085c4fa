"""``serve``: bind both listeners once, then run one worker in-process or supervise N forks.

Sockets are bound by the parent before forking so every worker accepts on the same ports; a
worker that dies is replaced; SIGTERM/SIGINT stop them all; SIGHUP is passed on. The
supervisor also keeps the run directory (proxy/ops/run_dir.py) through which any worker answers
/metrics and /readyz for all of them: it records the live pids and folds the counters of a
worker that exited into the retired totals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import orjson

from proxy.config import Config
from proxy.ops.run_dir import RunDir
from proxy.server.worker import Worker, bind
from proxy.state import open_store

log = logging.getLogger("proxy.server.supervisor")


def _run_worker(cfg: Config, bot_fd: int, admin_fd: int, run_dir: RunDir | None = None) -> None:
    """One worker; it loads the policy files itself, as they are when it starts (a respawned
    worker never revives the set the supervisor validated at start-up)."""
    import socket

    bot = socket.socket(fileno=bot_fd)
    admin = socket.socket(fileno=admin_fd)

    async def main() -> None:
        store = open_store(cfg.state.backend, path=cfg.state.path, url=cfg.state.url,
                           sqlite_synchronous="FULL" if cfg.state.synchronous == "full" else "NORMAL")
        worker = Worker(cfg, store=store, run_dir=run_dir)
        try:
            await worker.run(bot, admin)
        finally:
            await store.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())


def serve(cfg: Config, workers: int) -> int:
    """``cfg``'s policies were validated by the caller (invalid ones stop start-up, exit 3);
    every worker loads them afresh."""
    bot = bind(cfg.server.listen.host, cfg.server.listen.port)
    admin = bind(cfg.server.admin_listen.host, cfg.server.admin_listen.port)
    log.info("serving bots on %s, operators on %s, %d worker(s)", cfg.server.listen,
             cfg.server.admin_listen, workers)
    if workers <= 1:
        _run_worker(cfg, bot.fileno(), admin.fileno())
        return 0
    run_dir = RunDir.create()
    try:
        return _supervise(cfg, workers, bot.fileno(), admin.fileno(), run_dir)
    finally:
        run_dir.remove()


def _supervise(cfg: Config, n: int, bot_fd: int, admin_fd: int, run_dir: RunDir) -> int:
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _run_worker(cfg, bot_fd, admin_fd, run_dir)
            except BaseException as exc:  # say why (type and message; never a traceback of values)
                log.error("worker %d failed: %s: %s", os.getpid(), type(exc).__name__, exc)
                status = 1
            finally:
                os._exit(status)
        children[pid] = slot
        _bookkeep(run_dir.reuse, pid)
        _bookkeep(run_dir.write_live, children)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with _quiet():
                os.kill(pid, signal.SIGTERM)

    def on_hup(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):
            with _quiet():
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    for slot in range(n):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        slot = children.pop(pid)
        _bookkeep(run_dir.retire, pid)
        if stopping:
            _bookkeep(run_dir.write_live, children)
            continue
        # the live list changes once, dead pid out and its replacement in (spawn writes it), so
        # /readyz never sees a moment with fewer workers that all look ready
        log.error("worker %d exited (status %d); starting a new one", pid, status)
        time.sleep(0.2)
        spawn(slot)
    return 0


def _bookkeep(action: Callable[[Any], None], arg: Any) -> None:
    """Run-directory upkeep must never take the supervisor down (e.g. a full /tmp)."""
    try:
        action(arg)
    except OSError as exc:
        log.error("run directory: %s failed: %s", getattr(action, "__name__", "update"), exc)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


class JsonLines(logging.Formatter):
    """One JSON object per line, encoded once (orjson). A structured line passes its fields as
    ``log.info("decision", extra={"fields": {...}})``; they become the line's own keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["msg"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__  # never the traceback's locals
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
