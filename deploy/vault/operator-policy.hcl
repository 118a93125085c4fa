# Vault / OpenBao policy for OPERATORS of the signing proxy ("signing-proxy-operator").
#
# Operators put exchange keys in, rotate them, issue and revoke bot tokens, and run
# `python -m proxy init`. They do NOT read exchange secrets back: the data paths of
# exchanges/* are create/update only, so an operator's Vault token cannot be used to copy
# API keys out. (An operator can still replace a key; that is visible in KV metadata and in
# Vault's own audit log, which you should enable.)
#
# Give this policy to people (OIDC, userpass, LDAP...), not to the proxy. The KV v2 mount is
# "secret" here; bootstrap.sh rewrites the prefix for another mount.

# Write new exchange keys and new versions of them (`python -m proxy keys rotate`).
path "secret/data/exchanges/*" {
  capabilities = ["create", "update"]
}

# See which accounts exist, which version is current, when it was written.
path "secret/metadata/exchanges/*" {
  capabilities = ["read", "list"]
}

path "secret/metadata/exchanges" {
  capabilities = ["list"]
}

# Mint bot tokens (`python -m proxy token issue`), create the keys (`python -m proxy init`) and
# rotate them (`python -m proxy token rotate-key`).
path "secret/data/proxy/token-signing" {
  capabilities = ["create", "read", "update"]
}

path "secret/data/proxy/token-verify" {
  capabilities = ["create", "read", "update"]
}

# Created once by `init`; read by `audit verify`.
path "secret/data/proxy/audit-chain" {
  capabilities = ["create", "read"]
}

# The audit checkpoint key: `init` creates it, nobody but the serving proxy reads it back.
path "secret/data/proxy/audit-signing" {
  capabilities = ["create"]
}

# The checkpoints witnessed in Vault, for `audit verify` (audit.witness_vault = true).
path "secret/data/proxy/audit-witness/*" {
  capabilities = ["read"]
}

path "secret/metadata/proxy/audit-witness/*" {
  capabilities = ["list"]
}

# Its public half, for auditors; `init` rewrites it after a Transit key rotation.
path "secret/data/proxy/audit-verify" {
  capabilities = ["create", "read", "update"]
}

# audit.checkpoint_signing = "transit": `init` creates the non-exportable ed25519 key, and
# operators rotate it (then run `init` again to publish the new public key).
path "transit/keys/audit-checkpoint" {
  capabilities = ["create", "update", "read"]
}

path "transit/keys/audit-checkpoint/rotate" {
  capabilities = ["update"]
}

# Revoke bot tokens.
path "secret/data/proxy/revocations" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/proxy/*" {
  capabilities = ["read", "list"]
}

# Transit mode: import exchange keys and new versions of them
# (`python -m proxy keys import-transit`), and let Vault prove the import (verify an HMAC, read
# the public key). Operators can neither sign with these keys nor export, back up or
# reconfigure them (keys/<name>/config is not granted: "exportable" stays off).
path "transit/wrapping_key" {
  capabilities = ["read"]
}

path "transit/keys/*" {
  capabilities = ["read"]
}

path "transit/keys/+/import" {
  capabilities = ["update"]
}

path "transit/keys/+/import_version" {
  capabilities = ["update"]
}

path "transit/verify/*" {
  capabilities = ["update"]
}
