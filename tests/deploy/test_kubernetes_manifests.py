"""deploy/kubernetes: hardened pods, Redis for shared state, egress only to Vault, Redis and the
exchanges, and no exchange secret anywhere in the cluster."""

from __future__ import annotations

import ipaddress
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

from proxy import config as proxy_config  # noqa: E402
from proxy import exchanges  # noqa: E402
from proxy.policy.loader import load_dir  # noqa: E402
from proxy.server.hardening import check_listen_address, check_private_file  # noqa: E402

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out: list[Doc] = []
    for name in kustomization["resources"]:
        out += load(K8S / name)
    return out


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def pod_spec(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def all_containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


@pytest.fixture(scope="module")
def proxy_deploy(docs: list[Doc]) -> Doc:
    return find(docs, "Deployment", "signing-proxy")


@pytest.fixture(scope="module")
def config_text(docs: list[Doc]) -> str:
    return find(docs, "ConfigMap", "signing-proxy-config")["data"]["config.toml"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def proxy_cfg(config_text: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    f = tmp_path_factory.mktemp("cfg") / "config.toml"
    f.write_text(config_text)
    return proxy_config.load(f)


def test_every_resource_is_in_the_namespace(docs: list[Doc]) -> None:
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "signing-proxy", d["metadata"]["name"]
    ns = find(docs, "Namespace", "signing-proxy")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_runs_several_replicas_spread_and_protected(docs: list[Doc], proxy_deploy: Doc) -> None:
    assert proxy_deploy["spec"]["replicas"] >= 2
    assert proxy_deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod_spec(proxy_deploy)["topologySpreadConstraints"]
    pdb = find(docs, "PodDisruptionBudget", "signing-proxy")
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"] == proxy_deploy["spec"]["selector"]


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "signing-proxy"), ("StatefulSet", "signing-proxy-redis")]
)
def test_pods_are_hardened(docs: list[Doc], kind: str, name: str) -> None:
    spec = pod_spec(find(docs, kind, name))
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    sc = spec["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0 and sc["runAsGroup"] != 0
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in all_containers(spec):
        csc = c["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False, c["name"]
        assert csc["readOnlyRootFilesystem"] is True, c["name"]
        assert csc.get("privileged", False) is False, c["name"]
        assert csc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "add" not in csc["capabilities"], c["name"]
        assert "resources" in c and "limits" in c["resources"], c["name"]
        assert not c["image"].endswith(":latest"), c["name"]


def test_service_accounts_mount_no_token(docs: list[Doc]) -> None:
    for d in docs:
        if d["kind"] == "ServiceAccount":
            assert d["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRoleBinding")]


def test_probes_run_inside_the_pod_against_healthz_and_readyz(proxy_deploy: Doc) -> None:
    proxy = pod_spec(proxy_deploy)["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = proxy[probe]["exec"]["command"]
        assert command[:3] == ["python", "-I", "/usr/local/bin/signing-proxy-healthcheck"]
    assert proxy["readinessProbe"]["exec"]["command"][-1] == "--ready"
    # Only the bot port is exposed; the admin listener is not a container port.
    assert [p["containerPort"] for p in proxy["ports"]] == [8700]


def test_no_exchange_secret_anywhere_in_kubernetes(docs: list[Doc], proxy_deploy: Doc) -> None:
    everything = list(docs) + load(K8S / "optional" / "cilium-exchange-egress.yaml")
    assert not [d for d in everything if d["kind"] == "Secret"]
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    for field in ("api_key", "api_secret", "passphrase", "private_key"):
        assert field not in text
    spec = pod_spec(proxy_deploy)
    for c in all_containers(spec):
        for env in c.get("env", []):
            assert "secretKeyRef" not in env.get("valueFrom", {})
        assert "envFrom" not in c
    # The only Secret a pod mounts is the Vault AppRole login, and only the init container.
    secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
    assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == {"signing-proxy-approle"}
    for c in spec["containers"]:
        assert not secret_volumes & {m["name"] for m in c["volumeMounts"]}


def test_config_uses_redis_for_shared_state(docs: list[Doc], proxy_cfg: Any) -> None:
    assert proxy_cfg.state.backend == "redis"
    host = urlsplit(proxy_cfg.state.url).hostname
    service = find(docs, "Service", host)
    redis = find(docs, "StatefulSet", "signing-proxy-redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    args = pod_spec(redis)["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"


def test_config_listens_for_bots_on_purpose_and_keeps_admin_on_loopback(proxy_cfg: Any) -> None:
    server = proxy_cfg.server
    assert server.allow_non_loopback is True
    check_listen_address(str(server.listen), server.allow_non_loopback)
    check_listen_address(str(server.admin_listen), allow_non_loopback=False)
    assert proxy_cfg.vault.auth == "approle"


def test_policies_in_the_configmap_are_valid(docs: list[Doc], proxy_cfg: Any, tmp_path: Path) -> None:
    for name, text in find(docs, "ConfigMap", "signing-proxy-policies")["data"].items():
        (tmp_path / name).write_text(text)
    policies = load_dir(tmp_path, {a.name for a in proxy_cfg.accounts})
    assert policies.clients


def test_init_container_makes_private_copies_the_proxy_accepts(
    proxy_deploy: Doc, proxy_cfg: Any, tmp_path: Path
) -> None:
    spec = pod_spec(proxy_deploy)
    init = spec["initContainers"][0]
    proxy = spec["containers"][0]
    private = next(m for m in init["volumeMounts"] if m["name"] == "private")["mountPath"]
    etc = next(m for m in proxy["volumeMounts"] if m["name"] == "private")
    assert etc["readOnly"] is True
    # What Kubernetes gives the init container: files readable by others (0444).
    src = tmp_path / "src"
    for sub, files in {
        "config": ["config.toml"],
        "policies": ["momentum-bot.toml"],
        "approle": ["role-id", "secret-id"],
    }.items():
        (src / sub).mkdir(parents=True)
        for f in files:
            (src / sub / f).write_text("x\n")
            (src / sub / f).chmod(0o444)
    out = tmp_path / "private"
    out.mkdir()
    script = init["command"][-1].replace(private, str(out)).replace("/src/", f"{src}/")
    subprocess.run([*init["command"][:-1], script], check=True, timeout=10)
    # Every path the configuration names inside the copied folder is there and private.
    etc_dir = Path(etc["mountPath"])
    named = [proxy_cfg.vault.role_id_file, proxy_cfg.vault.secret_id_file, proxy_cfg.policies_dir]
    named.append(etc_dir / "config.toml")
    for path in named:
        copied = out / path.relative_to(etc_dir)
        assert copied.exists(), path
        check_private_file(copied)
    for policy_file in (out / "policies").iterdir():
        check_private_file(policy_file)
        assert stat.S_IMODE(policy_file.stat().st_mode) == 0o400
    assert proxy["args"] == ["serve", "--config", str(etc_dir / "config.toml")]


def test_audit_trail_survives_pods(docs: list[Doc], proxy_deploy: Doc, proxy_cfg: Any) -> None:
    spec = pod_spec(proxy_deploy)
    volume = next(v for v in spec["volumes"] if v["name"] == "audit")
    claim = find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "audit")
    assert Path(mount["mountPath"]) == proxy_cfg.audit_dir
    assert mount["subPathExpr"] == "$(POD_NAME)"


# --- network ---------------------------------------------------------------------------------


def _policies(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}


def test_namespace_denies_all_traffic_by_default(docs: list[Doc]) -> None:
    deny = _policies(docs)["default-deny-all"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny


def test_proxy_egress_reaches_only_vault_redis_exchanges_and_dns(docs: list[Doc], proxy_deploy: Doc) -> None:
    policy = _policies(docs)["signing-proxy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == proxy_deploy["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    redis_labels = find(docs, "StatefulSet", "signing-proxy-redis")["spec"]["selector"]["matchLabels"]
    seen_ports: set[int] = set()
    for rule in policy["egress"]:
        assert rule["to"], "an egress rule without destinations allows everywhere"
        ports = {p["port"] for p in rule["ports"]}
        assert ports, "an egress rule without ports allows every port"
        seen_ports |= ports
        for dest in rule["to"]:
            if "ipBlock" in dest:
                net = ipaddress.ip_network(dest["ipBlock"]["cidr"])
                assert net.prefixlen >= 16, f"{net} is far wider than Vault or an exchange"
                assert ports <= {8200, 443}
            elif "namespaceSelector" in dest:
                assert dest["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                assert ports == {53}
            else:
                assert dest["podSelector"]["matchLabels"] == redis_labels
                assert ports == {6379}
    assert seen_ports == {8200, 6379, 443, 53}


def test_proxy_ingress_only_from_labelled_bots_on_the_bot_port(docs: list[Doc]) -> None:
    policy = _policies(docs)["signing-proxy"]["spec"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8700]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == {"signing-proxy/client": "true"}
    assert peer["namespaceSelector"]["matchLabels"]


def test_redis_accepts_only_the_proxy_and_sends_nothing(docs: list[Doc], proxy_deploy: Doc) -> None:
    policy = _policies(docs)["signing-proxy-redis"]["spec"]
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == proxy_deploy["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in rule["ports"]] == [6379]
    assert policy["egress"] == []


def test_cilium_fqdn_policy_names_every_official_exchange_host() -> None:
    (policy,) = load(K8S / "optional" / "cilium-exchange-egress.yaml")
    names = {m["matchName"] for rule in policy["spec"]["egress"] for m in rule.get("toFQDNs", [])}
    official = set()
    for name in exchanges.available():
        for env in ("live", "testnet"):
            try:
                url = exchanges.get(name).base_url(env)
            except (ValueError, KeyError):
                continue
            official.add(urlsplit(url).hostname)
    assert official, "no exchange module found"
    assert official <= names, official - names
    assert not [n for n in names if "*" in n]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not here")
def test_kustomize_renders_the_whole_set() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
    assert "Deployment" in kinds and "NetworkPolicy" in kinds and "Secret" not in kinds
