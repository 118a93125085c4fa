# Vault / OpenBao policy for AUDITORS ("signing-proxy-auditor"): enough to run
# `python -m proxy audit verify` (and `audit query`, which needs no Vault), nothing more. The KV
# v2 mount is "secret" here; bootstrap.sh rewrites the prefix for another mount.
#
# Auditors get the PUBLIC key that verifies the audit trail's signed checkpoints, and nothing
# else: not the HMAC chain key (audit-chain), which would let whoever verifies also rewrite a
# trail that verifies, and not the checkpoint signing key (audit-signing, or the Transit key).
# `audit verify` then checks every record under a checkpoint, detects cut, rolled-back and
# deleted chains (with the witness), and cannot be used to forge anything (docs/audit.md).

# Ed25519 public key(s), PEM: every version of the checkpoint key (kv or Transit mode).
path "secret/data/proxy/audit-verify" {
  capabilities = ["read"]
}

# The checkpoints the proxies witnessed in Vault (audit.witness_vault = true): public data, read
# to catch a trail cut or rolled back together with the checkpoints beside it.
path "secret/data/proxy/audit-witness/*" {
  capabilities = ["read"]
}

path "secret/metadata/proxy/audit-witness/*" {
  capabilities = ["list"]
}
