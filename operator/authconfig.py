"""AuthConfig → the objects that carry it: pure functions, no API calls, no clock.

An AuthConfig names a service Deployment (``spec.targetRef``). From its spec we render

* ``<target>-overrides``: a ConfigMap of ``AUTH_*`` settings. The chart's pod template lists it in
  ``envFrom`` after the chart's own ConfigMap, so these values win and Helm and the operator never
  write the same object;
* ``<target>-pgbouncer-overrides``: a ``pgbouncer.ini`` fragment that the chart's PgBouncer init
  container appends to its own ini (later settings win);
* ``<target>-cleanup``: the CronJob running ``authsvc cleanup`` with the service container's image and
  environment;
* a checksum of each ConfigMap, stamped on the matching pod template so a change rolls the pods.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from service import config as service_config

GROUP = "auth.platform.dev"
VERSION = "v1alpha1"
PLURAL = "authconfigs"
KIND = "AuthConfig"

CONFIG_CHECKSUM = f"{GROUP}/config-checksum"  # on the service's pod template
PGBOUNCER_CHECKSUM = f"{GROUP}/pgbouncer-checksum"  # on PgBouncer's pod template
CHECKSUM = f"{GROUP}/checksum"  # on each ConfigMap, of its own data
OWNER_LABEL = f"{GROUP}/authconfig"
MANAGED_BY = "authconfig-operator"

# Every default, mirrored by the CRD's schema defaults (a test keeps the two in step) so an object
# written before a field existed renders the same as one the API server defaulted.
DEFAULTS: dict[str, Any] = {
    "targetRef": {"kind": "Deployment"},
    "database": {"pool": {"size": 10, "maxOverflow": 10, "timeoutSeconds": 5, "recycleSeconds": 1800}},
    "pgbouncer": {"poolMode": "transaction", "defaultPoolSize": 20, "maxClientConn": 1000},
    "rateLimits": {
        "enabled": True,
        "perIp": "1200/minute",
        "routes": {
            "register": "10/minute",
            "token": "30/minute",
            "tokenPerUser": "10/minute",
            "refresh": "60/minute",
            "introspect": "6000/minute",
        },
        "backoff": {"baseSeconds": 1, "capSeconds": 300},
        "trustedProxies": [],
    },
    "passwords": {"bcryptCost": 12, "hashQueueSize": 64, "minLength": 8, "blocklist": True},
    "tokens": {
        "accessTtlSeconds": 900,
        "refreshTtlSeconds": 604800,
        "sessionMaxAgeSeconds": 2592000,
        "reuseGraceSeconds": 0,
        "clientCredentialsTtlSeconds": 900,
    },
    "accounts": {
        "passwordResetUrl": "",
        "emailVerificationUrl": "",
        "passwordResetTtlSeconds": 1800,
        "emailVerificationTtlSeconds": 86400,
        "requireVerifiedEmail": False,
        "registrationEnumerationSafe": False,
    },
    "mail": {"from": "", "smtp": {"host": "", "port": 587, "tls": "starttls"}},
    "cors": {"allowedOrigins": []},
    "cleanup": {"schedule": "*/10 * * * *", "batchSize": 1000, "retentionSeconds": 604800},
}

# The cleanup CronJob's fixed knobs: the chart's defaults for its own cleanup CronJob.
CLEANUP_TIME_ZONE = "Etc/UTC"
CLEANUP_STARTING_DEADLINE = 300
CLEANUP_ACTIVE_DEADLINE = 1800
CLEANUP_BACKOFF_LIMIT = 1
CLEANUP_RESOURCES = {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


class InvalidSpec(ValueError):
    """The spec renders to settings the service would refuse at start; the message says which."""


@dataclasses.dataclass(frozen=True)
class Names:
    target: str

    @property
    def overrides(self) -> str:
        return f"{self.target}-overrides"

    @property
    def pgbouncer_overrides(self) -> str:
        return f"{self.target}-pgbouncer-overrides"

    @property
    def pgbouncer(self) -> str:
        return f"{self.target}-pgbouncer"

    @property
    def cleanup(self) -> str:
        return f"{self.target}-cleanup"


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with every absent field filled from DEFAULTS (as the API server's defaulting does)."""
    return _merge(DEFAULTS, spec)


def settings_env(spec: Mapping[str, Any]) -> dict[str, str]:
    """The ``AUTH_*`` variables this spec sets, exactly as ``service.config`` reads them."""
    s = with_defaults(spec)
    pool, rates, hashing, tokens, cleanup = (
        s["database"]["pool"], s["rateLimits"], s["passwords"], s["tokens"], s["cleanup"]
    )
    routes, backoff = rates["routes"], rates["backoff"]
    accounts, mail = s["accounts"], s["mail"]
    env = {
        "AUTH_DB_POOL_SIZE": _text(pool["size"]),
        "AUTH_DB_MAX_OVERFLOW": _text(pool["maxOverflow"]),
        "AUTH_DB_POOL_TIMEOUT": _text(pool["timeoutSeconds"]),
        "AUTH_DB_POOL_RECYCLE": _text(pool["recycleSeconds"]),
        "AUTH_RATE_LIMIT_ENABLED": _text(rates["enabled"]),
        "AUTH_RATE_LIMIT_IP": rates["perIp"],
        "AUTH_RATE_LIMIT_REGISTER": routes["register"],
        "AUTH_RATE_LIMIT_TOKEN": routes["token"],
        "AUTH_RATE_LIMIT_TOKEN_PER_USER": routes["tokenPerUser"],
        "AUTH_RATE_LIMIT_REFRESH": routes["refresh"],
        "AUTH_RATE_LIMIT_INTROSPECT": routes["introspect"],
        "AUTH_LOGIN_BACKOFF_BASE": _text(backoff["baseSeconds"]),
        "AUTH_LOGIN_BACKOFF_CAP": _text(backoff["capSeconds"]),
        "AUTH_TRUSTED_PROXIES": ",".join(rates["trustedProxies"]),
        "AUTH_BCRYPT_COST": _text(hashing["bcryptCost"]),
        "AUTH_HASH_QUEUE_SIZE": _text(hashing["hashQueueSize"]),
        "AUTH_ACCESS_TOKEN_TTL": _text(tokens["accessTtlSeconds"]),
        "AUTH_REFRESH_TOKEN_TTL": _text(tokens["refreshTtlSeconds"]),
        "AUTH_SESSION_MAX_AGE": _text(tokens["sessionMaxAgeSeconds"]),
        "AUTH_REFRESH_REUSE_GRACE": _text(tokens["reuseGraceSeconds"]),
        "AUTH_CLIENT_TOKEN_TTL": _text(tokens["clientCredentialsTtlSeconds"]),
        "AUTH_CORS_ORIGINS": ",".join(s["cors"]["allowedOrigins"]),
        "AUTH_CLEANUP_BATCH_SIZE": _text(cleanup["batchSize"]),
        "AUTH_CLEANUP_RETENTION": _text(cleanup["retentionSeconds"]),
        "AUTH_PASSWORD_MIN_LENGTH": _text(hashing["minLength"]),
        "AUTH_PASSWORD_BLOCKLIST": _text(hashing["blocklist"]),
        "AUTH_PASSWORD_RESET_TTL": _text(accounts["passwordResetTtlSeconds"]),
        "AUTH_EMAIL_VERIFICATION_TTL": _text(accounts["emailVerificationTtlSeconds"]),
        "AUTH_REQUIRE_VERIFIED_EMAIL": _text(accounts["requireVerifiedEmail"]),
        "AUTH_REGISTRATION_ENUMERATION_SAFE": _text(accounts["registrationEnumerationSafe"]),
    }
    # empty means "not set here": the chart's value (a URL, an address) stays in force
    optional = {
        "AUTH_PASSWORD_RESET_URL": accounts["passwordResetUrl"],
        "AUTH_EMAIL_VERIFICATION_URL": accounts["emailVerificationUrl"],
        "AUTH_MAIL_FROM": mail["from"],
    }
    env.update({name: value for name, value in optional.items() if value})
    smtp = mail["smtp"]
    if smtp["host"]:
        scheme = "smtps" if smtp["tls"] == "tls" else "smtp"
        env["AUTH_SMTP_URL"] = f"{scheme}://{smtp['host']}:{int(smtp['port'])}"
        env["AUTH_SMTP_STARTTLS"] = _text(smtp["tls"] == "starttls")
    return env


def validate(env: Mapping[str, str]) -> None:
    """Refuse what the service would refuse at start, with its own message (it names the variable).

    The CRD's schema catches most of it at admission; this catches the rest (a CIDR the schema's
    pattern lets through, an object stored before a rule existed) before any pod sees it.
    """
    try:
        service_config.Settings.from_environ(env)
    except service_config.ConfigError as exc:
        raise InvalidSpec(str(exc)) from None


def pgbouncer_ini(spec: Mapping[str, Any]) -> str:
    pgb = with_defaults(spec)["pgbouncer"]
    return (
        "; written by the authconfig operator; appended to the chart's pgbouncer.ini, so these win\n"
        "[pgbouncer]\n"
        f"pool_mode = {pgb['poolMode']}\n"
        f"default_pool_size = {int(pgb['defaultPoolSize'])}\n"
        f"max_client_conn = {int(pgb['maxClientConn'])}\n"
    )


def checksum(data: Mapping[str, str]) -> str:
    canonical = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def configmap(name: str, owner: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels(owner), "annotations": {CHECKSUM: checksum(data)}},
        "data": dict(data),
    }


def labels(owner: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, OWNER_LABEL: owner}


def server_container(template: Mapping[str, Any], overrides: str) -> dict[str, Any]:
    """The authsvc container of a pod template: the one reading the overrides, else the first."""
    containers: list[dict[str, Any]] = list(template.get("spec", {}).get("containers", []))
    if not containers:
        raise InvalidSpec("the target Deployment's pod template has no containers")
    for container in containers:
        if reads_configmap(container, overrides):
            return container
    return containers[0]


def reads_configmap(container: Mapping[str, Any], name: str) -> bool:
    return any(ref.get("configMapRef", {}).get("name") == name for ref in container.get("envFrom", []))


def cronjob(spec: Mapping[str, Any], names: Names, owner: str, template: Mapping[str, Any]) -> dict[str, Any]:
    """The cleanup CronJob, built from the service's own pod template.

    The Job gets the service container's image, ``envFrom`` (so the same ConfigMaps, this operator's
    included) and ``env`` (so the same credentials), then a pool of one connection: a pass runs one
    short transaction at a time. Its advisory lock is transaction-scoped, so going through PgBouncer
    in transaction mode is fine (see ``service/cleanup.py``).
    """
    schedule = with_defaults(spec)["cleanup"]["schedule"]
    server = server_container(template, names.overrides)
    pod_spec: Mapping[str, Any] = template.get("spec", {})
    env_from = copy.deepcopy(list(server.get("envFrom", [])))
    if not reads_configmap(server, names.overrides):
        env_from.append({"configMapRef": {"name": names.overrides, "optional": True}})
    own = {"AUTH_DB_POOL_SIZE": "1", "AUTH_DB_MAX_OVERFLOW": "0"}
    env = [entry for entry in copy.deepcopy(list(server.get("env", []))) if entry.get("name") not in own]
    env += [{"name": key, "value": value} for key, value in own.items()]
    pod_labels = _pod_labels(template, owner)
    pod_security = {
        **copy.deepcopy(dict(pod_spec.get("securityContext", {}))),
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container: dict[str, Any] = {
        "name": "cleanup",
        "image": server["image"],
        "imagePullPolicy": server.get("imagePullPolicy", "IfNotPresent"),
        "command": ["authsvc", "cleanup"],
        "envFrom": env_from,
        "env": env,
        "resources": copy.deepcopy(CLEANUP_RESOURCES),
        "securityContext": copy.deepcopy(RESTRICTED_CONTAINER),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir, not the host's
    }
    job_pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if pod_spec.get("serviceAccountName"):
        job_pod_spec["serviceAccountName"] = pod_spec["serviceAccountName"]
    if pod_spec.get("imagePullSecrets"):
        job_pod_spec["imagePullSecrets"] = copy.deepcopy(pod_spec["imagePullSecrets"])
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": names.cleanup, "labels": labels(owner)},
        "spec": {
            "schedule": schedule,
            "timeZone": CLEANUP_TIME_ZONE,
            "concurrencyPolicy": "Forbid",  # a slow pass is never joined by the next one
            "startingDeadlineSeconds": CLEANUP_STARTING_DEADLINE,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "backoffLimit": CLEANUP_BACKOFF_LIMIT,
                    "activeDeadlineSeconds": CLEANUP_ACTIVE_DEADLINE,
                    "template": {"metadata": {"labels": pod_labels}, "spec": job_pod_spec},
                },
            },
        },
    }


def wiring_warnings(template: Mapping[str, Any], names: Names, env: Mapping[str, str]) -> list[str]:
    """Ways the target's pod template would keep these settings from its pods."""
    server = server_container(template, names.overrides)
    warnings = []
    if not reads_configmap(server, names.overrides):
        warnings.append(
            f"Deployment {names.target} does not list ConfigMap {names.overrides} in envFrom: "
            "its pods do not see these settings"
        )
    shadowed = sorted({entry.get("name") for entry in server.get("env", [])} & set(env))
    if shadowed:
        warnings.append(
            f"Deployment {names.target} sets {', '.join(shadowed)} in its container's env, which wins over "
            "envFrom: the AuthConfig's values for these do not apply"
        )
    return warnings


def pool_warnings(spec: Mapping[str, Any], replicas: int, pgbouncer_replicas: int | None) -> list[str]:
    """Sizing problems worth a warning, not a rejection: the replica count is the cluster's, not the spec's."""
    s = with_defaults(spec)
    pool, pgb = s["database"]["pool"], s["pgbouncer"]
    clients = replicas * (int(pool["size"]) + int(pool["maxOverflow"]))
    warnings = []
    if pgbouncer_replicas is not None and clients > int(pgb["maxClientConn"]):
        warnings.append(
            f"{replicas} service pods x (pool size {pool['size']} + overflow {pool['maxOverflow']}) = {clients} "
            f"client connections can exceed one PgBouncer's maxClientConn {pgb['maxClientConn']}: raise "
            "pgbouncer.maxClientConn or lower the pool"
        )
    if pgbouncer_replicas is not None and pgb["poolMode"] == "session":
        servers = pgbouncer_replicas * int(pgb["defaultPoolSize"])
        if clients > servers:
            warnings.append(
                f"in session mode every client connection holds a server connection: {clients} client "
                f"connections share {pgbouncer_replicas} x defaultPoolSize {pgb['defaultPoolSize']} = {servers}; "
                "the rest wait"
            )
    return warnings


def _pod_labels(template: Mapping[str, Any], owner: str) -> dict[str, str]:
    # The chart's name/instance labels (so its NetworkPolicies treat the Job like the chart's own
    # cleanup) with the component set to cleanup: never the server's, or its Service would select it.
    inherited = template.get("metadata", {}).get("labels", {})
    keep = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/part-of")
    return {
        **{key: inherited[key] for key in keep if key in inherited},
        "app.kubernetes.io/component": "cleanup",
        **labels(owner),
    }


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = copy.deepcopy(value)
    return merged


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
