# Vault / OpenBao policy for AUDITORS ("signing-proxy-auditor"): enough to run
# `python -m proxy audit verify` and `audit query`, nothing more. The KV v2 mount is "secret"
# here; bootstrap.sh rewrites the prefix for another mount.

path "secret/data/proxy/audit-chain" {
  capabilities = ["read"]
}
