# Vault / OpenBao policy for the SERVING proxy ("signing-proxy").
#
# It may read exactly what it needs to serve bots, and nothing else:
#   - exchange API secrets, and their KV metadata (to notice new versions: key rotation);
#   - the public key that verifies bot tokens (never the private signing key);
#   - the audit-chain key, and the key that signs audit checkpoints (audit.checkpoint_signing
#     = "kv"; in "transit" mode that key stays in Transit and only transit/sign is used);
#   - the revocation list.
# It can write nothing (but add audit checkpoint versions to audit-witness), list nothing, and
# read no other path. In particular it cannot read proxy/token-signing: a compromised proxy host
# cannot mint bot tokens for other proxies.
#
# The KV v2 mount is "secret" here. deploy/vault/bootstrap.sh rewrites the "secret/" prefix
# when you use another mount (KV_MOUNT).
#
# Attach it to the AppRole with token_no_default_policy=true (bootstrap.sh does): the
# "default" policy grants more than the proxy needs (cubbyhole, wrapping, sys/tools...). The
# three token self-management paths the proxy does need are granted below instead.

# Exchange API secrets: fields api_key, api_secret, passphrase.
path "secret/data/exchanges/*" {
  capabilities = ["read"]
}

# Version metadata of exchange secrets, to pick up a rotated key without a restart.
path "secret/metadata/exchanges/*" {
  capabilities = ["read"]
}

# Ed25519 public key (PEM) that verifies bot tokens.
path "secret/data/proxy/token-verify" {
  capabilities = ["read"]
}

# 32-byte key (64 hex chars) that chains audit records.
path "secret/data/proxy/audit-chain" {
  capabilities = ["read"]
}

# Ed25519 private key (PEM) that signs audit checkpoints; no one else reads it: auditors get
# only the public half (proxy/audit-verify).
path "secret/data/proxy/audit-signing" {
  capabilities = ["read"]
}

# audit.witness_vault = true: each writer's newest audit checkpoint, as a new KV version. Create
# and update only: the proxy cannot read, delete or destroy what it witnessed earlier.
path "secret/data/proxy/audit-witness/*" {
  capabilities = ["create", "update"]
}

# client -> unix time before which its tokens are revoked.
path "secret/data/proxy/revocations" {
  capabilities = ["read"]
}

# The proxy's own token: look it up, renew it, give it up on shutdown.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# Transit mode (README "Transit mode"): accounts with signing = "transit" are signed by Vault
# with keys the proxy never holds. The proxy may compute HMACs and signatures with the keys of
# its Transit mount and read their metadata (type, versions, public keys); nothing else: no
# export, no backup, no import, no key configuration (so "exportable" can never be turned on
# from here), no encryption, no listing. Give the proxy a Transit mount of its own
# (bootstrap.sh: TRANSIT_MOUNT), since the wildcard covers every key in it; or replace each
# "*" with the transit_key names of your accounts.
path "transit/hmac/*" {
  capabilities = ["update"]
}

path "transit/sign/*" {
  capabilities = ["update"]
}

path "transit/keys/*" {
  capabilities = ["read"]
}
