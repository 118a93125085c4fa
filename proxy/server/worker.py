"""One worker process: loads secrets from Vault, serves bots and operators, follows changes.

Start-up never blocks on Vault: both listeners come up at once, answering 503 ``not_ready``
until configuration, policies and every account's secret are loaded (retrying with backoff).
A background loop then watches each account's KV version and the revocation list, swapping in
new credentials atomically: a request in flight keeps the credentials it started with. The
same loop renews the Vault token and, when Vault is unreachable, serves from memory for the
grace period only (proxy/keys/session.py); a deleted secret stops its account alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from proxy.audit.writer import AuditWriter
from proxy.config import Config
from proxy.errors import ProxyError, SecretMissing, SecretSourceError, VaultUnreachable
from proxy.exchanges.base import Credentials
from proxy.guards.clock import ExchangeClock, targets_for
from proxy.guards.hooks import ExchangeSafety, observe_store
from proxy.guards.key_fallback import KeyFallbacks
from proxy.guards.key_vetting import KeyVetting, warn_unsafe_accounts
from proxy.guards.rate_limits import MemoryLimiter, WindowLimiter, open_limiter
from proxy.guards.unauthenticated import UnauthenticatedRefusals
from proxy.keys import audit_signing, proxy_keys
from proxy.keys.audit_witness import VaultWitness
from proxy.keys.pool import KeyPool
from proxy.keys.proxy_keys import AUDIT_CHAIN, read_revocations
from proxy.keys.session import TokenKeeper, VaultHealth
from proxy.keys.transit import signer as transit
from proxy.keys.vault import SecretMeta, VaultSecretSource
from proxy.ops.admin import create_admin_app
from proxy.ops.metrics import Metrics
from proxy.ops.readiness import accounts_detail, signing
from proxy.ops.review_page import AuditReview
from proxy.ops.run_dir import RunDir
from proxy.ops.status import ProxyStatus
from proxy.pipeline import accounts as accounts_mod
from proxy.pipeline.accounts import Account
from proxy.pipeline.app import Pipeline
from proxy.pipeline.auth import TokenVerifier
from proxy.policy.model import PolicySet
from proxy.policy.reload import PolicyReloader, load_current
from proxy.server.listeners import listener
from proxy.server.switch import NotYet, Switch
from proxy.state import StateStore
from proxy.state.batches import group_commit
from proxy.state.group_commit import GroupCommit
from proxy.upstream import Upstream

log = logging.getLogger("proxy.server.worker")

REFRESH_S = 2.0


class Worker:
    def __init__(self, cfg: Config, policies: PolicySet | None = None, store: StateStore | None = None,
                 run_dir: RunDir | None = None) -> None:
        """``policies`` None (how ``serve`` starts every worker): the policy files as they are now."""
        self.cfg = cfg
        if policies is None:
            policies = load_current(cfg.policies_dir, {a.name for a in cfg.accounts})
        self.policies = policies
        self.store = store
        self.metrics = Metrics()
        self.accounts: dict[str, Account] = {a.name: accounts_mod.build(a) for a in cfg.accounts}
        self.source = VaultSecretSource(cfg.vault)
        self.token_keeper = TokenKeeper(self.source)
        self.health = VaultHealth(cfg.vault.grace_period_s)
        self.was_ready = False
        #: Vault Transit signs for accounts with signing = "transit" (README "Transit mode")
        self.transit = transit.TransitClient(
            cfg.vault.addr, self.source.token, mount=cfg.vault.transit_mount,
            timeout_s=cfg.vault.timeout_s, ca_file=cfg.vault.ca_file,
        ) if any(a.signing == "transit" for a in cfg.accounts) or cfg.checkpoints.signing == "transit" \
            else None
        self.upstream = Upstream(cfg.server.upstream_timeout_s)
        # exchange-side safety: store errors counted, shared rate limits, key-permission checks
        self.raw_store = store  # the group commit counts its own errors
        self.store = observe_store(store, self.metrics)
        self.limiter: WindowLimiter = MemoryLimiter() if store is None else open_limiter(
            cfg.state.backend, path=cfg.state.path, url=cfg.state.url)
        self.exchange_clock = ExchangeClock(self.upstream, targets_for({
            a.name: (a.cfg.base_url, a.exchange, a.cfg.exchange_clock) for a in self.accounts.values()
        }), self.metrics)
        self.vetting = KeyVetting(self.upstream, offset_ms=self.exchange_clock.offset_ms)
        self.safety = ExchangeSafety(store=self.store, metrics=self.metrics, limiter=self.limiter,
                                     vetting=self.vetting)
        self.safety.know_accounts((a.name, a.cfg.exchange, a.cfg.base_url) for a in self.accounts.values())
        self.exchange_clock.guard = self.vetting.guard = self.safety  # cool-downs apply to them too
        self.fallbacks = KeyFallbacks(cfg.keys.previous_key_grace_s)
        self.vetting.on_refused = self.fallbacks.refused_by_name(self.accounts)
        warn_unsafe_accounts(cfg.accounts)
        self.switch = Switch()
        self.pipeline: Pipeline | None = None
        self.commit: GroupCommit | None = None
        self.audit: AuditWriter | None = None
        self.vault_witness: VaultWitness | None = None
        self.audit_review: AuditReview | None = None
        self.reasons: list[str] = ["starting"]
        self._stop = asyncio.Event()
        self.reloader = PolicyReloader(
            cfg.policies_dir, {a.name for a in cfg.accounts}, policies, self._swap_policies, self.metrics,
        )
        self._clock_task: asyncio.Task[None] | None = None
        self.unauthenticated: UnauthenticatedRefusals | None = None
        self._unauth_task: asyncio.Task[None] | None = None
        self._verify_keys: proxy_keys.VerifyKeys | None = None  # the token-verify version in force
        # /readyz and /metrics for every worker of a `serve --workers N` (run_dir: shared files)
        self.status = ProxyStatus(self.metrics, self.readiness, self.details, run_dir)

    def _refused(self, listener: str) -> Callable[[str], None]:
        """Connections refused before authentication, counted on /metrics by cause."""
        def count(reason: str) -> None:
            self.metrics.inc("proxy_connections_refused_total", (("listener", listener), ("reason", reason)),
                             help="connections refused or closed by a pre-authentication limit")
        return count

    def _swap_policies(self, policies: PolicySet) -> None:
        """Hot reload: one assignment each, so every request sees one whole set. The status is
        published at once: /readyz must never show a worker's earlier version (up to a second
        old) as the one it enforces, or an operator waiting for a reload would stop waiting
        too soon (and a worker going back to an earlier set would look like it never left)."""
        self.policies = policies
        if self.pipeline is not None:
            self.pipeline.policies = policies
        self.status.publish()

    def readiness(self) -> list[str]:
        reasons = list(self.reasons)
        if not self.was_ready:  # once ready, one stopped account must not take the others down
            reasons += self._account_problems()
        return reasons

    def _account_problems(self) -> list[str]:
        problems = [f"account {a.name}: {a.error or 'secret not loaded'}"
                    for a in self.accounts.values() if a.creds is None]
        problems += [f"account {a.name}: {why}"
                     for a in self.accounts.values() if a.pool is not None for why in a.pool.missing()]
        return problems

    def details(self) -> dict[str, object]:
        """/readyz facts beyond ready or not: Vault's state, accounts that stopped or were
        refused, and the exchange clocks."""
        extra = dict(self.reloader.detail())
        state = self.health.state()
        if not state.up:
            extra["vault"] = {"up": False, "down_for_s": round(state.down_for_s),
                              "grace_left_s": round(state.grace_left_s), "error": state.last_error}
        if self.was_ready and (problems := self._account_problems()):
            extra["accounts_stopped"] = problems
        if refused := self.vetting.refused():  # keys that can withdraw: refused, others serve
            extra["accounts_refused"] = refused
        extra["exchange_clock"] = self.exchange_clock.detail()
        if self.audit is not None and self.audit.checkpoint_error:  # logged; trading goes on
            extra["audit_checkpoints"] = self.audit.checkpoint_error
        if self.vault_witness is not None and self.vault_witness.error:
            extra["audit_vault_witness"] = self.vault_witness.error
        if fallbacks := self.fallbacks.detail():
            extra["keys_fallback"] = fallbacks
        if (audit := self.audit_headroom()) is not None:
            extra["audit"] = audit
        extra["accounts"] = accounts_detail(signing(self.accounts.values(), self.vetting, self.safety),
                                            time.time())
        return extra

    def audit_headroom(self) -> dict[str, object] | None:
        """Free space on the audit disk against its reserve (/readyz "audit", and a gauge)."""
        return None if self.audit is None else self.audit.headroom(self.metrics)

    async def run(self, bot_sock: socket.socket, admin_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.request)
        limits = self.cfg.server.limits.values()
        graceful_s = max(1, round(self.cfg.server.stop_timeout_s / 2))  # requests in flight finish
        bot = listener(self.switch, limits, graceful_s, self._refused("bot"))
        admin = listener(
            create_admin_app(self.readiness, self.metrics, details=self.details,
                             audit_review=lambda: self.audit_review, status=self.status),
            limits, graceful_s, self._refused("admin"),
        )
        tasks = [
            asyncio.create_task(bot.serve(sockets=[bot_sock])),
            asyncio.create_task(admin.serve(sockets=[admin_sock])),
            asyncio.create_task(self._load_and_follow()),
            asyncio.create_task(self.reloader.run()),
            asyncio.create_task(self.status.run()),
        ]
        await self._stop.wait()
        if callable(signal.getsignal(signal.SIGALRM)):  # serve's handler: a stop that hangs is ended
            signal.alarm(max(1, round(self.cfg.server.stop_timeout_s)))
        bot.should_exit = admin.should_exit = True
        tasks[2].cancel()
        tasks[3].cancel()
        tasks[4].cancel()
        if self._clock_task is not None:
            self._clock_task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.upstream.close()
        if self.pipeline is not None:
            await self.pipeline.drain()
        if self._unauth_task is not None:
            self._unauth_task.cancel()
        if self.unauthenticated is not None:
            await self.unauthenticated.flush()  # the last interval's counts
        if self.audit is not None:
            await self.audit.close()
        if self.vault_witness is not None:
            await asyncio.to_thread(self.vault_witness.close)
        await self.limiter.close()
        self.status.publish()  # the last counts, for the supervisor to fold into the totals
        signal.alarm(0)

    def stop(self) -> None:
        self._stop.set()

    async def _load_and_follow(self) -> None:
        delay = 0.25
        while self.pipeline is None:
            try:
                await self._load()
            except Exception as exc:  # never let the loader die: not ready, retry
                if not isinstance(exc, SecretSourceError | ProxyError | OSError):
                    exc = SecretSourceError(f"unexpected {type(exc).__name__} while loading")
                self.reasons = [f"vault: {exc}"]
                self._vault_failed(str(exc))
                log.warning("not ready: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._vault_ok()
        while True:
            await asyncio.sleep(REFRESH_S)
            self.audit_headroom()  # keeps the gauge current between /readyz calls
            await self._follow_once()
            await self.vetting.vet_all(self.accounts.values())

    async def _follow_once(self) -> None:
        """One round: keep the token alive, pick up new versions; on failure count the grace."""
        try:
            await asyncio.to_thread(self._maintain_and_refresh)
        except Exception as exc:  # anything (an odd Vault answer too) counts against the grace
            if not isinstance(exc, SecretSourceError | ProxyError):
                exc = SecretSourceError(f"unexpected {type(exc).__name__} while refreshing from Vault")
            self._vault_failed(str(exc))
            state = self.health.state()
            log.warning("refresh from Vault failed: %s; serving from memory (%.0f s of grace left)",
                        exc, state.grace_left_s)
            if not isinstance(exc, VaultUnreachable):
                # An expired or revoked Vault token looks like "denied": log in again (AppRole
                # gets a fresh token; a static token is re-read from its file).
                with contextlib.suppress(SecretSourceError):
                    await asyncio.to_thread(self.token_keeper.login)
            if state.expired:
                self.reasons = [state.reason(self.health.grace_period_s)]
            if state.expired and self.switch.target is self.pipeline:
                log.error("%s", self.reasons[0])
                self.switch.target = NotYet("secrets are unavailable: Vault has been unreachable "
                                             "for longer than the grace period; retry later")
            return
        self._vault_ok()
        if self.switch.target is not self.pipeline and self.pipeline is not None:
            log.info("Vault answers again: serving")
            self.reasons = []
            self.switch.target = self.pipeline

    def _vault_failed(self, error: str) -> None:
        self.health.failed(error)
        self.metrics.inc("proxy_vault_errors_total", help="failed Vault logins, renewals and reads")
        self.metrics.set("proxy_vault_up", (), 0, help="1 when the last Vault round trip worked")

    def _vault_ok(self) -> None:
        self.health.ok()
        if not self.reasons and not self._account_problems():
            self.was_ready = True
        self.metrics.set("proxy_vault_up", (), 1, help="1 when the last Vault round trip worked")

    def _maintain_and_refresh(self) -> None:
        action = self.token_keeper.maintain()
        if action != "none":
            log.info("Vault token: %s", "renewed" if action == "renew" else "logged in again")
            self.metrics.inc("proxy_vault_token_renewals_total", (("action", action),),
                             help="Vault token renewals and fresh logins")
        self._refresh()

    async def _load(self) -> None:
        await asyncio.to_thread(self.token_keeper.login)
        vault = self.cfg.vault
        verify = await asyncio.to_thread(proxy_keys.read_verify_keys, self.source, vault)
        chain = await asyncio.to_thread(self.source.read, vault.own(AUDIT_CHAIN))
        chain_key = chain.fields.get("key")
        if chain_key is None:
            raise SecretSourceError("the proxy's own keys are incomplete; run `python -m proxy init`")
        revoked = await asyncio.to_thread(read_revocations, self.source, vault)
        verifier = TokenVerifier(
            verify.public_pem, issuer=self.cfg.tokens.issuer, audience=self.cfg.tokens.audience,
            revoked_before=revoked, previous_pem=verify.previous_pem, previous_until=verify.previous_until,
        )
        self._verify_keys = verify
        for account in self.accounts.values():
            await asyncio.to_thread(self._load_account, account)
        if self.audit is None:  # kept only once started, so a failed start is retried
            writer_id = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
            policy, self.vault_witness = await asyncio.to_thread(
                audit_signing.checkpoint_policy, self.source, self.cfg, self.transit)
            audit = AuditWriter(self.cfg.audit_dir, chain_key, writer_id, checkpoints=policy,
                                reserve_bytes=self.cfg.audit_reserve_bytes)
            await audit.start()
            self.audit = audit
            self.unauthenticated = UnauthenticatedRefusals(audit.write, metrics=self.metrics)
            self._unauth_task = asyncio.create_task(self.unauthenticated.run())
            self.audit_review = AuditReview(self.cfg.audit_dir, chain_key)
        await self.upstream.start()
        if self._clock_task is None:  # measure exchange clocks before serving (bounded wait)
            self._clock_task = asyncio.create_task(self.exchange_clock.run())
            await self.exchange_clock.wait_first_round()
        await self.vetting.vet_all(self.accounts.values())  # signed with the exchange clocks
        # the worker's one durability owner, made once (a rebuilt pipeline keeps it)
        self.commit = self.commit or group_commit(self.raw_store, self.limiter, self.audit,
                                                  self.safety.store_error)
        self.pipeline = Pipeline(
            accounts=self.accounts, policies=self.policies, verifier=verifier,
            upstream=self.upstream, audit=self.audit, metrics=self.metrics,
            max_body_bytes=self.cfg.server.max_body_bytes, store=self.store,
            idempotency_ttl_s=self.cfg.state.idempotency_ttl_s, safety=self.safety,
            upstream_timeout_s=self.cfg.server.upstream_timeout_s, vault_timeout_s=self.cfg.vault.timeout_s,
            commit=self.commit,
        )
        self.pipeline.exchange_clock = self.exchange_clock
        self.pipeline.unauthenticated = self.unauthenticated
        self.pipeline.fallbacks = self.fallbacks
        self.pipeline.ready = True
        self.switch.target = self.pipeline
        self.reasons = []
        log.info("ready: %d accounts, %d clients", len(self.accounts), len(self.policies.clients))

    def _load_account(self, account: Account, version: int | None = None) -> None:
        """Load (or reload) one account's credentials; a failure leaves the old ones in place."""
        if account.pool is not None:  # a key pool: every key; the first is also account.creds
            for index, path in enumerate(account.pool.paths):
                creds, error = self._read_creds(account, path)
                account.pool.set(index, creds, error)
            first = account.pool.first_loaded()
            account.creds, account.error = first or account.creds, "" if first else account.pool.errors[0]
            if first is not None:
                self.metrics.set("proxy_key_version", (("account", account.name),), first.version,
                                 help="KV version of the key in use")
            return
        creds, error = self._read_creds(account, account.cfg.secret, version)
        if creds is not None and account.creds is not None and account.creds.version != creds.version:
            account.previous = account.creds  # the fallback if the exchange refuses the new one
        if creds is None:
            if error != account.error:  # once per distinct problem, not every refresh
                log.error("account %s: %s%s", account.name, error,
                          "; still signing with the version loaded before" if account.creds else "")
            account.error = error
            return
        account.creds, account.error = creds, ""
        self.metrics.set("proxy_key_version", (("account", account.name),), creds.version,
                         help="KV version of the key in use")

    def _read_creds(
        self, account: Account, path: str, version: int | None = None
    ) -> tuple[Credentials | None, str]:
        try:
            secret = self.source.read(path, version)
            if account.cfg.signing == "transit" and self.transit is not None:
                return transit.load_credentials(account.exchange, secret.fields, secret.version,
                                                self.transit, account.cfg.transit_key or account.name), ""
            return account.exchange.load_credentials(secret.fields, secret.version), ""
        except SecretSourceError as exc:
            return None, str(exc)
        except ValueError as exc:
            return None, f"secret {path} is malformed: {exc}"

    def _refresh(self) -> None:
        for account in self.accounts.values():
            if account.pool is not None:
                self._refresh_pool(account, account.pool)
                continue
            try:
                meta = self.source.metadata(account.cfg.secret)
            except SecretMissing as exc:
                self._stop_account(account, f"{exc}; write it with `keys rotate`")
                continue
            if meta.deleted:
                self._stop_account(account, f"version {meta.current_version} of {account.cfg.secret} "
                                            "was deleted or destroyed; write a new one with `keys rotate`")
                continue
            self._key_age(account.name, meta)
            if account.creds is None or account.creds.version != meta.current_version:
                self._load_account(account)
                if account.creds is not None and account.creds.version == meta.current_version:
                    log.info("account %s now signs with key version %d", account.name, meta.current_version)
        if self.pipeline is not None:
            self.pipeline.verifier.set_revocations(read_revocations(self.source, self.cfg.vault))
            self._verify_keys = proxy_keys.follow_verify_keys(  # token rotate-key, live
                self.source, self.cfg.vault, self.pipeline.verifier, self._verify_keys)

    def _stop_account(self, account: Account, reason: str) -> None:
        """The secret is gone in Vault: forget the key, so this account (only) refuses."""
        if account.creds is not None:
            log.error("account %s stopped: %s", account.name, reason)
        account.creds, account.error = None, reason

    def _key_age(self, name: str, meta: SecretMeta) -> None:
        if meta.created is not None:
            self.metrics.set("proxy_key_age_seconds", (("account", name),),
                             max(0.0, time.time() - meta.created.timestamp()),
                             help="age of the key version in use (KV v2 created_time)")

    def _refresh_pool(self, account: Account, pool: KeyPool) -> None:
        """Reload each key of a pool whose Vault version changed (rotation, key by key). A key
        whose secret is gone stops alone, as a single key does: the pool serves with the others."""
        for index, path in enumerate(pool.paths):
            try:
                meta = self.source.metadata(path)
            except SecretMissing as exc:
                self._stop_pool_key(account, pool, index, f"{exc}; write it with `keys rotate`")
                continue
            if meta.deleted:
                self._stop_pool_key(account, pool, index,
                                    f"version {meta.current_version} of {path} was deleted or "
                                    "destroyed; write a new one with `keys rotate`")
                continue
            current = meta.current_version
            held = pool.creds[index]
            if held is None or held.version != current:
                creds, error = self._read_creds(account, path)
                pool.set(index, creds, error)
                if creds is not None and creds.version == current:
                    log.info("account %s key %s now signs with version %d", account.name, path, current)
        first = pool.first_loaded()
        account.creds, account.error = first, "" if first is not None else "; ".join(pool.missing())

    def _stop_pool_key(self, account: Account, pool: KeyPool, index: int, reason: str) -> None:
        if pool.forget(index, reason):
            log.error("account %s key %s stopped: %s", account.name, pool.paths[index], reason)
