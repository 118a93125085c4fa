"""Strict exchange emulators: real HTTP servers on loopback for tests, the demo and bench.

Each ``proxy_devkit/emulator/<exchange>.py`` exposes ``create_app(state) -> Starlette`` and a state
class; :mod:`proxy_devkit.emulator.server` runs any of them in a background thread. An emulator checks
keys, signatures over the exact bytes received, and the exchange's own time and nonce rules,
answers in the exchange's own error shapes, and records every request it receives so a test
can prove what never arrived. It imports nothing from the proxy's signing code: it is an
independent implementation of each exchange's documented rules.
"""
