"""Rendering the chart with the real Helm engine, once per set of values, and the facts tests compare against.

The Helm library (helm-python-sdk, ~250 MB) and the Kubernetes schemas come with the `k8s-test` extras.
Without them these tests are skipped on a laptop, so the rest of the suite still runs; in CI (`CI` set)
a missing package is an error instead, so the chart can never go untested there by accident.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "auth-platform"
# the official skaffold/v4beta14 JSON schema, vendored from shared/schemas: no sibling folder needed
SKAFFOLD_SCHEMA = Path(__file__).resolve().parent / "skaffold-v4beta14.json"
# KEDA's ScaledObject, written for these tests from KEDA's v1alpha1 CRD and scalers (see its $comment)
KEDA_SCHEMA = Path(__file__).resolve().parent / "keda-scaledobject-v1alpha1.json"
RELEASE = "auth"
NAMESPACE = "auth-system"

# Oldest and newest Kubernetes the chart supports; Chart.yaml's kubeVersion names the oldest.
KUBE_VERSIONS = ("1.29.0", "1.37.0")

# The service's routes (DESIGN.md §2): probes and scrapes must point at these.
HEALTH_ROUTES = {"startup": "/health/startup", "readiness": "/health/readiness", "liveness": "/health/liveness"}
METRICS_ROUTE = "/metrics"
SERVER_PORT = 8000
CLEANUP_METRICS_PORT = 9102  # `authsvc cleanup --loop --metrics-port`, the sidecar's own /metrics
SUBCOMMANDS = ("serve", "migrate", "cleanup", "keys")

EXTERNAL = {
    "postgresql": {"enabled": False},
    "externalDatabase": {"host": "pg.example.internal", "port": 5433, "params": "ssl=require"},
    "redis": {"enabled": False},
    "externalRedis": {"host": "redis.example.internal", "port": 6380, "db": 2, "tls": True},
    "secrets": {"databasePassword": "s3cret-pass", "redisPassword": "r3dis-pass"},
}

# The value sets every test runs against.
MATRIX: dict[str, dict[str, Any] | str] = {
    "defaults": {},
    "external-db-redis": {
        **EXTERNAL,
        "pgbouncer": {"enabled": False},
        "otel": {"enabled": True, "endpoint": "http://otel-collector.observability:4318"},
        "networkPolicy": {
            "externalDatabaseTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            "otlpTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}],
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "external-db-behind-pgbouncer": {**EXTERNAL},
    "sidecar-cleanup": {
        "cleanup": {"mode": "sidecar", "interval": 120},
        "redis": {"persistence": {"enabled": True}},
        "serviceMonitor": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "folder": "Auth"},
    },
    "operator-cleanup": {"cleanup": {"mode": "operator"}},  # an AuthConfig owns <fullname>-cleanup
    # an AuthConfig owns the cleanup CronJob and rotates the keys Secret too
    "operator-signing-keys": {"cleanup": {"mode": "operator"}, "signingKeys": {"managedByOperator": True}},
    # AuthClients in two namespaces, the release's own namespace closed to its other pods
    "operator-clients": {
        "operator": {"clientNamespaces": ["shop", "billing"]}, "networkPolicy": {"allowSameNamespace": False}
    },
    "single-replica-no-hpa": {"autoscaling": {"enabled": False}, "server": {"replicaCount": 1}},
    "existing-secrets": {
        "secrets": {"existingSecret": "auth-creds"},
        "signingKeys": {"existingSecret": "auth-keys", "activeKeyId": "2026-01"},
    },
    "external-db-existing-secret": {
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "pg.example.internal"},
        "secrets": {"existingSecret": "auth-creds"},
    },
    "network-policy-off": {"networkPolicy": {"enabled": False}},
    "smtp-with-login": {
        "mail": {
            "from": "Auth <auth@example.com>",
            "smtp": {"host": "smtp.example.com", "existingSecret": "smtp-login"},
        },
        "networkPolicy": {"smtpTo": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]},
        "config": {
            "AUTH_PASSWORD_RESET_URL": "https://app.example.com/reset#token={token}",
            "AUTH_REQUIRE_VERIFIED_EMAIL": True,
            "AUTH_PASSWORD_MIN_LENGTH": 12,
        },
    },
    "ingress-oauth": {
        "ingress": {"enabled": True, "className": "nginx", "host": "auth.example.com", "tlsSecretName": "auth-tls"},
        "oauth": {
            "corsOrigins": ["https://app.example.com"], "bootstrapClient": {"clientId": "ops", "scopes": "admin"}
        },
        "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}]},
    },
    "hash-load-prometheus-adapter": {
        "autoscaling": {"hashLoad": {"enabled": True}}, "serviceMonitor": {"enabled": True}
    },
    "hash-load-keda": {
        "autoscaling": {
            "targetMemoryUtilizationPercentage": 80,
            "hashLoad": {
                "enabled": True, "provider": "keda", "keda": {
                    "serverAddress": "http://prometheus-operated.monitoring:9090", "authenticationRef": "prometheus"
                },
            },
        },
        "serviceMonitor": {"enabled": True},
    },
    "skaffold-dev": "values-dev.yaml",  # a values file of the chart
}


def require(module: str) -> ModuleType:
    """Import a test dependency: skip without it locally, fail without it in CI."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} needs the project's dependencies and k8s-test extras")


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One `helm template`: the manifests by template path, and every document parsed."""

    values: dict[str, Any]
    manifests: dict[str, str]
    docs: tuple[dict[str, Any], ...]

    @property
    def fullname(self) -> str:
        override: str = self.values.get("fullnameOverride") or f"{RELEASE}-auth-platform"
        return override

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(owning document, pod template metadata+spec) of every workload."""
        for doc in self.docs:
            spec = doc.get("spec", {})
            if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
                yield doc, spec["template"]
            elif doc["kind"] == "CronJob":
                yield doc, spec["jobTemplate"]["spec"]["template"]
            elif doc["kind"] == "Pod":
                yield doc, doc


def values_of(case: str) -> dict[str, Any]:
    yaml = require("yaml")
    values = MATRIX[case]
    if isinstance(values, str):
        loaded: dict[str, Any] = yaml.safe_load((CHART / values).read_text())
        return loaded
    return values


@functools.cache
def _render(values_json: str) -> Rendered:
    helm = require("helm_python")
    yaml = require("yaml")
    values = json.loads(values_json)
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(values, manifests, tuple(docs))


def render(values: dict[str, Any]) -> Rendered:
    """Render with the given values; the same values are rendered once per session."""
    return _render(json.dumps(values, sort_keys=True))
