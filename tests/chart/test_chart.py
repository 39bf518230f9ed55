"""The Helm chart, rendered by the real Helm engine and checked as a cluster would check it.

Every value set of the matrix is rendered once, linted strictly, validated against the Kubernetes
schemas of the oldest and newest supported version, and held to the properties that matter: probes on
the service's real routes, the restricted Pod Security Standard, the migration hook, the cleanup job.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .rendering import (
    CHART,
    CLEANUP_METRICS_PORT,
    HEALTH_ROUTES,
    KEDA_SCHEMA,
    KUBE_VERSIONS,
    METRICS_ROUTE,
    NAMESPACE,
    RELEASE,
    ROOT,
    SERVER_PORT,
    SUBCOMMANDS,
    Rendered,
    render,
    require,
    values_of,
)

helm = require("helm_python")
kubernetes_validate = require("kubernetes_validate")
yaml = require("yaml")

FULLNAME = f"{RELEASE}-auth-platform"  # with the default values
SERVICE_IMAGE = "ghcr.io/auth-platform/authsvc"
# Kinds that only exist with a CRD installed: kubernetes-validate has no schema for them.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}
# Variables the chart sets itself; everything else under `config` is the user's.
CHART_MANAGED = {
    "AUTH_DATABASE_URL",
    "AUTH_DATABASE_READ_URL",
    "AUTH_REDIS_URL",
    "AUTH_KEYS_DIR",
    "AUTH_DATA_DIR",
    "AUTH_SIGNING_KEY_ID",
    "AUTH_INTROSPECTION_SECRET",
    "AUTH_ISSUER",  # oauth.issuer, or derived from the Ingress or Service host
    "AUTH_CORS_ORIGINS",  # oauth.corsOrigins
    "AUTH_BOOTSTRAP_CLIENT_ID",  # oauth.bootstrapClient
    "AUTH_BOOTSTRAP_CLIENT_SCOPES",
    "AUTH_BOOTSTRAP_CLIENT_SECRET",  # generated into the credentials Secret
    # mail.*: the SMTP server, its login from an existing Secret, the From address
    "AUTH_SMTP_URL",
    "AUTH_SMTP_STARTTLS",
    "AUTH_SMTP_USERNAME",
    "AUTH_SMTP_PASSWORD_FILE",
    "AUTH_MAIL_FROM",
    "AUTH_AUDIT_KEY",  # generated into the credentials Secret
}


def documented_variables() -> set[str]:
    """The AUTH_* variables docs/configuration.md lists: the only names the service reads."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\| `(AUTH_[A-Z0-9_]+)` \|", text, flags=re.MULTILINE))


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def authsvc_containers(rendered: Rendered) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Containers running the authsvc image with its entrypoint (not the operator's kopf command)."""
    repository = rendered.values.get("image", {}).get("repository", SERVICE_IMAGE)
    for doc, pod in rendered.pod_specs():
        for container in containers(pod):
            if container["image"].startswith(repository + ":") and "command" not in container:
                yield doc, container


def crd_kinds() -> set[tuple[str, str]]:
    """Kinds defined by the chart's own CRDs (crds/ folder), which have no built-in schema either."""
    kinds = set()
    with helm.Chart.load(str(CHART)) as chart:
        for crd in chart.crds:
            for doc in yaml.safe_load_all(crd["data"]):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    spec = doc["spec"]
                    for version in spec["versions"]:
                        kinds.add((f"{spec['group']}/{version['name']}", spec["names"]["kind"]))
    return kinds


# ---- rendering, lint, schemas ------------------------------------------------------------------------


def test_every_value_set_renders_objects_with_names_and_labels(rendered: Rendered) -> None:
    assert rendered.docs
    for doc in rendered.docs:
        meta = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_lint_is_clean_in_strict_mode(case: str) -> None:
    for kube_version in KUBE_VERSIONS:
        report = helm.lint(
            str(CHART), values_of(case), strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
        )
        assert report["errors"] == []
        # severity 1 is information (e.g. "icon is recommended"); 2 warning, 3 error
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_document_matches_the_kubernetes_schema(rendered: Rendered, kube_version: str) -> None:
    extra_kinds = CRD_KINDS | crd_kinds()
    validated = 0
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in extra_kinds:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")
        validated += 1
    assert validated > 0


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_charts_crds_match_the_kubernetes_schema(kube_version: str) -> None:
    with helm.Chart.load(str(CHART)) as chart:
        crds = [doc for crd in chart.crds for doc in yaml.safe_load_all(crd["data"]) if doc]
    for crd in crds:
        kubernetes_validate.validate(crd, kube_version, strict=True)


def test_chart_kube_version_is_the_oldest_validated_one() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    oldest = KUBE_VERSIONS[0].rsplit(".", 1)[0]
    assert chart["kubeVersion"] == f">={oldest}.0-0"


def test_validated_versions_are_shipped_by_kubernetes_validate() -> None:
    shipped = {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}
    assert {v.rsplit(".", 1)[0] for v in KUBE_VERSIONS} <= shipped


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"server": {"replicaCount": "2"}}, "want integer"),
        ({"server": {"replicas": 2}}, "additional properties 'replicas' not allowed"),
        ({"autoscaling": {"enabled": "yes"}}, "want boolean"),
        ({"cleanup": {"mode": "daemon"}}, "cronjob"),
        ({"config": {"AUTH_DATABASE_URL": "postgresql://x"}}, "AUTH_DATABASE_URL"),
        ({"config": {"AUTH_BCRYPT_COST": 40}}, "maximum"),
        ({"config": {"AUTH_RATE_LIMIT_IP": "lots"}}, "AUTH_RATE_LIMIT_IP"),
        ({"secrets": {"databasePassword": "with@sign"}}, "databasePassword"),
        ({"pgbouncer": {"poolMode": "statement"}}, "transaction"),
        ({"crds": {"install": False}}, "additional properties 'crds' not allowed"),  # Helm never templates crds/
        ({"operator": {"driftIntervalSeconds": "60"}}, "want integer"),
        ({"operator": {"retryDelaySeconds": 0}}, "minimum"),
        ({"operator": {"driftInterval": 60}}, "additional properties 'driftInterval' not allowed"),
        ({"otel": {"protocol": "grpc"}}, "http/protobuf"),  # the image has no gRPC exporter
        ({"otel": {"protocol": "http/json"}}, "http/protobuf"),  # nor a JSON one
        ({"networkPolicy": {"otlpPorts": []}}, "otlpPorts"),  # an empty list would open every port
        ({"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}, "want string"),
        ({"grafanaDashboard": {"folders": "x"}}, "additional properties 'folders' not allowed"),
        ({"autoscaling": {"hashLoad": {"provider": "adapter"}}}, "'prometheusAdapter', 'keda'"),
        ({"autoscaling": {"hashLoad": {"target": 0}}}, "exclusiveMinimum"),
        ({"autoscaling": {"hashLoad": {"window": "120"}}}, "/autoscaling/hashLoad/window"),  # PromQL wants a unit
        ({"autoscaling": {"hashLoad": {"keda": {"serverAddress": "prometheus:9090"}}}}, "serverAddress"),
    ],
)
def test_schema_rejects_unknown_keys_and_wrong_types(values: dict[str, Any], complaint: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.validate_schema(values)


def test_schema_accepts_every_value_set_of_the_matrix(case: str) -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values_of(case))


# ---- security ----------------------------------------------------------------------------------------


def test_every_pod_meets_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    # only pods whose ServiceAccount the chart grants API access (the operator's) get a token
    bound = {
        subject["name"]
        for binding in rendered.kind("RoleBinding") + rendered.kind("ClusterRoleBinding")
        for subject in binding.get("subjects", [])
        if subject["kind"] == "ServiceAccount"
    }
    for doc, pod in rendered.pod_specs():
        spec = pod["spec"]
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        if spec.get("serviceAccountName") not in bound:
            assert spec.get("automountServiceAccountToken") is False, where
        pod_ctx = spec.get("securityContext", {})
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, where
        for container in containers(pod):
            ctx = container.get("securityContext", {})
            at = f"{where} container {container['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, at
            assert ctx.get("readOnlyRootFilesystem") is True, at
            assert not ctx.get("privileged"), at
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), at
            assert set(ctx.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, at
            seccomp = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile")
            assert seccomp and seccomp["type"] in {"RuntimeDefault", "Localhost"}, at


def test_no_container_runs_as_root(rendered: Rendered) -> None:
    for doc, pod in rendered.pod_specs():
        pod_ctx = pod["spec"].get("securityContext", {})
        for container in containers(pod):
            ctx = container.get("securityContext", {})
            at = f"{doc['kind']}/{doc['metadata']['name']} container {container['name']}"
            assert (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")) is True, at
            uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            # a numeric uid lets the kubelet verify runAsNonRoot whatever the image's USER says
            assert isinstance(uid, int) and uid > 0, at
            group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
            assert group is None or group > 0, at


def test_authsvc_runs_as_the_dockerfiles_user(rendered: Rendered) -> None:
    user = re.search(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert user is not None
    for doc, pod in rendered.pod_specs():
        if any(c["image"].startswith(SERVICE_IMAGE) for c in pod["spec"]["containers"]) and doc["kind"] != "Job":
            assert pod["spec"]["securityContext"]["runAsUser"] == int(user.group(1)), doc["metadata"]["name"]


def test_images_are_pinned_and_pulled_by_policy(rendered: Rendered) -> None:
    for _, pod in rendered.pod_specs():
        for container in containers(pod):
            image = container["image"]
            assert re.search(r":[^/]+$|@sha256:[0-9a-f]{64}$", image), image
            assert not image.endswith(":latest"), image
            assert container.get("imagePullPolicy") in {"IfNotPresent", "Always", "Never"}


def test_generated_secrets_survive_upgrades_and_uninstall() -> None:
    rendered = render({})
    secrets = {s["metadata"]["name"]: s for s in rendered.kind("Secret")}
    for name in (f"{rendered.fullname}-credentials", f"{rendered.fullname}-signing-keys"):
        assert secrets[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    keys = secrets[f"{rendered.fullname}-signing-keys"]["data"]
    assert len(keys) == 1
    ((filename, pem_b64),) = keys.items()
    assert re.fullmatch(r"[a-z0-9-]+\.pem", filename)  # <kid>.pem
    pem = base64.b64decode(pem_b64).decode()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    assert bytes.fromhex("06032b6570") in der  # OID 1.3.101.112: Ed25519, the service's default algorithm
    credentials = secrets[f"{rendered.fullname}-credentials"]["data"]
    assert set(credentials) == {
        "database-password", "redis-password", "introspection-secret", "bootstrap-client-secret", "audit-key"
    }
    for value in credentials.values():
        assert len(base64.b64decode(value)) >= 32


def test_existing_secrets_replace_the_generated_ones() -> None:
    rendered = render(values_of("existing-secrets"))
    assert rendered.kind("Secret") == []
    refs = set()
    for _, pod in rendered.pod_specs():
        for container in containers(pod):
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    refs.add(env["valueFrom"]["secretKeyRef"]["name"])
        for volume in pod["spec"].get("volumes", []):
            if "secret" in volume:
                refs.add(volume["secret"]["secretName"])
    assert refs == {"auth-creds", "auth-keys"}
    config = rendered.one("ConfigMap", f"{rendered.fullname}-config")["data"]
    assert config["AUTH_SIGNING_KEY_ID"] == "2026-01"


# ---- the service's Deployment ------------------------------------------------------------------------


def test_probes_point_at_the_services_health_routes(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", rendered.fullname)
    server = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": SERVER_PORT}
    args = server["args"]
    assert args[0] == "serve"
    assert ipaddress.ip_address(args[args.index("--host") + 1]).is_unspecified  # all interfaces, for the kubelet
    assert args[args.index("--port") + 1] == str(SERVER_PORT)
    for kind, route in HEALTH_ROUTES.items():
        probe = server[f"{kind}Probe"]["httpGet"]
        assert probe["path"] == route
        assert probe["port"] in ports


def test_the_service_and_servicemonitor_reach_the_server_port(rendered: Rendered) -> None:
    service = rendered.one("Service", rendered.fullname)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    deployment = rendered.one("Deployment", rendered.fullname)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for monitor in rendered.kind("ServiceMonitor"):
        assert monitor["spec"]["endpoints"][0]["path"] == METRICS_ROUTE
        assert monitor["spec"]["endpoints"][0]["port"] == "http"
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_settings_come_from_the_charts_configmap_then_the_operators(rendered: Rendered) -> None:
    for doc, container in authsvc_containers(rendered):
        if doc["kind"] == "Job":
            continue  # the migration hook may run before any ConfigMap exists
        assert container["envFrom"] == [
            {"configMapRef": {"name": f"{rendered.fullname}-config"}},
            {"configMapRef": {"name": f"{rendered.fullname}-overrides", "optional": True}},
        ]


def test_only_documented_settings_are_set(rendered: Rendered) -> None:
    documented = documented_variables()
    assert len(documented) > 30
    config = rendered.one("ConfigMap", f"{rendered.fullname}-config")["data"]
    names = set(config)
    for _, container in authsvc_containers(rendered):
        names |= {env["name"] for env in container.get("env", [])}
    auth_names = {n for n in names if n.startswith("AUTH_")}
    assert auth_names <= documented, auth_names - documented
    assert all(n.startswith("OTEL_") for n in set(config) - auth_names)
    for value in config.values():
        assert isinstance(value, str) and "e+" not in value  # no float formatting of whole numbers


def test_schema_config_keys_are_exactly_the_documented_variables_the_chart_leaves_to_users() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        schema = chart.schema
    assert schema is not None
    allowed = set(schema["properties"]["config"]["properties"])
    assert allowed == documented_variables() - CHART_MANAGED


def test_large_whole_numbers_reach_the_configmap_as_integers() -> None:
    config = render({"config": {"AUTH_SESSION_MAX_AGE": 2592000, "AUTH_REDIS_TIMEOUT": 0.25}}).one(
        "ConfigMap", f"{FULLNAME}-config"
    )["data"]
    assert config["AUTH_SESSION_MAX_AGE"] == "2592000"
    assert config["AUTH_REDIS_TIMEOUT"] == "0.25"


def test_checksum_annotation_changes_with_the_settings_and_only_then() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = render(values).one("Deployment", FULLNAME)
        annotation: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return annotation

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"config": {"AUTH_LOG_LEVEL": "INFO"}}) == base  # the default, spelled out
    assert checksum({"config": {"AUTH_LOG_LEVEL": "DEBUG"}}) != base
    assert checksum({"config": {"AUTH_BCRYPT_COST": 13}}) != base
    assert checksum({"signingKeys": {"activeKeyId": "next"}}) != base
    assert checksum({"server": {"workers": 2}}) == base  # not a setting: the template changes anyway


def test_database_goes_through_pgbouncer_without_prepared_statement_cache() -> None:
    rendered = render({})
    config = rendered.one("ConfigMap", f"{rendered.fullname}-config")["data"]
    assert config["AUTH_DB_STATEMENT_CACHE_SIZE"] == "0"
    server = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in server["env"]}
    assert env["AUTH_DATABASE_URL"]["value"] == (
        f"postgresql://authsvc:$(DATABASE_PASSWORD)@{rendered.fullname}-pgbouncer:6432/authsvc"
    )
    names = [e["name"] for e in server["env"]]
    assert names.index("DATABASE_PASSWORD") < names.index("AUTH_DATABASE_URL")  # $(VAR) needs it first
    assert env["AUTH_REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{rendered.fullname}-redis:6379/0"
    ini = rendered.one("ConfigMap", f"{rendered.fullname}-pgbouncer")["data"]["pgbouncer.ini"]
    assert "pool_mode = transaction" in ini
    assert "server_login_retry = 2" in ini  # the service answers 503 until PgBouncer logs in again
    assert f"authsvc = host={rendered.fullname}-postgresql port=5432 dbname=authsvc" in ini


def test_external_database_and_redis_are_used_directly() -> None:
    rendered = render(values_of("external-db-redis"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered.docs}
    assert not {k for k in kinds if "pgbouncer" in k[1] or "redis" in k[1] or "postgresql" in k[1]}
    server = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["AUTH_DATABASE_URL"] == (
        "postgresql://authsvc:$(DATABASE_PASSWORD)@pg.example.internal:5433/authsvc?ssl=require"
    )
    assert env["AUTH_REDIS_URL"] == "rediss://:$(REDIS_PASSWORD)@redis.example.internal:6380/2"
    config = rendered.one("ConfigMap", f"{rendered.fullname}-config")["data"]
    assert "AUTH_DB_STATEMENT_CACHE_SIZE" not in config
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert config["OTEL_SDK_DISABLED"] == "false"


# ---- observability -----------------------------------------------------------------------------------


def test_otlp_export_uses_the_http_exporter_the_image_ships() -> None:
    telemetry = require("service.telemetry")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    exporters = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in dependencies if "exporter-otlp" in d}
    assert exporters == {"opentelemetry-exporter-otlp-proto-http"}  # what the image installs
    values_text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    assert values["otel"]["protocol"] == "http/protobuf"
    assert "4317" not in values_text and "4317" not in (CHART / "README.md").read_text()  # gRPC's port
    with helm.Chart.load(str(CHART)) as chart:
        schema = chart.schema
    assert schema is not None
    allowed = schema["properties"]["otel"]["properties"]["protocol"]["enum"]
    for protocol in allowed:  # the service starts with every protocol the schema lets through
        telemetry._otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    for protocol in ("grpc", "http/json"):
        assert protocol not in allowed
        with pytest.raises(telemetry.TelemetryConfigError):
            telemetry._otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol})

    rendered = render(values_of("external-db-redis"))  # otel on, the protocol left at its default
    config = rendered.one("ConfigMap", f"{rendered.fullname}-config")["data"]
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
    # the NetworkPolicy lets the server out to the OTLP/HTTP port only, towards the collector
    assert values["networkPolicy"]["otlpPorts"] == [4318]
    policy = rendered.one("NetworkPolicy", rendered.fullname)
    (otlp,) = [r for r in policy["spec"]["egress"] if 4318 in {p["port"] for p in r["ports"]}]
    assert otlp["ports"] == [{"port": 4318, "protocol": "TCP"}]
    assert otlp["to"] == values_of("external-db-redis")["networkPolicy"]["otlpTo"]
    otel_off = render({}).one("NetworkPolicy", FULLNAME)
    assert not [r for r in otel_off["spec"]["egress"] if 4318 in {p["port"] for p in r["ports"]}]


def test_the_grafana_dashboard_configmap_holds_the_charts_dashboard() -> None:
    name = f"{FULLNAME}-dashboard"
    assert not [d for d in render({}).docs if d["metadata"]["name"] == name]  # off by default

    dashboard_file = (CHART / "dashboards" / "authsvc.json").read_text()
    configmap = render({"grafanaDashboard": {"enabled": True}}).one("ConfigMap", name)
    (key,) = configmap["data"]
    assert key.endswith(".json")
    assert json.loads(configmap["data"][key]) == json.loads(dashboard_file)
    assert configmap["data"][key] == dashboard_file
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # the sidecar's default label
    assert "annotations" not in configmap["metadata"]  # no folder asked for

    custom = render(
        {
            "grafanaDashboard": {
                "enabled": True,
                "labels": {"grafana_dashboard": None, "dashboards": "auth"},  # null drops the default key
                "folder": "Auth platform",
                "folderAnnotation": "k8s-sidecar-target-directory",
            }
        }
    ).one("ConfigMap", name)
    assert custom["metadata"]["labels"]["dashboards"] == "auth"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "Auth platform"}
    with_folder = render(values_of("sidecar-cleanup")).one("ConfigMap", name)
    assert with_folder["metadata"]["annotations"] == {"grafana_folder": "Auth"}


def test_the_packaged_chart_keeps_the_dashboard(tmp_path: Path) -> None:
    # .helmignore must not drop dashboards/: the template reads the file from the packaged chart
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with helm.Chart.load(archive) as chart:
        assert "dashboards/authsvc.json" in {f["name"] for f in chart.files}
        manifests = chart.render({"grafanaDashboard": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    (text,) = [t for path, t in manifests.items() if path.endswith("dashboard-configmap.yaml")]
    (configmap,) = [d for d in yaml.safe_load_all(text) if d]
    assert json.loads(configmap["data"]["authsvc.json"])["uid"] == "authsvc-overview"


def test_the_cleanup_sidecars_metrics_are_exposed_and_scraped() -> None:
    cli = require("service.cli")
    rendered = render(values_of("sidecar-cleanup"))
    pod = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "cleanup")
    args = cli.parser().parse_args(sidecar["args"])  # the CLI accepts exactly these flags
    assert args.loop and args.metrics_port == CLEANUP_METRICS_PORT
    assert sidecar["ports"] == [{"name": "cleanup-metrics", "containerPort": CLEANUP_METRICS_PORT, "protocol": "TCP"}]

    service = rendered.one("Service", rendered.fullname)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["cleanup-metrics"]["targetPort"] == "cleanup-metrics"
    assert ports["http"]["targetPort"] == "http"
    # one ServiceMonitor, one Service: both targets share the job label the dashboard filters by
    (monitor,) = rendered.kind("ServiceMonitor")
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert set(endpoints) == {"http", "cleanup-metrics"}
    assert endpoints["cleanup-metrics"]["path"] == METRICS_ROUTE  # prometheus_client serves every path
    assert endpoints["cleanup-metrics"]["interval"] == endpoints["http"]["interval"]

    # the NetworkPolicy lets the scrapers of the server's /metrics reach the sidecar's too
    policy = rendered.one("NetworkPolicy", rendered.fullname)
    (ingress,) = policy["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == {SERVER_PORT, CLEANUP_METRICS_PORT}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    scraped = render({**values_of("sidecar-cleanup"), "networkPolicy": {"ingressFrom": [prometheus]}})
    (ingress,) = scraped.one("NetworkPolicy", FULLNAME)["spec"]["ingress"]
    assert prometheus in ingress["from"]
    assert {p["port"] for p in ingress["ports"]} == {SERVER_PORT, CLEANUP_METRICS_PORT}

    # without the sidecar: no such port anywhere
    for values in ({}, values_of("operator-cleanup"), values_of("external-db-redis")):
        other = render(values)
        assert [p["name"] for p in other.one("Service", other.fullname)["spec"]["ports"]] == ["http"]
        for monitor in other.kind("ServiceMonitor"):
            assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
        for policy in other.kind("NetworkPolicy"):
            for rule in policy["spec"]["ingress"]:
                assert CLEANUP_METRICS_PORT not in {p["port"] for p in rule.get("ports", [])}


def test_replica_count_is_left_to_the_hpa_when_it_is_on(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", rendered.fullname)
    hpas = rendered.kind("HorizontalPodAutoscaler")
    scaled_objects = rendered.kind("ScaledObject")
    autoscaling = rendered.values.get("autoscaling", {})
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": rendered.fullname}
    if not autoscaling.get("enabled", True):
        assert hpas == scaled_objects == []
        assert deployment["spec"]["replicas"] == rendered.values["server"]["replicaCount"]
        return
    assert "replicas" not in deployment["spec"]
    hash_load = autoscaling.get("hashLoad", {})
    if hash_load.get("enabled") and hash_load.get("provider") == "keda":
        assert hpas == []  # KEDA creates its own HPA: a second one would fight it over the replica count
        (scaled,) = scaled_objects
        assert scaled["spec"]["scaleTargetRef"] == target
        cpu = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
        assert scaled["spec"]["triggers"][0] == cpu
    else:
        assert scaled_objects == []
        assert hpas[0]["spec"]["scaleTargetRef"] == target
        assert hpas[0]["spec"]["metrics"][0]["resource"]["name"] == "cpu"


PROMETHEUS = "http://prometheus.monitoring:9090"
HASH_LOAD: dict[str, Any] = {"enabled": True, "provider": "keda", "keda": {"serverAddress": PROMETHEUS}}


def keda_validator() -> Any:
    jsonschema = require("jsonschema")
    return jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))


@pytest.mark.parametrize(
    "autoscaling",
    [
        {"hashLoad": HASH_LOAD},
        {"targetMemoryUtilizationPercentage": 80, "scaleDownStabilizationSeconds": 0,
         "hashLoad": {**HASH_LOAD, "target": 1.5, "window": "5m",
                      "keda": {"serverAddress": PROMETHEUS, "authenticationRef": "prometheus", "query": "sum(up)"}}},
    ],
)
def test_the_keda_scaled_object_matches_the_scaledobject_schema(autoscaling: dict[str, Any]) -> None:
    # kubernetes-validate has no schema for KEDA's CRD: this checks it against the small schema written
    # from KEDA's CRD and scalers (tests/chart/keda-scaledobject-v1alpha1.json), unknown fields refused
    (scaled,) = render({"autoscaling": autoscaling}).kind("ScaledObject")
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator().iter_errors(scaled)]
    assert problems == []
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
    hash_load = autoscaling["hashLoad"]
    (trigger,) = [t for t in spec["triggers"] if t["type"] == "prometheus"]
    assert trigger["metricType"] == "AverageValue"  # desired pods = total load / threshold
    assert float(trigger["metadata"]["threshold"]) == hash_load.get("target", 0.8)
    assert trigger["metadata"]["serverAddress"] == hash_load["keda"]["serverAddress"]
    if hash_load["keda"].get("query"):
        assert trigger["metadata"]["query"] == hash_load["keda"]["query"]
    else:
        assert f'{{namespace="{NAMESPACE}",service="{FULLNAME}"}}' in trigger["metadata"]["query"]
    assert [t["type"] for t in spec["triggers"]][:1] == ["cpu"]  # CPU stays a signal


def test_the_keda_schema_refuses_what_keda_would() -> None:
    (scaled,) = render({"autoscaling": {"hashLoad": HASH_LOAD}}).kind("ScaledObject")
    validator = keda_validator()
    assert validator.is_valid(scaled)
    broken_copies: list[dict[str, Any]] = []
    changes: list[Callable[[dict[str, Any]], object]] = [
        lambda s: s["spec"].update(minReplicas=2),  # the HPA's spelling, not KEDA's
        lambda s: s["spec"]["triggers"][0].pop("metricType"),  # cpu needs it since KEDA 2.18
        lambda s: s["spec"]["triggers"][1]["metadata"].update(threshold=0.8),  # metadata are strings
        lambda s: s["spec"]["triggers"][1]["metadata"].pop("serverAddress"),
        lambda s: s["spec"]["triggers"][1].update(metricType="Utilization"),  # only for cpu and memory
    ]
    for change in changes:
        broken = json.loads(json.dumps(scaled))
        change(broken)
        broken_copies.append(broken)
    assert [validator.is_valid(b) for b in broken_copies] == [False] * 5


def test_keda_without_a_prometheus_address_is_a_clear_error() -> None:
    hash_load = {"enabled": True, "provider": "keda"}
    with pytest.raises(helm.HelmRenderError, match=r"autoscaling\.hashLoad\.keda\.serverAddress is required"):
        render({"autoscaling": {"hashLoad": hash_load}})


def test_the_hash_load_signal_is_built_from_series_the_service_exports() -> None:
    metrics = require("service.metrics")
    parser = require("prometheus_client.parser")
    exported: set[str] = set()
    for family in parser.text_string_to_metric_families(metrics.render().decode()):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        exported.update(family.name + suffix for suffix in suffixes)

    def series(query: str) -> set[str]:
        return set(re.findall(r"\bauth_[a-z_]+\b", query)) - {"auth_password_pool_load"}

    hpa = render(values_of("hash-load-prometheus-adapter")).one("HorizontalPodAutoscaler", FULLNAME)
    cpu, pods = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"  # CPU stays beside the hash load
    assert pods == {"type": "Pods", "pods": {"metric": {"name": "auth_password_pool_load"},
                                             "target": {"type": "AverageValue", "averageValue": "0.8"}}}
    adapter = yaml.safe_load((CHART / "autoscaling" / "prometheus-adapter.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == pods["pods"]["metric"]["name"]  # what the HPA asks the adapter for
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    (trigger,) = [t for t in render(values_of("hash-load-keda")).one("ScaledObject", FULLNAME)["spec"]["triggers"]
                  if t["type"] == "prometheus"]
    used = series(rule["metricsQuery"])
    assert used == series(trigger["metadata"]["query"])  # the same signal through either provider
    assert used == {
        "auth_password_hash_duration_seconds_sum", "auth_password_queue_wait_seconds_sum", "auth_password_workers"
    }
    assert used | series(rule["seriesQuery"]) <= exported
    for query in (rule["metricsQuery"], trigger["metadata"]["query"]):
        assert query.count("(") == query.count(")")


def test_a_pdb_guards_the_server_only_when_two_pods_or_more_run() -> None:
    assert [p["metadata"]["name"] for p in render({}).kind("PodDisruptionBudget")] == [
        FULLNAME,
        f"{FULLNAME}-pgbouncer",
    ]
    single = render(values_of("single-replica-no-hpa"))
    assert FULLNAME not in {p["metadata"]["name"] for p in single.kind("PodDisruptionBudget")}
    fixed = render({"autoscaling": {"enabled": False}, "server": {"replicaCount": 3}})
    assert FULLNAME in {p["metadata"]["name"] for p in fixed.kind("PodDisruptionBudget")}


def test_server_pods_spread_over_zones_and_nodes(rendered: Rendered) -> None:
    spec = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]
    keys = [c["topologyKey"] for c in spec["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert spec["containers"][0]["resources"]["limits"]["cpu"]  # the bcrypt pool is sized from it


def test_service_account_mounts_no_token() -> None:
    account = render({}).one("ServiceAccount", FULLNAME)  # the operator has its own, with API access
    assert account["automountServiceAccountToken"] is False


# ---- migrations and cleanup --------------------------------------------------------------------------


def test_migrations_run_as_a_hook_before_the_new_pods(rendered: Rendered) -> None:
    (job,) = [j for j in rendered.kind("Job") if j["metadata"]["name"] == f"{rendered.fullname}-migrate"]
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    in_chart_db = rendered.values.get("postgresql", {}).get("enabled", True)
    # hooks run before any chart resource exists: an in-chart database can only be migrated post-install
    assert hooks == ({"post-install", "pre-upgrade"} if in_chart_db else {"pre-install", "pre-upgrade"})
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's ENTRYPOINT, authsvc
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # the hook must not depend on objects a first install has not created yet
    spec = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in spec
    assert "envFrom" not in container
    env = {e["name"]: e for e in container["env"]}
    assert "pgbouncer" not in env["AUTH_DATABASE_URL"]["value"]  # DDL needs a real session
    secret = env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
    hook_secrets = [
        s
        for s in rendered.kind("Secret")
        if "pre-install" in s["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    ]
    if "pre-install" in hooks and not rendered.values.get("secrets", {}).get("existingSecret"):
        assert [s["metadata"]["name"] for s in hook_secrets] == [secret]
        assert int(hook_secrets[0]["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            job["metadata"]["annotations"]["helm.sh/hook-weight"]
        )
    else:
        assert hook_secrets == []


def test_cleanup_runs_as_a_cronjob_one_pass_at_a_time() -> None:
    rendered = render({})
    cron = rendered.one("CronJob", f"{rendered.fullname}-cleanup")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 0 and spec["failedJobsHistoryLimit"] >= 1
    (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "command" not in container
    assert container["args"] == ["cleanup"]
    server = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in server] == ["server"]


def test_cleanup_sidecar_replaces_the_cronjob() -> None:
    rendered = render(values_of("sidecar-cleanup"))
    assert rendered.kind("CronJob") == []
    containers_ = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in containers_ if c["name"] == "cleanup")
    assert sidecar["args"] == ["cleanup", "--loop", "--interval", "120", "--metrics-port", str(CLEANUP_METRICS_PORT)]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert "pgbouncer" not in env["AUTH_DATABASE_URL"]  # its advisory lock needs a session


def test_cleanup_mode_operator_leaves_the_cronjob_to_the_authconfig() -> None:
    rendered = render(values_of("operator-cleanup"))
    assert rendered.kind("CronJob") == []
    containers_ = rendered.one("Deployment", rendered.fullname)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers_] == ["server"]  # no sidecar either
    assert not [d for d in rendered.docs if d["metadata"]["name"] == f"{rendered.fullname}-cleanup"]
    # the operator creates it instead, and may touch that one CronJob only
    rules = rendered.one("Role", f"{rendered.fullname}-operator-reconcile")["rules"]
    assert {
        "apiGroups": ["batch"],
        "resources": ["cronjobs"],
        "resourceNames": [f"{rendered.fullname}-cleanup"],
        "verbs": ["get", "patch"],
    } in rules


def test_authsvc_containers_run_known_subcommands(rendered: Rendered) -> None:
    for _, container in authsvc_containers(rendered):
        assert container["args"][0] in SUBCOMMANDS


# ---- network policies --------------------------------------------------------------------------------


def test_network_policies_follow_the_switch(rendered: Rendered) -> None:
    policies = rendered.kind("NetworkPolicy")
    if rendered.values.get("networkPolicy", {}).get("enabled", True):
        selected = {
            p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") for p in policies
        }
        components = {
            pod["metadata"]["labels"]["app.kubernetes.io/component"]
            for doc, pod in rendered.pod_specs()
            if doc["metadata"]["labels"].get("app.kubernetes.io/component") != "operator"
        }
        # every component is covered (cleanup and migrate by the jobs policy's expression)
        assert components - {"cleanup", "migrate"} <= selected
        for policy in policies:
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    else:
        assert policies == []


def test_the_server_reaches_only_dns_pgbouncer_redis_and_otlp() -> None:
    policy = render({}).one("NetworkPolicy", FULLNAME)
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 6432, 6379}
    for rule in policy["spec"]["egress"]:
        if rule["ports"][0]["port"] != 53:
            assert rule["to"], rule  # no port open to the whole world
    ingress = policy["spec"]["ingress"]
    assert ingress == [{"from": [{"podSelector": {}}], "ports": [{"port": SERVER_PORT, "protocol": "TCP"}]}]

    external = render(values_of("external-db-redis")).one("NetworkPolicy", FULLNAME)
    ports = {p["port"] for rule in external["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 5433, 6380, 4318}  # OTLP/HTTP only: the image has no gRPC exporter


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches these labels: every matchLabels entry and every matchExpression."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        matched = {
            "In": key in labels and labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[expression["operator"]]
        if not matched:
            return False
    return True


def allows(rules: list[dict[str, Any]], direction: str, peer_labels: dict[str, str], port: int) -> bool:
    """Whether ingress ("from") or egress ("to") rules let a pod of the namespace with these labels through."""
    for rule in rules:
        if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
            continue
        peers = rule.get(direction)
        if peers is None or any(
            "podSelector" in peer and "namespaceSelector" not in peer and selects(peer["podSelector"], peer_labels)
            for peer in peers
        ):
            return True
    return False


def operator_cleanup_pod(rendered: Rendered) -> dict[str, Any]:
    """The pod template of the cleanup CronJob the operator builds from the rendered server Deployment."""
    authconfig = require("authsvc_operator.authconfig")  # the operator extra
    template = rendered.one("Deployment", rendered.fullname)["spec"]["template"]
    cronjob = authconfig.cronjob({}, authconfig.Names(rendered.fullname), "auth", template)
    pod: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    return pod


@pytest.mark.parametrize("values_case", ["defaults", "operator-cleanup", "external-db-behind-pgbouncer"])
def test_the_operators_cleanup_jobs_reach_the_database_through_pgbouncer(values_case: str) -> None:
    rendered = render(values_of(values_case))
    pod = operator_cleanup_pod(rendered)
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "cleanup"
    (container,) = pod["spec"]["containers"]
    url = {e["name"]: e.get("value") for e in container["env"]}["AUTH_DATABASE_URL"]
    assert f"@{rendered.fullname}-pgbouncer:6432/" in url  # the server's URL, so through PgBouncer
    pgbouncer_pod = rendered.one("Deployment", f"{rendered.fullname}-pgbouncer")["spec"]["template"]["metadata"]

    # the jobs policy is the one (and only one) that selects them, and lets them out to PgBouncer...
    policies = rendered.kind("NetworkPolicy")
    selecting = [p["metadata"]["name"] for p in policies if selects(p["spec"]["podSelector"], labels)]
    assert selecting == [f"{rendered.fullname}-jobs"]
    jobs = rendered.one("NetworkPolicy", f"{rendered.fullname}-jobs")
    assert allows(jobs["spec"]["egress"], "to", pgbouncer_pod["labels"], 6432)
    # ...and PgBouncer's policy lets them in
    pgbouncer = rendered.one("NetworkPolicy", f"{rendered.fullname}-pgbouncer")
    assert selects(pgbouncer["spec"]["podSelector"], pgbouncer_pod["labels"])
    assert allows(pgbouncer["spec"]["ingress"], "from", labels, 6432)
    assert not allows(pgbouncer["spec"]["ingress"], "from", {**labels, "app.kubernetes.io/component": "migrate"}, 6432)


def test_the_jobs_reach_pgbouncer_only_when_it_is_deployed() -> None:
    def ports(rendered: Rendered) -> set[int]:
        jobs = rendered.one("NetworkPolicy", f"{rendered.fullname}-jobs")
        return {p["port"] for rule in jobs["spec"]["egress"] for p in rule["ports"]}

    assert ports(render({})) == {53, 6432, 5432}
    assert ports(render(values_of("external-db-redis"))) == {53, 5433}
    assert [p["metadata"]["name"] for p in render(values_of("external-db-redis")).kind("NetworkPolicy")] == [
        FULLNAME,
        f"{FULLNAME}-jobs",
    ]


def test_in_chart_redis_and_postgresql_take_connections_only_from_the_platform() -> None:
    rendered = render({})
    for name in (f"{rendered.fullname}-redis", f"{rendered.fullname}-postgresql"):
        policy = rendered.one("NetworkPolicy", name)
        assert policy["spec"]["egress"] == []
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE


# ---- values documentation ----------------------------------------------------------------------------


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in {"config", "resources", "labels"}:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", readme, flags=re.MULTILINE))
    missing = set(leaf_keys(values)) - documented
    assert not missing, sorted(missing)


def test_every_value_has_a_comment_in_values_yaml() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^( {0,2})([A-Za-z][A-Za-z0-9_]*):", line)  # top two levels; deeper ones are parts
        if not match or match.group(2).startswith("AUTH_"):  # the settings are described by `config`'s comment
            continue
        before = lines[number - 1].strip() if number else ""
        assert before.startswith("#"), f"values.yaml line {number + 1}: {line.strip()} has no comment above it"


def test_schema_and_values_yaml_have_the_same_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    with helm.Chart.load(str(CHART)) as chart:
        schema = chart.schema
    assert schema is not None
    assert set(schema["properties"]) - {"global"} == set(values)


def test_the_generated_signing_key_loads_in_the_service(tmp_path: Path) -> None:
    keys = require("service.keys")
    secret = render({}).one("Secret", f"{FULLNAME}-signing-keys")
    for filename, content in secret["data"].items():
        (tmp_path / filename).write_bytes(base64.b64decode(content))
    loaded = keys.load(tmp_path, None)  # what the pod does with the mounted Secret (AUTH_KEYS_DIR)
    (kid,) = loaded.by_kid
    assert loaded.by_kid[kid].algorithm == "EdDSA"


def test_an_external_redis_without_auth_gets_no_password() -> None:
    values = {**values_of("external-db-redis"), "externalRedis": {"host": "cache", "auth": False}}
    values["secrets"] = {"databasePassword": "s3cret-pass"}
    rendered = render(values)
    server = rendered.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["AUTH_REDIS_URL"] == "redis://cache:6379/0"
    assert "REDIS_PASSWORD" not in env
    assert "redis-password" not in rendered.one("Secret", f"{FULLNAME}-credentials")["data"]


def test_the_probed_routes_exist_in_the_service() -> None:
    routes = require("service.routes")
    served = {route.path: route.methods for route in routes.ALL}
    for path in HEALTH_ROUTES.values():
        assert "GET" in served[path], path


# ---- OAuth: issuer, bootstrap client, CORS, Ingress -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "issuer"),
    [
        ({}, f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local"),
        ({"service": {"port": 8080}}, f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8080"),
        ({"ingress": {"enabled": True, "host": "auth.example.com"}}, "https://auth.example.com"),
        ({"ingress": {"enabled": True, "host": "auth.example.com"}, "oauth": {"issuer": "https://id.example.com/"}},
         "https://id.example.com"),
        ({"config": {"AUTH_JWT_ISSUER": "https://old.example.com"}}, "https://old.example.com"),  # deprecated
    ],
)
def test_the_issuer_comes_from_the_values_or_the_ingress_or_service_host(values: dict[str, Any], issuer: str) -> None:
    config = render(values).one("ConfigMap", f"{FULLNAME}-config")["data"]
    assert config["AUTH_ISSUER"] == issuer
    settings = require("service.config").Settings.from_environ(config)  # the service accepts it as its issuer
    assert settings.issuer == issuer


def test_the_bootstrap_client_gets_a_generated_secret_that_the_service_authenticates() -> None:
    rendered = render({})
    secret = rendered.one("Secret", f"{FULLNAME}-credentials")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # and lookup keeps it on upgrades
    generated = base64.b64decode(secret["data"]["bootstrap-client-secret"]).decode()
    assert len(generated) >= 32
    server = rendered.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in server["env"] if e["name"] == "AUTH_BOOTSTRAP_CLIENT_SECRET"]
    assert (ref["name"], ref["key"]) == (f"{FULLNAME}-credentials", "bootstrap-client-secret")
    config = rendered.one("ConfigMap", f"{FULLNAME}-config")["data"]
    settings = require("service.config").Settings.from_environ({**config, "AUTH_BOOTSTRAP_CLIENT_SECRET": generated})
    client, hashes = require("service.clients").builtin(settings, "bootstrap")
    assert client is not None and client.scopes == frozenset({"admin"}) and "client_credentials" in client.grant_types
    assert hashes == [require("service.clients").digest(generated)]


def test_a_given_bootstrap_secret_is_used_and_a_disabled_client_gets_none() -> None:
    given = render({"secrets": {"bootstrapClientSecret": "given-secret"}}).one("Secret", f"{FULLNAME}-credentials")
    assert base64.b64decode(given["data"]["bootstrap-client-secret"]) == b"given-secret"
    off = render({"oauth": {"bootstrapClient": {"enabled": False}}})
    assert "bootstrap-client-secret" not in off.one("Secret", f"{FULLNAME}-credentials")["data"]
    server = off.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    assert "AUTH_BOOTSTRAP_CLIENT_SECRET" not in {e["name"] for e in server["env"]}
    assert "AUTH_BOOTSTRAP_CLIENT_ID" not in off.one("ConfigMap", f"{FULLNAME}-config")["data"]


def test_cors_origins_reach_the_service_only_when_given() -> None:
    assert "AUTH_CORS_ORIGINS" not in render({}).one("ConfigMap", f"{FULLNAME}-config")["data"]
    config = render(values_of("ingress-oauth")).one("ConfigMap", f"{FULLNAME}-config")["data"]
    assert config["AUTH_CORS_ORIGINS"] == "https://app.example.com"
    assert require("service.config").Settings.from_environ(config).cors_origins == ("https://app.example.com",)


def test_the_ingress_exposes_the_public_routes_and_never_metrics_or_probes() -> None:
    assert render({}).kind("Ingress") == []
    (ingress,) = render(values_of("ingress-oauth")).kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "auth.example.com"
    assert ingress["spec"]["tls"] == [{"hosts": ["auth.example.com"], "secretName": "auth-tls"}]
    paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
    assert paths == {("/api/", "Prefix"), ("/oauth2/", "Prefix"), ("/.well-known/", "Prefix"), ("/", "Exact"),
                     ("/openapi.json", "Exact"), ("/account/", "Prefix")}  # the default mail links' pages
    assert {p["backend"]["service"]["port"]["name"] for p in rule["http"]["paths"]} == {"http"}
    served = {route.path for route in require("service.routes").ALL}
    for path, kind in paths:  # every exposed path leads somewhere the service serves
        assert any(route == path or (kind == "Prefix" and route.startswith(path)) for route in served), path


def test_mail_settings_reach_the_server_with_the_login_from_the_existing_secret() -> None:
    rendered = render(values_of("smtp-with-login"))
    config = rendered.one("ConfigMap", f"{FULLNAME}-config")["data"]
    assert (config["AUTH_SMTP_URL"], config["AUTH_SMTP_STARTTLS"]) == ("smtp://smtp.example.com:587", "true")
    assert config["AUTH_MAIL_FROM"] == "Auth <auth@example.com>"
    assert config["AUTH_REQUIRE_VERIFIED_EMAIL"] == "true" and config["AUTH_PASSWORD_MIN_LENGTH"] == "12"
    pod = rendered.one("Deployment", FULLNAME)["spec"]["template"]["spec"]
    [server] = [c for c in pod["containers"] if c["name"] == "server"]
    env = {e["name"]: e for e in server["env"]}
    assert env["AUTH_SMTP_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "smtp-login", "key": "username"}
    password_file = env["AUTH_SMTP_PASSWORD_FILE"]["value"]
    [mount] = [m for m in server["volumeMounts"] if m["name"] == "smtp-password"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "smtp-password"]
    assert password_file == f"{mount['mountPath']}/password" and mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "smtp-login"
    assert volume["secret"]["items"] == [{"key": "password", "path": "password"}]
    policy = rendered.one("NetworkPolicy", FULLNAME)
    [smtp] = [rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 587]
    assert smtp["to"] == [{"ipBlock": {"cidr": "192.0.2.0/24"}}]

    implicit = render({"mail": {"smtp": {"host": "smtp.example.com", "port": 465, "tls": "tls"}}})
    config = implicit.one("ConfigMap", f"{FULLNAME}-config")["data"]
    assert (config["AUTH_SMTP_URL"], config["AUTH_SMTP_STARTTLS"]) == ("smtps://smtp.example.com:465", "false")
    server = implicit.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    assert "AUTH_SMTP_USERNAME" not in {e["name"] for e in server["env"]}  # no Secret: no login
    assert "AUTH_SMTP_URL" not in render({}).one("ConfigMap", f"{FULLNAME}-config")["data"]  # files in the pod


def test_the_audit_key_is_generated_kept_in_the_credentials_secret_and_accepted_by_the_service() -> None:
    rendered = render({})
    generated = base64.b64decode(rendered.one("Secret", f"{FULLNAME}-credentials")["data"]["audit-key"]).decode()
    server = rendered.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in server["env"] if e["name"] == "AUTH_AUDIT_KEY"]
    assert (ref["name"], ref["key"], ref["optional"]) == (f"{FULLNAME}-credentials", "audit-key", True)
    config = rendered.one("ConfigMap", f"{FULLNAME}-config")["data"]
    settings = require("service.config").Settings.from_environ({**config, "AUTH_AUDIT_KEY": generated})
    assert str(settings.audit_key) == generated
    given = render({"secrets": {"auditKey": "a" * 32}}).one("Secret", f"{FULLNAME}-credentials")
    assert base64.b64decode(given["data"]["audit-key"]) == b"a" * 32
