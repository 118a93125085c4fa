"""Start-up hardening for the serving process: what the process itself refuses to do or give away.

The proxy holds exchange API secrets in memory. Everything here exists to keep them there:

* a core dump, or another process of the same user attaching with ``ptrace`` or reading
  ``/proc/<pid>/mem``, would copy the secrets out: :func:`harden_process` makes the process
  non-dumpable and sets the core size limit to zero, soft and hard;
* files the proxy creates (state, audit) should be private by default: it also sets umask 077;
* running as root turns any bug into a host compromise: :func:`refuse_root`;
* a configuration or credential file that other users can read leaks the credentials that
  unlock the secrets (the Vault AppRole secret id, a Vault token), and one that others can
  write lets them change policy: :func:`check_private_file`;
* the bot listener should not be reachable from the network by accident:
  :func:`check_listen_address`.

These are plain functions with no global state of their own so that ``serve`` can call them in
order, and tests can call them one at a time. Every refusal is a :class:`~proxy.errors.ConfigError`
(exit code 3) whose message says what to do.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import resource
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from proxy.errors import ConfigError

__all__ = [
    "PR_GET_DUMPABLE",
    "PR_SET_DUMPABLE",
    "check_config_files",
    "check_listen_address",
    "check_private_file",
    "harden_process",
    "is_dumpable",
    "refuse_root",
]

# <linux/prctl.h>
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4

# Where refusals that are about the process rather than a file are reported.
_PROCESS = "start-up"


def _libc() -> ctypes.CDLL:
    """The C library of this process; ``use_errno`` so a failed ``prctl`` says why."""
    return ctypes.CDLL(None, use_errno=True)


def harden_process() -> None:
    """Make this process give nothing away: no core dumps, not dumpable, private files.

    * ``RLIMIT_CORE`` 0 (soft and hard, so nothing in the process can raise it again): a crash
      must not write the secrets in memory to disk.
    * ``prctl(PR_SET_DUMPABLE, 0)`` on Linux: besides stopping core dumps even where a
      ``core_pattern`` pipe ignores the rlimit, it makes ``/proc/<pid>/mem``, ``environ`` and
      ``ptrace`` unavailable to other processes of the same user, so a compromised process
      sharing the user cannot read the secrets.
    * umask 077: state databases, audit files and anything else the proxy creates are readable
      by its own user only, whatever umask the process was started with.

    Raises :class:`ConfigError` when a step fails: a proxy that cannot protect its memory
    should not start (fail closed).
    """
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            _PROCESS,
            f"cannot set the core dump size limit to 0 ({exc}); "
            "start the proxy with LimitCORE=0 (systemd) or `ulimit -c 0`",
        ) from None
    if sys.platform.startswith("linux"):
        libc = _libc()
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise ConfigError(
                _PROCESS,
                f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}; "
                "the proxy will not run with its memory readable by other processes",
            )
    os.umask(0o077)


def is_dumpable() -> bool | None:
    """Whether this process is dumpable (Linux), or ``None`` where that cannot be asked.

    Used by tests and by the start-up log line; ``False`` after :func:`harden_process`.
    """
    if not sys.platform.startswith("linux"):
        return None
    value = int(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    if value < 0:
        return None
    return value != 0


def refuse_root(allow: bool) -> None:
    """Refuse to run as root (real or effective uid 0) unless explicitly allowed.

    The proxy needs no privilege at all: it listens on unprivileged ports, reads its own files
    and talks to Vault, Redis and exchanges. Run as root, any remote-code bug in it or in a
    dependency becomes control of the host. ``allow`` is the ``--unsafe-allow-root`` flag: for
    throw-away containers and demos where the operator accepts that.
    """
    if allow:
        return
    uids = {os.getuid(), os.geteuid()}
    if 0 in uids:
        raise ConfigError(
            _PROCESS,
            "refusing to run as root: run the proxy as a dedicated unprivileged user "
            "(see deploy/), or pass --unsafe-allow-root if you accept that a bug in the proxy "
            "then gives away this host",
        )


def check_private_file(path: str | os.PathLike[str]) -> None:
    """Refuse a configuration or credential file (or folder) that other users can read or write.

    The configuration names the Vault credential files (AppRole role and secret id, or a
    token); whoever can read them can read every exchange secret the proxy can. Policies decide
    what bots may do; whoever can write them can widen that. So the file must have no group or
    other permission bits for reading or writing (``chmod 600``; ``chmod 700`` for a folder).
    Symbolic links are followed: it is the file actually read that matters.

    Raises :class:`ConfigError` ``(file, problem)``.
    """
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        raise ConfigError(name, f"cannot be read: {exc.strerror or exc}") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    fix = f"run chmod {'700' if is_dir else '600'} {name}"
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ConfigError(name, f"readable by group or others; {fix}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(name, f"writable by group or others; {fix}")


def check_config_files(config_path: Path, credential_files: Iterable[Path | None]) -> None:
    """The one file-mode rule, applied by every command that reads a configuration (README
    "Configuration"): the configuration file, and each Vault credential file it names that
    exists, must be private (:func:`check_private_file`). A credential file that does not exist
    is left to the command that needs it (Vault login says so), so a command that never talks
    to Vault, such as ``policy check``, works on a host without the credentials."""
    check_private_file(config_path)
    for path in credential_files:
        if path is not None and os.path.lexists(path):
            check_private_file(path)


def _split_host_port(addr: str) -> tuple[str, str]:
    """``host:port``, ``[v6]:port`` or ``v6:port`` into its parts, or ``ValueError``."""
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(addr)
        return host, rest[1:]
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(addr)
    if ":" in host:
        # An unbracketed IPv6 literal ("::1:8700", as ``config.Listen`` prints it): the port
        # is the part after the last colon, and what precedes it must be a whole address.
        ipaddress.IPv6Address(host)
    return host, port


def _is_loopback_host(host: str) -> bool:
    """True only for names and literals that certainly mean this machine's loopback.

    Any other host name counts as not loopback: we do not resolve names here, and a name that
    resolves to a public address must not slip through (fail closed).
    """
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_listen_address(
    addr: str,
    allow_non_loopback: bool,
    *,
    setting: str = "server.listen",
    config_file: str = "configuration",
) -> tuple[str, int]:
    """Parse a listen address and refuse a non-loopback one unless explicitly allowed.

    Bots and operators reach the proxy on the same host by default; exposing the listener to
    the network (``0.0.0.0``, a LAN address, a host name) is an explicit decision
    (``allow_non_loopback``), because then every host that can reach the port can try tokens
    against it. Returns ``(host, port)`` for the caller to bind.
    """
    try:
        host, port_text = _split_host_port(addr)
        if not port_text.isdigit():
            raise ValueError(addr)
        port = int(port_text)
        if port > 65535:
            raise ValueError(addr)
    except ValueError:
        raise ConfigError(
            config_file,
            f"{setting} = {addr!r} is not HOST:PORT (for example 127.0.0.1:8700 or [::1]:8700)",
        ) from None
    if not allow_non_loopback and not _is_loopback_host(host):
        raise ConfigError(
            config_file,
            f"{setting} = {addr!r} is not a loopback address, so other hosts could connect; "
            "use 127.0.0.1, or set server.allow_non_loopback = true and firewall the port",
        )
    return host, port
