"""``python -m proxy_devkit.emulator EXCHANGE --port P --api-key K [--skew-ms MS]`` (secret on stdin):
one emulator in its own process, for the README's quickstart, benchmarks and manual experiments."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TextIO

import uvicorn

#: one emulator module each (the emulators never import the proxy's exchange modules)
NAMES = ("binance", "bybit", "okx", "bitget", "bitstamp", "bitfinex", "kraken", "coinbase", "deribit")

DESCRIPTION = """\
A strict emulator of one exchange on 127.0.0.1: it accepts requests signed with one API key,
checks signatures, timestamps and nonces as the exchange does, answers in the exchange's own
formats and keeps a funded in-memory account. For trying the proxy without an exchange.

The key it accepts is given in two parts: the key id with --api-key, and the secret (the
exchange's api_secret: an HMAC secret, or a PEM private key where the exchange takes one) on
standard input, so it never appears in the process list:

    echo "$SECRET" | python -m proxy_devkit.emulator binance --port 9001 --api-key my-key

Store the same api_key and api_secret (and passphrase) in Vault for the proxy's account, and
point the account at the emulator: base_url = "http://127.0.0.1:9001" with
unsafe_custom_base_url = true."""


def read_secret(stdin: TextIO, stderr: TextIO) -> str:
    """The API secret from stdin (never argv, so it stays out of the process list); an empty
    one is allowed but said loudly, since every signed request would then be refused."""
    if stdin.isatty():
        stderr.write("reading the API secret from stdin (type it, then Ctrl-D; or pipe it in)\n")
    secret = stdin.read().strip()
    if not secret:
        stderr.write("warning: no API secret on stdin: every signed request will be refused as "
                     "badly signed; pipe it in: echo \"$SECRET\" | python -m proxy_devkit.emulator ...\n")
    return secret


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m proxy_devkit.emulator", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("exchange", choices=NAMES, help="which exchange to emulate")
    parser.add_argument("--port", type=int, required=True, help="the port to listen on (127.0.0.1)")
    parser.add_argument("--api-key", required=True,
                        help="the key id the emulator accepts; its secret is read from stdin")
    parser.add_argument("--passphrase", help="the key's passphrase (OKX and Bitget only)")
    parser.add_argument("--skew-ms", type=int, default=0,
                        help="run the exchange's clock this far from the host's (window exchanges)")
    args = parser.parse_args()
    fields = {"api_key": args.api_key, "api_secret": read_secret(sys.stdin, sys.stderr)}
    if args.passphrase:
        fields["passphrase"] = args.passphrase
    module = importlib.import_module(f"proxy_devkit.emulator.{args.exchange}")
    state, app = module.create({args.api_key: fields})
    if args.skew_ms:
        if not hasattr(state, "skew_ms"):
            parser.error(f"{args.exchange} has no clock to skew (its nonces are not time-checked)")
        state.skew_ms = args.skew_ms
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="off")


if __name__ == "__main__":
    main()
