"""The chart and the operator agree: names, the envFrom order, PgBouncer's fragment, RBAC, the probe.

Rendered with the real Helm engine (``tests/chart/rendering.py``: skipped on a laptop without the
k8s-test extras, an error in CI).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from authsvc_operator import authconfig, signing
from tests.chart.rendering import NAMESPACE, Rendered, render, require

helm = require("helm_python")


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render({})


@pytest.fixture(scope="module")
def names(rendered: Rendered) -> authconfig.Names:
    return authconfig.Names(rendered.fullname)


def operator_docs(rendered: Rendered) -> list[dict[str, Any]]:
    return [
        d for d in rendered.docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator"
    ]


def test_the_service_reads_the_operators_configmap_after_the_charts(
    rendered: Rendered, names: authconfig.Names
) -> None:
    deployment = rendered.one("Deployment", names.target)
    server = authconfig.server_container(deployment["spec"]["template"], names.overrides)
    refs = [ref["configMapRef"] for ref in server["envFrom"] if "configMapRef" in ref]
    assert refs[-1] == {"name": names.overrides, "optional": True}
    assert refs.index({"name": f"{names.target}-config"}) < len(refs) - 1


def test_pgbouncer_appends_the_fragment_the_operator_writes(rendered: Rendered, names: authconfig.Names) -> None:
    pod = rendered.one("Deployment", names.pgbouncer)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == names.pgbouncer_overrides)
    assert volume["configMap"]["optional"] is True
    (init,) = pod["initContainers"]
    mount = next(m for m in init["volumeMounts"] if m["name"] == volume["name"])
    assert f"{mount['mountPath']}/pgbouncer.ini" in init["command"][-1]  # the key the operator writes


def test_the_operator_runs_kopf_standalone_on_the_installed_package_with_its_liveness_probe(
    rendered: Rendered, names: authconfig.Names
) -> None:
    deployment = rendered.one("Deployment", f"{names.target}-operator")
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]) == (1, {"type": "Recreate"})
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["kopf"]
    args = container["args"]
    assert args[0] == "run" and "--standalone" in args
    assert f"--namespace={NAMESPACE}" in args
    assert args[-1] == "--module=authsvc_operator.handlers"  # the installed package, not a path in the image
    assert importlib.util.find_spec("authsvc_operator.handlers") is not None
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "AUTHCONFIG_DRIFT_INTERVAL": "60", "AUTHCONFIG_RETRY_DELAY": "30", "AUTHCONFIG_NAMESPACE": NAMESPACE
    }
    assert pod["serviceAccountName"] == f"{names.target}-operator"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def rules(rendered: Rendered, name: str) -> list[dict[str, Any]]:
    role: dict[str, Any] = rendered.one("Role", name)
    assert role["metadata"]["namespace"] == NAMESPACE
    return list(role["rules"])


def test_rbac_is_namespaced_and_split_into_what_kopf_needs_and_what_the_reconcile_writes(
    rendered: Rendered, names: authconfig.Names
) -> None:
    assert not [d for d in operator_docs(rendered) if d["kind"].startswith("Cluster")]
    prefix = f"{names.target}-operator"
    assert rules(rendered, f"{prefix}-kopf") == [
        {"apiGroups": [authconfig.GROUP], "resources": ["authconfigs"], "verbs": ["list", "watch", "patch"]},
        {"apiGroups": [authconfig.GROUP], "resources": ["authconfigs/status"], "verbs": ["patch"]},
        {"apiGroups": [authconfig.GROUP], "resources": ["authclients"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    assert rules(rendered, f"{prefix}-reconcile") == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [names.overrides, names.pgbouncer_overrides],
         "verbs": ["get", "patch"]},
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["create"]},
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": [names.cleanup],
         "verbs": ["get", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [names.target, names.pgbouncer],
         "verbs": ["get", "patch"]},
    ]
    for role in ("kopf", "reconcile"):
        binding = rendered.one("RoleBinding", f"{prefix}-{role}")
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{prefix}-{role}"}
        assert binding["roleRef"] == role_ref
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": prefix, "namespace": NAMESPACE}]


def test_the_operator_watches_another_namespace_when_told_to() -> None:
    rendered = render({"operator": {"watchNamespace": "tenants"}})
    for doc in operator_docs(rendered):
        if doc["kind"] in {"Role", "RoleBinding"}:
            assert doc["metadata"]["namespace"] == "tenants"
    container = rendered.one("Deployment", f"{rendered.fullname}-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=tenants" in container["args"]


def test_the_operator_can_be_left_out() -> None:
    assert operator_docs(render({"operator": {"enabled": False}})) == []


# ---- signing keys (AuthConfig spec.signingKeys)


def test_with_managed_keys_the_operator_writes_the_secret_the_pods_mount_and_nothing_else() -> None:
    rendered = render({"signingKeys": {"managedByOperator": True}})
    names = authconfig.Names(rendered.fullname)
    secret = signing.secret_name({"targetRef": {"name": names.target}})  # the AuthConfig's default
    pod = rendered.one("Deployment", names.target)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    config = rendered.one("ConfigMap", f"{names.target}-config")["data"]
    assert mount["mountPath"] == config["AUTH_KEYS_DIR"]
    assert [s["metadata"]["name"] for s in rendered.kind("Secret")] == [f"{names.target}-credentials"]
    assert rules(rendered, f"{names.target}-operator-reconcile")[-2:] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "patch"]},
    ]


def test_an_existing_secret_can_be_the_one_the_operator_rotates() -> None:
    rendered = render({"signingKeys": {"managedByOperator": True, "existingSecret": "auth-keys"}})
    assert rules(rendered, f"{rendered.fullname}-operator-reconcile")[-1]["resourceNames"] == ["auth-keys"]


def test_without_managed_keys_the_operator_may_not_touch_any_secret(rendered: Rendered) -> None:
    for doc in operator_docs(rendered):
        for rule in doc.get("rules", []):
            assert "secrets" not in rule["resources"]


def test_managed_keys_without_the_operator_is_a_clear_error() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"signingKeys\.managedByOperator needs operator\.enabled"):
        render({"signingKeys": {"managedByOperator": True}, "operator": {"enabled": False}})


# ---- AuthClients (operator.clientNamespaces)


def test_authclients_are_served_in_the_client_namespaces_with_secrets_there_only() -> None:
    rendered = render({"operator": {"clientNamespaces": ["shop", NAMESPACE]}})
    prefix = f"{rendered.fullname}-operator"
    container = rendered.one("Deployment", prefix)["spec"]["template"]["spec"]["containers"][0]
    namespaces = [a for a in container["args"] if a.startswith("--namespace=")]
    assert namespaces == [f"--namespace={NAMESPACE}", "--namespace=shop"]  # the release's once
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["rules"] for d in rendered.kind("Role")}
    serve = [
        {"apiGroups": [authconfig.GROUP], "resources": ["authclients"], "verbs": ["patch"]},
        {"apiGroups": [authconfig.GROUP], "resources": ["authclients/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "patch", "delete"]},
    ]
    assert roles["shop", f"{prefix}-clients"] == [
        {"apiGroups": [authconfig.GROUP], "resources": ["authconfigs", "authclients"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        *serve,
    ]
    assert roles[NAMESPACE, f"{prefix}-clients"] == serve  # kopf's Role there has the rest
    for namespace in ("shop", NAMESPACE):
        binding = next(d for d in rendered.kind("RoleBinding")
                       if (d["metadata"]["namespace"], d["metadata"]["name"]) == (namespace, f"{prefix}-clients"))
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": prefix, "namespace": NAMESPACE}]
    secrets = [rule for (namespace, _), rules in roles.items() for rule in rules
               if "secrets" in rule["resources"] and namespace not in ("shop", NAMESPACE)]
    assert secrets == []


def test_the_operator_reaches_the_admin_api_as_the_bootstrap_client() -> None:
    rendered = render({"operator": {"clientNamespaces": ["shop"]}, "oauth": {"bootstrapClient": {"clientId": "ops"}}})
    pod = rendered.one("Deployment", f"{rendered.fullname}-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["AUTHCLIENT_NAMESPACES"]["value"] == "shop"
    assert env["AUTHCLIENT_ADMIN_CLIENT_ID"]["value"] == "ops"
    server_env = {e["name"]: e for e in rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]
                  ["containers"][0]["env"]}
    assert env["AUTHCLIENT_ADMIN_CLIENT_SECRET"]["valueFrom"] == server_env["AUTH_BOOTSTRAP_CLIENT_SECRET"]["valueFrom"]
    config = rendered.one("ConfigMap", f"{rendered.fullname}-config")["data"]
    assert config["AUTH_BOOTSTRAP_CLIENT_ID"] == "ops" and "admin" in config["AUTH_BOOTSTRAP_CLIENT_SCOPES"].split()
    service = rendered.one("Service", rendered.fullname)
    port = service["spec"]["ports"][0]["port"]
    assert env["AUTHCLIENT_SERVICE_URL"]["value"] == f"http://{rendered.fullname}.{NAMESPACE}.svc:{port}"


def test_without_client_namespaces_the_operator_gets_no_admin_secret() -> None:
    rendered = render({})
    container = rendered.one("Deployment", f"{rendered.fullname}-operator")["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in container["env"] if e["name"].startswith("AUTHCLIENT_")]
    assert not [d for d in rendered.kind("Role") if d["metadata"]["name"].endswith("-clients")]


def test_client_namespaces_without_the_bootstrap_client_is_a_clear_error() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"clientNamespaces needs oauth\.bootstrapClient\.enabled"):
        render({"operator": {"clientNamespaces": ["shop"]}, "oauth": {"bootstrapClient": {"enabled": False}}})


def test_the_operator_may_call_the_service_when_the_namespace_may_not() -> None:
    closed = {"networkPolicy": {"allowSameNamespace": False}}
    ingress = render({**closed, "operator": {"clientNamespaces": ["shop"]}}).one(
        "NetworkPolicy", f"{render({}).fullname}"
    )["spec"]["ingress"]
    (rule,) = ingress
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]] == ["operator"]
    assert render(closed).one("NetworkPolicy", render({}).fullname)["spec"].get("ingress") in (None, [])
