"""A key-holding signing proxy for crypto-exchange APIs.

Bots send unsigned exchange requests; the proxy authenticates the bot, applies its policy,
signs with a key the bot never sees, forwards, and audits every decision.
"""

__version__ = "0.1.0"
