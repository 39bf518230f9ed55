"""Rendering, spec → ConfigMap data, PgBouncer fragment, CronJob, warnings: pure functions, plain dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from authsvc_operator import authconfig
from service.config import Settings
from tests.operator import conftest, schema

MINIMAL = {"targetRef": {"name": "auth"}}
NAMES = authconfig.Names("auth")


def spec_with(path: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(MINIMAL)
    node = spec
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return spec


def test_an_empty_spec_renders_exactly_the_services_own_defaults() -> None:
    env = authconfig.settings_env(MINIMAL)
    assert Settings.from_environ(env) == Settings.from_environ({})


def test_every_default_is_rendered_as_the_service_reads_it() -> None:
    assert authconfig.settings_env(MINIMAL) == {
        "AUTH_DB_POOL_SIZE": "10",
        "AUTH_DB_MAX_OVERFLOW": "10",
        "AUTH_DB_POOL_TIMEOUT": "5",
        "AUTH_DB_POOL_RECYCLE": "1800",
        "AUTH_RATE_LIMIT_ENABLED": "true",
        "AUTH_RATE_LIMIT_IP": "1200/minute",
        "AUTH_RATE_LIMIT_REGISTER": "10/minute",
        "AUTH_RATE_LIMIT_TOKEN": "30/minute",
        "AUTH_RATE_LIMIT_TOKEN_PER_USER": "10/minute",
        "AUTH_RATE_LIMIT_REFRESH": "60/minute",
        "AUTH_RATE_LIMIT_INTROSPECT": "6000/minute",
        "AUTH_LOGIN_BACKOFF_BASE": "1",
        "AUTH_LOGIN_BACKOFF_CAP": "300",
        "AUTH_TRUSTED_PROXIES": "",
        "AUTH_BCRYPT_COST": "12",
        "AUTH_HASH_QUEUE_SIZE": "64",
        "AUTH_ACCESS_TOKEN_TTL": "900",
        "AUTH_REFRESH_TOKEN_TTL": "604800",
        "AUTH_SESSION_MAX_AGE": "2592000",
        "AUTH_REFRESH_REUSE_GRACE": "0",
        "AUTH_CLIENT_TOKEN_TTL": "900",
        "AUTH_CORS_ORIGINS": "",
        "AUTH_CLEANUP_BATCH_SIZE": "1000",
        "AUTH_CLEANUP_RETENTION": "604800",
        "AUTH_PASSWORD_MIN_LENGTH": "8",
        "AUTH_PASSWORD_BLOCKLIST": "true",
        "AUTH_PASSWORD_RESET_TTL": "1800",
        "AUTH_EMAIL_VERIFICATION_TTL": "86400",
        "AUTH_REQUIRE_VERIFIED_EMAIL": "false",
        "AUTH_REGISTRATION_ENUMERATION_SAFE": "false",
    }


def test_the_operators_defaults_are_the_crds_defaults() -> None:
    stored = schema.defaulted({"spec": MINIMAL})["spec"]
    assert stored == authconfig.with_defaults(MINIMAL)


def test_every_variable_the_operator_writes_is_documented_in_the_configuration_reference() -> None:
    documented = (schema.ROOT / "docs" / "configuration.md").read_text()
    for name in authconfig.settings_env(MINIMAL):
        assert f"`{name}`" in documented, name


@pytest.mark.parametrize(
    ("path", "value", "variable", "rendered"),
    [
        ("database.pool.size", 25, "AUTH_DB_POOL_SIZE", "25"),
        ("database.pool.maxOverflow", 0, "AUTH_DB_MAX_OVERFLOW", "0"),
        ("database.pool.timeoutSeconds", 2.5, "AUTH_DB_POOL_TIMEOUT", "2.5"),
        ("database.pool.timeoutSeconds", 7.0, "AUTH_DB_POOL_TIMEOUT", "7"),
        ("database.pool.recycleSeconds", -1, "AUTH_DB_POOL_RECYCLE", "-1"),
        ("rateLimits.enabled", False, "AUTH_RATE_LIMIT_ENABLED", "false"),
        ("rateLimits.perIp", "100 per hour", "AUTH_RATE_LIMIT_IP", "100 per hour"),
        ("rateLimits.routes.register", "5/minute", "AUTH_RATE_LIMIT_REGISTER", "5/minute"),
        ("rateLimits.routes.token", "20/minute", "AUTH_RATE_LIMIT_TOKEN", "20/minute"),
        ("rateLimits.routes.tokenPerUser", "3/minute", "AUTH_RATE_LIMIT_TOKEN_PER_USER", "3/minute"),
        ("rateLimits.routes.refresh", "2/second", "AUTH_RATE_LIMIT_REFRESH", "2/second"),
        ("rateLimits.routes.introspect", "100/second", "AUTH_RATE_LIMIT_INTROSPECT", "100/second"),
        ("rateLimits.backoff.baseSeconds", 0.5, "AUTH_LOGIN_BACKOFF_BASE", "0.5"),
        ("rateLimits.backoff.capSeconds", 60, "AUTH_LOGIN_BACKOFF_CAP", "60"),
        ("rateLimits.trustedProxies", ["10.0.0.0/8", "fd00::/8"], "AUTH_TRUSTED_PROXIES", "10.0.0.0/8,fd00::/8"),
        ("passwords.bcryptCost", 14, "AUTH_BCRYPT_COST", "14"),
        ("passwords.hashQueueSize", 0, "AUTH_HASH_QUEUE_SIZE", "0"),
        ("tokens.accessTtlSeconds", 300, "AUTH_ACCESS_TOKEN_TTL", "300"),
        ("tokens.refreshTtlSeconds", 86400, "AUTH_REFRESH_TOKEN_TTL", "86400"),
        ("tokens.sessionMaxAgeSeconds", 172800, "AUTH_SESSION_MAX_AGE", "172800"),
        ("tokens.reuseGraceSeconds", 10, "AUTH_REFRESH_REUSE_GRACE", "10"),
        ("tokens.clientCredentialsTtlSeconds", 3600, "AUTH_CLIENT_TOKEN_TTL", "3600"),
        ("cors.allowedOrigins", ["https://app.example.com", "http://localhost:3000"], "AUTH_CORS_ORIGINS",
         "https://app.example.com,http://localhost:3000"),
        ("cleanup.batchSize", 500, "AUTH_CLEANUP_BATCH_SIZE", "500"),
        ("cleanup.retentionSeconds", 0, "AUTH_CLEANUP_RETENTION", "0"),
        ("passwords.minLength", 15, "AUTH_PASSWORD_MIN_LENGTH", "15"),
        ("passwords.blocklist", False, "AUTH_PASSWORD_BLOCKLIST", "false"),
        ("accounts.passwordResetUrl", "https://app.example/r#token={token}", "AUTH_PASSWORD_RESET_URL",
         "https://app.example/r#token={token}"),
        ("accounts.emailVerificationUrl", "https://app.example/v#token={token}", "AUTH_EMAIL_VERIFICATION_URL",
         "https://app.example/v#token={token}"),
        ("accounts.passwordResetTtlSeconds", 600, "AUTH_PASSWORD_RESET_TTL", "600"),
        ("accounts.emailVerificationTtlSeconds", 3600, "AUTH_EMAIL_VERIFICATION_TTL", "3600"),
        ("accounts.requireVerifiedEmail", True, "AUTH_REQUIRE_VERIFIED_EMAIL", "true"),
        ("accounts.registrationEnumerationSafe", True, "AUTH_REGISTRATION_ENUMERATION_SAFE", "true"),
        ("mail.from", "Auth <auth@example.com>", "AUTH_MAIL_FROM", "Auth <auth@example.com>"),
    ],
)
def test_each_field_sets_its_variable_and_only_that(path: str, value: Any, variable: str, rendered: str) -> None:
    env = authconfig.settings_env(spec_with(path, value))
    assert env[variable] == rendered
    others = {k: v for k, v in env.items() if k != variable}
    assert others == {k: v for k, v in authconfig.settings_env(MINIMAL).items() if k != variable}
    authconfig.validate(env)


def test_a_value_the_service_would_refuse_is_an_invalid_spec_naming_the_variable() -> None:
    env = authconfig.settings_env(spec_with("rateLimits.trustedProxies", ["10.0.0.0/33"]))
    with pytest.raises(authconfig.InvalidSpec, match="AUTH_TRUSTED_PROXIES"):
        authconfig.validate(env)


def test_a_backoff_cap_below_its_base_is_refused_like_the_service_does() -> None:
    spec = spec_with("rateLimits.backoff", {"baseSeconds": 30, "capSeconds": 10})
    with pytest.raises(authconfig.InvalidSpec, match="AUTH_LOGIN_BACKOFF_CAP"):
        authconfig.validate(authconfig.settings_env(spec))


def test_pgbouncer_fragment_has_its_section_header_and_the_three_settings() -> None:
    assert authconfig.pgbouncer_ini(MINIMAL).splitlines()[1:] == [
        "[pgbouncer]",
        "pool_mode = transaction",
        "default_pool_size = 20",
        "max_client_conn = 1000",
    ]
    custom = {**MINIMAL, "pgbouncer": {"poolMode": "session", "defaultPoolSize": 50, "maxClientConn": 2000}}
    assert "pool_mode = session\ndefault_pool_size = 50\nmax_client_conn = 2000\n" in authconfig.pgbouncer_ini(custom)


def test_the_checksum_ignores_key_order_and_follows_every_value() -> None:
    env = authconfig.settings_env(MINIMAL)
    assert authconfig.checksum(env) == authconfig.checksum(dict(reversed(list(env.items()))))
    assert authconfig.checksum(env) != authconfig.checksum({**env, "AUTH_BCRYPT_COST": "13"})
    assert len(authconfig.checksum(env)) == 64


def test_the_configmap_carries_the_data_its_checksum_and_who_wrote_it() -> None:
    data = {"AUTH_BCRYPT_COST": "13"}
    cm = authconfig.configmap("auth-overrides", "prod", data)
    assert cm["metadata"]["name"] == "auth-overrides"
    assert cm["data"] == data
    assert cm["metadata"]["annotations"] == {"auth.platform.dev/checksum": authconfig.checksum(data)}
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "authconfig-operator",
        "auth.platform.dev/authconfig": "prod",
    }


def test_child_names_follow_the_chart() -> None:
    assert (NAMES.overrides, NAMES.pgbouncer_overrides, NAMES.pgbouncer, NAMES.cleanup) == (
        "auth-overrides", "auth-pgbouncer-overrides", "auth-pgbouncer", "auth-cleanup"
    )


class TestCronJob:
    template = conftest.service_deployment()["spec"]["template"]

    def render(self, spec: dict[str, Any] = MINIMAL, template: dict[str, Any] | None = None) -> dict[str, Any]:
        return authconfig.cronjob(spec, NAMES, "auth", self.template if template is None else template)

    def test_runs_authsvc_cleanup_on_the_default_schedule_one_at_a_time(self) -> None:
        cron = self.render()
        assert cron["metadata"]["name"] == "auth-cleanup"
        assert cron["spec"]["schedule"] == "*/10 * * * *"
        assert cron["spec"]["timeZone"] == "Etc/UTC"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["authsvc", "cleanup"]

    def test_has_deadlines_and_history_limits(self) -> None:
        spec = self.render()["spec"]
        assert spec["startingDeadlineSeconds"] == 300
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 1800
        assert spec["jobTemplate"]["spec"]["backoffLimit"] == 1
        assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (1, 3)
        assert spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"

    def test_the_schedule_comes_from_the_spec(self) -> None:
        assert self.render(spec_with("cleanup.schedule", "@hourly"))["spec"]["schedule"] == "@hourly"

    def test_is_restricted(self) -> None:
        pod = self.render()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108 - an emptyDir
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]

    def test_uses_the_service_containers_image_config_and_credentials_with_a_pool_of_one(self) -> None:
        pod = self.render()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        server = self.template["spec"]["containers"][0]
        assert container["image"] == server["image"]
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["envFrom"] == server["envFrom"]
        names = [entry["name"] for entry in container["env"]]
        assert names == ["DATABASE_PASSWORD", "AUTH_DATABASE_URL", "AUTH_DB_POOL_SIZE", "AUTH_DB_MAX_OVERFLOW"]
        assert container["env"][2:] == [
            {"name": "AUTH_DB_POOL_SIZE", "value": "1"},
            {"name": "AUTH_DB_MAX_OVERFLOW", "value": "0"},
        ]
        assert pod["serviceAccountName"] == "auth"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]

    def test_sizes_its_own_pool_whatever_the_service_container_sets(self) -> None:
        template = copy.deepcopy(self.template)
        template["spec"]["containers"][0]["env"].append({"name": "AUTH_DB_POOL_SIZE", "value": "50"})
        (container,) = self.render(template=template)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert [e for e in container["env"] if e["name"] == "AUTH_DB_POOL_SIZE"] == [
            {"name": "AUTH_DB_POOL_SIZE", "value": "1"}
        ]

    def test_reads_the_overrides_even_when_the_service_does_not_list_them(self) -> None:
        template = copy.deepcopy(self.template)
        template["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "auth-config"}}]
        (container,) = self.render(template=template)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"][-1] == {"configMapRef": {"name": "auth-overrides", "optional": True}}

    def test_labels_its_pods_as_cleanup_never_as_the_server(self) -> None:
        labels = self.render()["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "cleanup"
        assert labels["app.kubernetes.io/instance"] == "auth"
        assert labels["auth.platform.dev/authconfig"] == "auth"

    def test_picks_the_container_that_reads_the_overrides(self) -> None:
        template = copy.deepcopy(self.template)
        template["spec"]["containers"].insert(0, {"name": "sidecar", "image": "other:1"})
        assert authconfig.server_container(template, "auth-overrides")["name"] == "server"
        assert authconfig.server_container({"spec": {"containers": [{"name": "a"}]}}, "x")["name"] == "a"
        with pytest.raises(authconfig.InvalidSpec):
            authconfig.server_container({"spec": {"containers": []}}, "x")


@pytest.mark.parametrize(
    ("spec", "replicas", "pgbouncer_replicas", "expected"),
    [
        (MINIMAL, 3, 2, []),  # 3 x 20 = 60 clients ≤ 1000
        (spec_with("database.pool", {"size": 200, "maxOverflow": 200}), 3, 2, ["maxClientConn 1000"]),
        (spec_with("pgbouncer.poolMode", "session"), 3, 2, ["session mode"]),  # 60 > 2 x 20
        (spec_with("pgbouncer.poolMode", "session"), 1, 2, []),  # 20 ≤ 40
        (spec_with("database.pool", {"size": 200, "maxOverflow": 200}), 3, None, []),  # no PgBouncer
    ],
)
def test_pool_sizing_problems_are_warnings(
    spec: dict[str, Any], replicas: int, pgbouncer_replicas: int | None, expected: list[str]
) -> None:
    warnings = authconfig.pool_warnings(spec, replicas, pgbouncer_replicas)
    assert len(warnings) == len(expected)
    for warning, needle in zip(warnings, expected, strict=True):
        assert needle in warning


class TestWiring:
    template = conftest.service_deployment()["spec"]["template"]
    env = authconfig.settings_env(MINIMAL)

    def test_the_charts_pod_template_is_wired_for_the_overrides(self) -> None:
        assert authconfig.wiring_warnings(self.template, NAMES, self.env) == []

    def test_a_template_without_the_overrides_in_env_from_is_a_warning(self) -> None:
        template = copy.deepcopy(self.template)
        template["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "auth-config"}}]
        (warning,) = authconfig.wiring_warnings(template, NAMES, self.env)
        assert "does not list ConfigMap auth-overrides in envFrom" in warning

    def test_a_variable_set_in_the_containers_env_shadows_the_overrides(self) -> None:
        template = copy.deepcopy(self.template)
        template["spec"]["containers"][0]["env"] += [
            {"name": "AUTH_BCRYPT_COST", "value": "10"}, {"name": "AUTH_DB_POOL_SIZE", "value": "5"}
        ]
        (warning,) = authconfig.wiring_warnings(template, NAMES, self.env)
        assert "sets AUTH_BCRYPT_COST, AUTH_DB_POOL_SIZE in its container's env, which wins over envFrom" in warning


def test_an_smtp_host_sets_the_url_and_the_starttls_switch() -> None:
    spec = spec_with("mail.smtp", {"host": "smtp.example.com", "port": 465, "tls": "tls"})
    env = authconfig.settings_env(spec)
    assert (env["AUTH_SMTP_URL"], env["AUTH_SMTP_STARTTLS"]) == ("smtps://smtp.example.com:465", "false")
    authconfig.validate(env)
    env = authconfig.settings_env(spec_with("mail.smtp", {"host": "relay.mail"}))
    assert (env["AUTH_SMTP_URL"], env["AUTH_SMTP_STARTTLS"]) == ("smtp://relay.mail:587", "true")
    assert "AUTH_SMTP_URL" not in authconfig.settings_env(MINIMAL)  # unset: the chart's stays in force
