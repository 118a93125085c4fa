#!/usr/bin/env bash
# Prepare a fresh (or existing) Vault or OpenBao for the signing proxy. Idempotent.
#
#   VAULT_ADDR=https://vault.internal:8200 VAULT_TOKEN=<admin token> deploy/vault/bootstrap.sh
#
# What it does:
#   1. enables a KV v2 mount (KV_MOUNT, default "secret") unless there is one;
#   2. enables the AppRole auth method (APPROLE_MOUNT, default "approle") unless it is there;
#   3. writes three policies: ROLE_NAME (the serving proxy: read-only, see proxy-policy.hcl),
#      ROLE_NAME-operator and ROLE_NAME-auditor;
#   4. creates or updates the AppRole ROLE_NAME (default "signing-proxy") with only the proxy
#      policy (token_no_default_policy), short-lived tokens, optional CIDR binding;
#   5. writes its role_id and a secret_id to OUT_DIR/role-id and OUT_DIR/secret-id (mode 600);
#      an existing secret-id file is kept unless ROTATE_SECRET_ID=1;
#   6. creates whichever of the proxy's own keys are missing, in the layout
#      `python -m proxy init` uses: PROXY_PATH/token-signing (Ed25519 PKCS#8 PEM),
#      token-verify (its public key), audit-chain (64 hex chars), revocations ({}),
#      audit-signing (Ed25519 PKCS#8 PEM: signs audit checkpoints) and audit-verify (its public
#      key, the one thing auditors may read);
#      existing keys are never overwritten;
#   7. prints what to do next.
#
# Secrets never appear on a command line (they travel on stdin) nor on this script's output:
# the role_id and secret_id go only to files with mode 600, generated keys go only to Vault.
#
# Settings (environment):
#   VAULT_ADDR          required
#   VAULT_TOKEN         an admin token (or a token the CLI's token helper already holds)
#   VAULT_CLI           the CLI to use; default: `bao` if installed, else `vault`
#   KV_MOUNT            KV v2 mount (config vault.mount)                 default: secret
#   TRANSIT_MOUNT       Transit mount for signing = "transit" accounts (config
#                       vault.transit_mount); enabled unless there is one; "" = none
#                                                                        default: transit
#   PROXY_PATH          folder of the proxy's own keys (vault.proxy_path) default: proxy
#   APPROLE_MOUNT       AppRole auth mount                               default: approle
#   ROLE_NAME           AppRole role and proxy policy name               default: signing-proxy
#   OUT_DIR             where role-id and secret-id are written          default: ./signing-proxy-credentials
#   TOKEN_TTL           Vault token lifetime for the proxy               default: 1h
#   TOKEN_MAX_TTL       ... and its renewal limit                        default: 24h
#   SECRET_ID_TTL       secret_id lifetime, 0 = until destroyed          default: 0
#   BOUND_CIDRS         comma-separated CIDRs the secret_id and tokens may be used from
#                       (the proxy hosts or pod network); empty = anywhere
#   ROTATE_SECRET_ID    1 = issue a new secret_id; the old one moves to secret-id.previous
#   CREATE_PROXY_KEYS   0 = leave the proxy's own keys to `python -m proxy init`  default: 1

set -euo pipefail
umask 077

die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"

: "${VAULT_ADDR:?set VAULT_ADDR to the Vault or OpenBao address, e.g. https://vault.internal:8200}"
export VAULT_ADDR
KV_MOUNT="${KV_MOUNT:-secret}"
TRANSIT_MOUNT="${TRANSIT_MOUNT-transit}"
PROXY_PATH="${PROXY_PATH:-proxy}"
APPROLE_MOUNT="${APPROLE_MOUNT:-approle}"
ROLE_NAME="${ROLE_NAME:-signing-proxy}"
OUT_DIR="${OUT_DIR:-./signing-proxy-credentials}"
TOKEN_TTL="${TOKEN_TTL:-1h}"
TOKEN_MAX_TTL="${TOKEN_MAX_TTL:-24h}"
SECRET_ID_TTL="${SECRET_ID_TTL:-0}"
BOUND_CIDRS="${BOUND_CIDRS:-}"
ROTATE_SECRET_ID="${ROTATE_SECRET_ID:-0}"
CREATE_PROXY_KEYS="${CREATE_PROXY_KEYS:-1}"

# Names end up in Vault paths and in sed expressions: plain names only.
plain_path='^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$'
for var in KV_MOUNT PROXY_PATH APPROLE_MOUNT ROLE_NAME; do
    [[ "${!var}" =~ $plain_path ]] || die "$var='${!var}' is not a plain path (letters, digits, - _ . /)"
done
[[ "$BOUND_CIDRS" =~ ^[0-9A-Fa-f.:/,]*$ ]] || die "BOUND_CIDRS='$BOUND_CIDRS' is not a comma-separated CIDR list"

# --- the CLI -------------------------------------------------------------------------------
if [[ -n "${VAULT_CLI:-}" ]]; then
    CLI="$VAULT_CLI"
elif command -v bao >/dev/null 2>&1; then
    CLI=bao
elif command -v vault >/dev/null 2>&1; then
    CLI=vault
else
    die "neither \`bao\` nor \`vault\` is installed; install one or set VAULT_CLI"
fi
command -v "$CLI" >/dev/null 2>&1 || die "VAULT_CLI='$CLI' is not an executable"

case "$VAULT_ADDR" in
    https://*|http://127.0.0.1[:/]*|http://127.0.0.1|http://localhost[:/]*|http://localhost|http://\[::1\]*) ;;
    *) printf 'bootstrap: warning: %s is not TLS; use https:// outside a test machine\n' "$VAULT_ADDR" >&2 ;;
esac

"$CLI" token lookup >/dev/null 2>&1 \
    || die "cannot use the Vault token at $VAULT_ADDR: set VAULT_TOKEN to an admin token (or log in with \`$CLI login\`)"

# --- 1. KV v2 mount ------------------------------------------------------------------------
if mount_json="$("$CLI" read -format=json "sys/mounts/$KV_MOUNT" 2>&1)"; then
    grep -q '"type": "kv"' <<<"$mount_json" \
        || die "$KV_MOUNT/ is mounted but is not a KV secrets engine; choose another KV_MOUNT"
    grep -q '"version": "2"' <<<"$mount_json" \
        || die "$KV_MOUNT/ is KV version 1; upgrade it with \`$CLI kv enable-versioning $KV_MOUNT/\` or choose another KV_MOUNT"
    say "KV v2 mount $KV_MOUNT/: already enabled"
elif grep -q 'No secret engine mount' <<<"$mount_json"; then
    "$CLI" secrets enable -path="$KV_MOUNT" -version=2 \
        -description="signing proxy: exchange secrets and the proxy's own keys" kv >/dev/null
    say "KV v2 mount $KV_MOUNT/: enabled"
else
    die "cannot read sys/mounts/$KV_MOUNT (is the token an admin token?)"
fi

# --- 1b. Transit mount (README "Transit mode") ---------------------------------------------
if [[ -n "$TRANSIT_MOUNT" ]]; then
    [[ "$TRANSIT_MOUNT" =~ $plain_path ]] || die "TRANSIT_MOUNT='$TRANSIT_MOUNT' is not a plain path"
    if transit_type="$("$CLI" read -field=type "sys/mounts/$TRANSIT_MOUNT" 2>&1)"; then
        [[ "$transit_type" == transit ]] || die "$TRANSIT_MOUNT/ is mounted but is '$transit_type', not transit; choose another TRANSIT_MOUNT"
        say "Transit mount $TRANSIT_MOUNT/: already enabled"
    elif grep -q 'No secret engine mount' <<<"$transit_type"; then
        "$CLI" secrets enable -path="$TRANSIT_MOUNT" \
            -description="signing proxy: exchange keys held by Vault (signing = transit)" transit >/dev/null
        say "Transit mount $TRANSIT_MOUNT/: enabled"
    else
        die "cannot read sys/mounts/$TRANSIT_MOUNT (is the token an admin token?)"
    fi
fi

# --- 2. AppRole ----------------------------------------------------------------------------
if auth_type="$("$CLI" read -field=type "sys/auth/$APPROLE_MOUNT" 2>&1)"; then
    [[ "$auth_type" == approle ]] || die "auth/$APPROLE_MOUNT/ exists but is '$auth_type', not approle"
    say "AppRole auth at auth/$APPROLE_MOUNT/: already enabled"
elif grep -q 'No auth engine' <<<"$auth_type"; then
    "$CLI" auth enable -path="$APPROLE_MOUNT" approle >/dev/null
    say "AppRole auth at auth/$APPROLE_MOUNT/: enabled"
else
    die "cannot read sys/auth/$APPROLE_MOUNT (is the token an admin token?)"
fi

# --- 3. policies ---------------------------------------------------------------------------
render_policy() {
    # The .hcl files are written for mount "secret" and proxy path "proxy".
    sed -e "s#\"secret/data/proxy/#\"$KV_MOUNT/data/$PROXY_PATH/#" \
        -e "s#\"secret/metadata/proxy/#\"$KV_MOUNT/metadata/$PROXY_PATH/#" \
        -e "s#\"secret/#\"$KV_MOUNT/#" \
        -e "s#\"transit/#\"${TRANSIT_MOUNT:-transit}/#" \
        "$SCRIPT_DIR/$1"
}
render_policy proxy-policy.hcl | "$CLI" policy write "$ROLE_NAME" - >/dev/null
render_policy operator-policy.hcl | "$CLI" policy write "$ROLE_NAME-operator" - >/dev/null
render_policy auditor-policy.hcl | "$CLI" policy write "$ROLE_NAME-auditor" - >/dev/null
say "policies: $ROLE_NAME (proxy), $ROLE_NAME-operator, $ROLE_NAME-auditor: written"

# --- 4. the AppRole role -------------------------------------------------------------------
role_args=(
    "token_policies=$ROLE_NAME"
    "token_no_default_policy=true"
    "token_type=service"
    "token_ttl=$TOKEN_TTL"
    "token_max_ttl=$TOKEN_MAX_TTL"
    "token_num_uses=0"
    "bind_secret_id=true"
    "secret_id_ttl=$SECRET_ID_TTL"
    "secret_id_num_uses=0"
)
if [[ -n "$BOUND_CIDRS" ]]; then
    role_args+=("secret_id_bound_cidrs=$BOUND_CIDRS" "token_bound_cidrs=$BOUND_CIDRS")
fi
"$CLI" write "auth/$APPROLE_MOUNT/role/$ROLE_NAME" "${role_args[@]}" >/dev/null
say "AppRole role auth/$APPROLE_MOUNT/role/$ROLE_NAME: written (policy $ROLE_NAME only)"

# --- 5. role_id and secret_id, to private files only ---------------------------------------
mkdir -p -- "$OUT_DIR"
chmod 700 -- "$OUT_DIR"
OUT_DIR="$(cd -- "$OUT_DIR" && pwd)"
ROLE_ID_FILE="$OUT_DIR/role-id"
SECRET_ID_FILE="$OUT_DIR/secret-id"

tmp="$(mktemp "$OUT_DIR/.role-id.XXXXXX")"
"$CLI" read -field=role_id "auth/$APPROLE_MOUNT/role/$ROLE_NAME/role-id" >"$tmp"
chmod 600 -- "$tmp"
mv -f -- "$tmp" "$ROLE_ID_FILE"

secret_id_note="kept (ROTATE_SECRET_ID=1 issues a new one)"
if [[ ! -s "$SECRET_ID_FILE" || "$ROTATE_SECRET_ID" == 1 ]]; then
    tmp="$(mktemp "$OUT_DIR/.secret-id.XXXXXX")"
    "$CLI" write -f -field=secret_id "auth/$APPROLE_MOUNT/role/$ROLE_NAME/secret-id" >"$tmp"
    chmod 600 -- "$tmp"
    if [[ -s "$SECRET_ID_FILE" ]]; then
        mv -f -- "$SECRET_ID_FILE" "$OUT_DIR/secret-id.previous"
        secret_id_note="new; the old one is in secret-id.previous until you destroy it (step 1)"
    else
        secret_id_note="new"
    fi
    mv -f -- "$tmp" "$SECRET_ID_FILE"
fi
chmod 600 -- "$ROLE_ID_FILE" "$SECRET_ID_FILE"

# --- 6. the proxy's own keys ---------------------------------------------------------------
kv_exists() {
    # 0: there is a secret (any version) at $1; 1: there is none; exits on any other error.
    local out
    if out="$("$CLI" kv metadata get -mount="$KV_MOUNT" "$1" 2>&1)"; then
        return 0
    fi
    grep -q 'No value found' <<<"$out" && return 1
    die "cannot read the metadata of $KV_MOUNT/$1"
}

new_ed25519_pem() {
    if command -v openssl >/dev/null 2>&1 && openssl genpkey -algorithm ed25519 2>/dev/null; then
        return 0
    fi
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1 && "$py" - 2>/dev/null <<'PY'
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ed25519
k = ed25519.Ed25519PrivateKey.generate()
print(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode(), end="")
PY
        then
            return 0
        fi
    done
    die "cannot generate an Ed25519 key: install openssl (1.1.1+) or python3 with cryptography, or set CREATE_PROXY_KEYS=0 and run \`python -m proxy init\`"
}

public_pem_of() {
    # stdin: private PEM; stdout: SubjectPublicKeyInfo PEM.
    local pem py
    pem="$(cat)"
    if command -v openssl >/dev/null 2>&1 \
        && printf '%s\n' "$pem" | openssl pkey -pubout 2>/dev/null; then
        return 0
    fi
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1 && printf '%s\n' "$pem" | "$py" -c '
import sys
from cryptography.hazmat.primitives import serialization as s
k = s.load_pem_private_key(sys.stdin.buffer.read(), password=None)
print(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode(), end="")
' 2>/dev/null; then
            return 0
        fi
    done
    die "cannot derive the Ed25519 public key (openssl or python3 with cryptography needed)"
}

keys_note="left to \`python -m proxy init\` (CREATE_PROXY_KEYS=0)"
if [[ "$CREATE_PROXY_KEYS" == 1 ]]; then
    created=()
    if ! kv_exists "$PROXY_PATH/token-signing" || ! kv_exists "$PROXY_PATH/token-verify"; then
        # Held in shell variables only: printf is a builtin, so the key never reaches an argv.
        private_pem="$(new_ed25519_pem)"
        [[ "$private_pem" == "-----BEGIN PRIVATE KEY-----"* ]] || die "Ed25519 key generation gave no PKCS#8 PEM"
        public_pem="$(printf '%s\n' "$private_pem" | public_pem_of)"
        [[ "$public_pem" == "-----BEGIN PUBLIC KEY-----"* ]] || die "public key derivation failed"
        printf '%s\n' "$private_pem" \
            | "$CLI" kv put -mount="$KV_MOUNT" "$PROXY_PATH/token-signing" private_key=- >/dev/null
        printf '%s\n' "$public_pem" \
            | "$CLI" kv put -mount="$KV_MOUNT" "$PROXY_PATH/token-verify" public_key=- >/dev/null
        unset private_pem public_pem
        created+=(token-signing token-verify)
    fi
    if ! kv_exists "$PROXY_PATH/audit-chain"; then
        audit_key="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
        [[ "$audit_key" =~ ^[0-9a-f]{64}$ ]] || die "could not read 32 random bytes from /dev/urandom"
        printf '%s' "$audit_key" | "$CLI" kv put -mount="$KV_MOUNT" "$PROXY_PATH/audit-chain" key=- >/dev/null
        unset audit_key
        created+=(audit-chain)
    fi
    if ! kv_exists "$PROXY_PATH/audit-signing" || ! kv_exists "$PROXY_PATH/audit-verify"; then
        private_pem="$(new_ed25519_pem)"
        [[ "$private_pem" == "-----BEGIN PRIVATE KEY-----"* ]] || die "Ed25519 key generation gave no PKCS#8 PEM"
        public_pem="$(printf '%s\n' "$private_pem" | public_pem_of)"
        [[ "$public_pem" == "-----BEGIN PUBLIC KEY-----"* ]] || die "public key derivation failed"
        printf '%s\n' "$private_pem" \
            | "$CLI" kv put -mount="$KV_MOUNT" "$PROXY_PATH/audit-signing" private_key=- >/dev/null
        printf '%s\n' "$public_pem" \
            | "$CLI" kv put -mount="$KV_MOUNT" "$PROXY_PATH/audit-verify" public_key=- >/dev/null
        unset private_pem public_pem
        created+=(audit-signing audit-verify)
    fi
    if ! kv_exists "$PROXY_PATH/revocations"; then
        printf '%s' '{}' | "$CLI" kv put -mount="$KV_MOUNT" "$PROXY_PATH/revocations" clients=- >/dev/null
        created+=(revocations)
    fi
    if ((${#created[@]})); then
        keys_note="created: ${created[*]}"
    else
        keys_note="all already there (left unchanged)"
    fi
fi

# --- 7. what next --------------------------------------------------------------------------
cat <<EOF

Done: $VAULT_ADDR is ready for the signing proxy.

  KV v2 mount         $KV_MOUNT/
  proxy's own keys    $KV_MOUNT/$PROXY_PATH/{token-signing,token-verify,audit-chain,audit-signing,audit-verify,revocations}: $keys_note
  AppRole role        auth/$APPROLE_MOUNT/role/$ROLE_NAME (policy $ROLE_NAME only; tokens $TOKEN_TTL, at most $TOKEN_MAX_TTL)
  role_id file        $ROLE_ID_FILE   (mode 600)
  secret_id file      $SECRET_ID_FILE   (mode 600; $secret_id_note)
  operator policy     $ROLE_NAME-operator   auditor policy   $ROLE_NAME-auditor

Next steps:
  1. Move role-id and secret-id to the proxy host and delete them here (shred -u). They unlock
     every exchange key the proxy can read: treat them like the keys themselves.
       systemd:     install -m 600 -o root role-id secret-id /etc/signing-proxy/credentials/
                    (the unit passes them in with LoadCredential=; see deploy/systemd/)
       Kubernetes:  kubectl -n signing-proxy create secret generic signing-proxy-approle \\
                      --from-file=role-id=$ROLE_ID_FILE --from-file=secret-id=$SECRET_ID_FILE
     After a rotation, once every proxy runs with the new secret-id, destroy the old one:
       $CLI write auth/$APPROLE_MOUNT/role/$ROLE_NAME/secret-id/destroy secret_id=- < secret-id.previous
  2. In the proxy's config.toml:
       [vault]
       addr = "$VAULT_ADDR"
       auth = "approle"
       role_id_file = "/run/credentials/signing-proxy.service/vault-role-id"
       secret_id_file = "/run/credentials/signing-proxy.service/vault-secret-id"
       mount = "$KV_MOUNT"
  3. Store each exchange key from a file or stdin, never on a command line:
       $CLI kv put -mount=$KV_MOUNT exchanges/<account> - < key.json
       (key.json: {"api_key": "...", "api_secret": "...", "passphrase": "..."}; then shred -u key.json)
     or, for a new version of an existing key: python -m proxy keys rotate --config ... --account <account>
     At the exchange: allowlist only the proxy's egress IP, no withdrawal permission, a sub-account
     holding only trading capital (SECURITY.md, "Exchange-side settings").
  4. Give people the $ROLE_NAME-operator or $ROLE_NAME-auditor policy through your usual auth
     method (OIDC, LDAP, userpass), stop using the root token and revoke it: $CLI token revoke -self
  5. Turn on Vault's own audit log if it is off: $CLI audit enable file file_path=/var/log/vault/audit.log
  6. Check and start: python -m proxy policy check --config /etc/signing-proxy/config.toml
                      systemctl enable --now signing-proxy
EOF
