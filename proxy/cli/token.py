"""``token issue``, ``token revoke`` and ``token rotate-key``: bot credentials."""

from __future__ import annotations

import argparse
import sys
import time

from proxy import config as config_mod
from proxy.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Subparsers,
    group,
    load_policies,
    parse_duration,
    source,
    with_config,
)


def register(sub: Subparsers) -> None:
    tok = group(sub, "token", "bot tokens")
    ti = with_config(tok.add_parser("issue", help="print a bot token on stdout"))
    ti.add_argument("--client", required=True)
    ti.add_argument("--ttl", type=parse_duration, default=None, help="e.g. 30d (default 30d)")
    tr = with_config(tok.add_parser("revoke", help="refuse every token of a client issued until now"))
    tr.add_argument("--client", required=True)
    tk = with_config(tok.add_parser(
        "rotate-key", help="new token-signing key pair; running proxies verify with it within seconds",
        description="Write a new token key pair to Vault. Serving proxies verify with the new key "
                    "within a few seconds, without a restart; tokens signed with the old key are "
                    "refused from then on, unless --overlap keeps the old key verifying that long. "
                    "Issue new tokens with `token issue` afterwards."))
    tk.add_argument("--overlap", type=_overlap, default=0,
                    help="keep the old key verifying this long, e.g. 10m (default: none)")
    ti.set_defaults(handler=issue)
    tr.set_defaults(handler=revoke)
    tk.set_defaults(handler=rotate_key)


def issue(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.proxy_keys import TOKEN_SIGNING
    from proxy.pipeline import auth as client_auth

    policies = load_policies(cfg)
    if policies.for_client(args.client) is None:
        print(f"error: no policy names client {args.client!r}; add one to {cfg.policies_dir}",
              file=sys.stderr)
        return EXIT_USAGE
    ttl = args.ttl or cfg.tokens.default_ttl_s
    if ttl > cfg.tokens.max_ttl_s:
        print(f"error: --ttl is longer than tokens.max_ttl_s ({cfg.tokens.max_ttl_s}s)", file=sys.stderr)
        return EXIT_USAGE
    pem = source(cfg).read(cfg.vault.own(TOKEN_SIGNING)).fields["private_key"]
    token = client_auth.issue(
        pem.reveal(), client=args.client, now=int(time.time()), ttl_s=ttl,
        issuer=cfg.tokens.issuer, audience=cfg.tokens.audience,
    )
    print(token)
    return EXIT_OK


def revoke(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.proxy_keys import revoke_client

    revoke_client(source(cfg), cfg.vault, args.client, int(time.time()) + 1)
    print(f"revoked every token of {args.client} issued until now; proxies refuse them within "
          "a few seconds. Issue a new token to restore access.", file=sys.stderr)
    return EXIT_OK


def _overlap(text: str) -> int:
    return 0 if text in ("0", "none") else parse_duration(text)


def rotate_key(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.proxy_keys import rotate_token_keys

    keys = rotate_token_keys(source(cfg), cfg.vault, overlap_s=args.overlap, now=int(time.time()))
    overlap = (f"tokens signed with the old key are accepted until {keys.previous_until} (unix time)"
               if keys.previous_pem else "tokens signed with the old key are refused from now on")
    print(f"rotated the token keys (token-verify version {keys.version}): running proxies verify with "
          f"the new key within a few seconds; {overlap}. Issue new tokens with `token issue`.",
          file=sys.stderr)
    return EXIT_OK
