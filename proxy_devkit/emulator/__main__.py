"""``python -m proxy_devkit.emulator EXCHANGE --port P --api-key K [--skew-ms MS]`` (secret on stdin):
one emulator in its own process, for benchmarks and manual experiments."""

from __future__ import annotations

import argparse
import importlib
import sys

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy_devkit.emulator")
    parser.add_argument("exchange")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--passphrase")
    parser.add_argument("--skew-ms", type=int, default=0,
                        help="run the exchange's clock this far from the host's (window exchanges)")
    args = parser.parse_args()
    fields = {"api_key": args.api_key, "api_secret": sys.stdin.read().strip()}
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
