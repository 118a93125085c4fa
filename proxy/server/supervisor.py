"""``serve``: bind both listeners once, then run one worker in-process or supervise N forks.

Sockets are bound by the parent before forking so every worker accepts on the same ports; a
worker that dies is replaced, with a growing delay when workers die young, and after
``MAX_YOUNG_DEATHS`` in a row the supervisor gives up (exit 1) with the reason; SIGTERM/SIGINT
stop them all, and a worker still running ``server.stop_timeout_s`` later is killed; SIGHUP is
passed on. The supervisor also keeps the run directory (proxy/ops/run_dir.py) through which any
worker answers /metrics and /readyz for all of them: it points the workers' metrics at its
``metrics/`` directory before forking, records the live pids, and retires a worker that exited
(its gauges go; its counters and histograms stay in the sums).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import orjson

from proxy.audit.since import records_since, writer_is_dead
from proxy.config import Config
from proxy.errors import NotReady
from proxy.ops.metrics import share_between_processes
from proxy.ops.run_dir import RunDir
from proxy.server.listeners import bind
from proxy.server.worker import Worker
from proxy.state import journal, open_store

log = logging.getLogger("proxy.server.supervisor")

#: a worker that exits sooner than this after its start died young (could not start, most likely)
YOUNG_S = 30.0
#: young deaths in a row after which the supervisor stops instead of respawning forever
MAX_YOUNG_DEATHS = 5
FIRST_DELAY_S, MAX_DELAY_S = 0.25, 10.0


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

    tune_gc()
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())


#: A worker's requests in flight hold a few thousand objects between them, which the
#: collector's default first threshold (700) takes for growth: it collected dozens of times a
#: second and found nothing, some 4 % of the CPU per order with the full collections' walks.
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Before serving: what start-up made (modules, configuration) is frozen, so no collection
    walks it again (a full one took ~35 ms, a stall for every request in flight), and the first
    generation is collected every ``GC_THRESHOLD`` objects. Cycles are still collected."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)


def serve(cfg: Config, workers: int) -> int:
    """``cfg``'s policies were validated by the caller (invalid ones stop start-up, exit 3);
    every worker loads them afresh."""
    bot = bind(cfg.server.listen.host, cfg.server.listen.port)
    admin = bind(cfg.server.admin_listen.host, cfg.server.admin_listen.port)
    try:
        _replay_journal(cfg)
    except (NotReady, OSError) as exc:
        log.error("the state store could not be checked against the audit trail: %s; stopping "
                  "(exit 1)", exc)
        return 1
    log.info("serving bots on %s, operators on %s, %d worker(s)", cfg.server.listen,
             cfg.server.admin_listen, workers)
    if workers <= 1:
        signal.signal(signal.SIGALRM, _stop_overdue)
        try:
            _run_worker(cfg, bot.fileno(), admin.fileno())
        except Exception as exc:  # say why in one line (type and message; never a traceback)
            log.error("the worker failed: %s: %s; stopping (exit 1)", type(exc).__name__, exc)
            return 1
        return 0
    run_dir = RunDir.create()
    try:
        share_between_processes(run_dir.metrics)  # before the first fork and the first metric
        return _supervise(cfg, workers, bot.fileno(), admin.fileno(), run_dir)
    finally:
        run_dir.remove()


def _replay_journal(cfg: Config) -> None:
    """sqlite: restore the claims and nonce floors a power cut took from the store
    (proxy.state.journal), once, before any worker serves. Writers still running (another
    proxy) are left alone."""
    if cfg.state.backend != "sqlite" or cfg.state.path is None:
        return
    audit_dir = cfg.audit_dir

    def tail(writer: str, seg: int, offset: int) -> Iterator[dict[str, Any]] | None:
        if not audit_dir.is_dir() or not writer_is_dead(audit_dir, writer):
            return None
        return records_since(audit_dir, writer, seg, offset)

    done = journal.replay(cfg.state.path, tail, cfg.state.idempotency_ttl_s)
    if done.restored:
        log.warning("restored %d idempotency claim(s) from the audit trail (lost from the state "
                    "store, e.g. by a power cut): their retries look the orders up first",
                    done.restored)
    if done.nonces:
        log.warning("raised the nonce floor of %d key(s) to the nonces the audit trail names (lost "
                    "from the state store, e.g. by a power cut)", done.nonces)


def _supervise(cfg: Config, n: int, bot_fd: int, admin_fd: int, run_dir: RunDir) -> int:
    children: dict[int, int] = {}
    born: dict[int, float] = {}
    stopping = False
    young_deaths = 0

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGALRM, _stop_overdue)
                _run_worker(cfg, bot_fd, admin_fd, run_dir)
            except BaseException as exc:  # say why (type and message; never a traceback of values)
                log.error("worker %d failed: %s: %s", os.getpid(), type(exc).__name__, exc)
                status = 1
            finally:
                os._exit(status)
        children[pid] = slot
        born[pid] = time.monotonic()
        _bookkeep(run_dir.write_live, children)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            signal.alarm(max(1, round(cfg.server.stop_timeout_s)))  # then on_overdue
        stopping = True
        for pid in list(children):
            with _quiet():
                os.kill(pid, signal.SIGTERM)

    def on_overdue(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):
            log.error("worker %d did not stop within %g s; killing it", pid, cfg.server.stop_timeout_s)
            with _quiet():
                os.kill(pid, signal.SIGKILL)

    def on_hup(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):
            with _quiet():
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGALRM, on_overdue)
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
        young = time.monotonic() - born.pop(pid, 0.0) < YOUNG_S
        young_deaths = young_deaths + 1 if young else 0
        if young_deaths >= MAX_YOUNG_DEATHS:
            log.critical("giving up: %d workers in a row exited within %g s of starting (the last "
                         "with status %d); the errors above say why; fix that and start again",
                         young_deaths, YOUNG_S, os.waitstatus_to_exitcode(status))
            on_stop(signal.SIGTERM, None)
            _bookkeep(run_dir.write_live, children)
            _reap(children, run_dir)
            return 1
        delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** max(0, young_deaths - 1))
        # the live list changes once, dead pid out and its replacement in (spawn writes it), so
        # /readyz never sees a moment with fewer workers that all look ready
        log.error("worker %d exited (status %d); starting a new one in %.2g s", pid,
                  os.waitstatus_to_exitcode(status), delay)
        _sleep_unless(lambda: stopping, delay)
        if stopping:
            _bookkeep(run_dir.write_live, children)
            continue
        spawn(slot)
    return 0


def _reap(children: dict[int, int], run_dir: RunDir) -> None:
    """Wait for the workers already told to stop (killed if overdue: SIGALRM is armed)."""
    while children:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            return
        children.pop(pid, None)
        _bookkeep(run_dir.retire, pid)


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def _stop_overdue(signum: int, frame: FrameType | None) -> None:
    """A single worker's stop took too long: end the process (SIGALRM, armed at SIGTERM)."""
    log.error("the worker did not stop in time; exiting now")
    os._exit(1)


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
    """JSON lines on stderr. A line carries no thread, process name or caller (JsonLines writes
    none), so the logging module is told not to look them up: it halves the cost of the one
    decision line every request writes (the logging docs' "Optimization" section)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
