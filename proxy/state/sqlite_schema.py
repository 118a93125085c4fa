"""The sqlite store's tables: nonces, idempotency records, window amounts, flags, and each audit
writer's journal mark and the nonce keys' fingerprints (proxy.state.journal).

Created on first use (``CREATE ... IF NOT EXISTS``); amounts are decimal strings, times are
microseconds.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    key_id TEXT PRIMARY KEY, unit TEXT NOT NULL, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY, content_hash TEXT NOT NULL, state TEXT NOT NULL,
    token TEXT NOT NULL, lease_until_us INTEGER NOT NULL, expires_us INTEGER NOT NULL,
    status INTEGER, headers TEXT, body BLOB);
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_us);
CREATE TABLE IF NOT EXISTS windows (
    key TEXT NOT NULL, ts_us INTEGER NOT NULL, amount TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS windows_key_ts ON windows (key, ts_us);
CREATE TABLE IF NOT EXISTS flags (
    name TEXT PRIMARY KEY, value TEXT NOT NULL, expires_us INTEGER);
CREATE TABLE IF NOT EXISTS journal (
    writer TEXT PRIMARY KEY, seg INTEGER NOT NULL, pos INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nonce_keys (
    fingerprint TEXT PRIMARY KEY, key_id TEXT NOT NULL, unit TEXT NOT NULL) WITHOUT ROWID;
"""
