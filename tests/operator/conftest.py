from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import kmock
import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from authsvc_operator import clock as operator_clock
from devtools import stack as stack_module
from tests.operator import emulator as emulator_module

NAMESPACE = "auth"
TARGET = "auth"


def service_deployment(name: str = TARGET, replicas: int = 3) -> dict[str, Any]:
    """The chart's service Deployment, as far as the operator reads it."""
    labels = {
        "app.kubernetes.io/name": "auth-platform",
        "app.kubernetes.io/instance": "auth",
        "app.kubernetes.io/part-of": "auth-platform",
        "app.kubernetes.io/component": "server",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"checksum/config": "from-helm"}},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "imagePullSecrets": [{"name": "regcred"}],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "volumes": [{"name": "signing-keys", "secret": {"secretName": f"{name}-signing-keys"}}],
                    "containers": [{
                        "name": "server",
                        "image": "ghcr.io/auth-platform/authsvc:0.1.0",
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["serve", "--host", "0.0.0.0", "--port", "8000"],  # noqa: S104 - as the chart has it
                        "envFrom": [
                            {"configMapRef": {"name": f"{name}-config"}},
                            {"configMapRef": {"name": f"{name}-overrides", "optional": True}},
                        ],
                        "env": [
                            {"name": "DATABASE_PASSWORD",
                             "valueFrom": {"secretKeyRef": {"name": f"{name}-credentials",
                                                            "key": "database-password"}}},
                            {"name": "AUTH_DATABASE_URL",
                             "value": f"postgresql://auth:$(DATABASE_PASSWORD)@{name}-pgbouncer:6432/auth"},
                        ],
                        "volumeMounts": [{"name": "signing-keys", "mountPath": "/etc/authsvc/keys", "readOnly": True}],
                    }],
                },
            },
        },
    }


def pgbouncer_deployment(name: str = f"{TARGET}-pgbouncer", replicas: int = 2) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "auth-platform", "app.kubernetes.io/component": "pgbouncer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"checksum/config": "from-helm"}},
                "spec": {"containers": [{"name": "pgbouncer", "image": "docker.io/edoburu/pgbouncer:v1.24.1-p1"}]},
            },
        },
    }


class Cluster:
    """The emulated API seen from the test: writes go through HTTP like kubectl's, reads peek inside."""

    def __init__(self, emulator: emulator_module.Emulator, namespace: str) -> None:
        self.emulator = emulator
        self.namespace = namespace

    def path(self, api: str, plural: str, name: str | None = None) -> str:
        return f"{api}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    async def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        # Connection: close, or an idle keep-alive connection holds up kopf's shutdown by 5 seconds.
        headers = {"Connection": "close", "Content-Type": content_type}
        data = None if body is None else json.dumps(body)
        async with self.emulator.request(method, path, data=data, headers=headers) as response:
            payload = await response.json()
            assert response.status < 400, payload
            return payload

    async def create(self, api: str, plural: str, body: dict[str, Any]) -> Any:
        return await self.call("POST", self.path(api, plural), body)

    async def patch(self, api: str, plural: str, name: str, body: dict[str, Any]) -> Any:
        return await self.call("PATCH", self.path(api, plural, name), body, "application/merge-patch+json")

    async def delete(self, api: str, plural: str, name: str) -> Any:
        return await self.call("DELETE", self.path(api, plural, name))

    def read(self, plural_key: str, name: str) -> dict[str, Any] | None:
        return self.emulator.read(plural_key, self.namespace, name)


AUTHCONFIGS_API = "/apis/auth.platform.dev/v1alpha1"


@pytest.fixture
def free_port() -> int:
    return stack_module.free_port()


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    async with emulator_module.Emulator() as emulator, kmock.Server(emulator) as server:
        # kopf and the operator's own client both log in with this, as they would outside a cluster.
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": str(server.url).rstrip("/")}}],
            "users": [{"name": "tester", "user": {"token": "emulated"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                          "namespace": NAMESPACE}}],
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        cluster = Cluster(emulator, NAMESPACE)
        await cluster.create("/apis/apps/v1", "deployments", service_deployment())
        await cluster.create("/apis/apps/v1", "deployments", pgbouncer_deployment())
        try:
            yield cluster
        finally:
            await emulator.stop_watches()


class FakeClock:
    """Stands in for ``authsvc_operator.clock.now``: time moves only when the test moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.current = start

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        self.current += delta
        return self.current


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    monkeypatch.setattr(operator_clock, "now", fake.now)  # the operator's thread reads it on every pass
    return fake


@pytest.fixture
def drift_interval() -> str:
    return "0.5"  # a test can parametrize it


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, drift_interval: str) -> None:
    """Short timer and retry delay, read when kopf loads the handlers."""
    monkeypatch.setenv("AUTHCONFIG_DRIFT_INTERVAL", drift_interval)
    monkeypatch.setenv("AUTHCONFIG_RETRY_DELAY", "0.3")


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, liveness_port: int) -> AsyncIterator[KopfRunner]:
    """``kopf run -m authsvc_operator.handlers`` in a thread of its own, logged in to the emulator."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    # `kopf run -m` imports the module, and importing it registers the handlers (into the registry kopf
    # makes the default) and reads AUTHCONFIG_* and AUTHCLIENT_*. Python imports a module once per process:
    # forget both handler modules, so that this run imports them afresh, as a new operator pod does.
    # (And from the package's attributes: `from authsvc_operator import client_handlers` takes one found there.)
    for module in ("authsvc_operator.handlers", "authsvc_operator.client_handlers"):
        sys.modules.pop(module, None)
        package, _, name = module.rpartition(".")
        if hasattr(sys.modules.get(package), name):
            delattr(sys.modules[package], name)
    runner = KopfRunner(
        ["run", "--standalone", "--namespace", cluster.namespace,
         "--liveness", f"http://127.0.0.1:{liveness_port}/healthz", "-m", "authsvc_operator.handlers"],
        registry=registry,
        timeout=30,
    )
    runner.__enter__()  # starts kopf's thread and its own loop; nanoseconds
    try:
        yield runner
    finally:
        # Joining blocks: do it off this loop, which keeps serving kopf's last requests meanwhile.
        await anyio.to_thread.run_sync(runner.__exit__, None, None, None)
    assert runner.exit_code == 0, runner.output


@pytest.fixture
async def operator(cluster: Cluster, operator_env: None, free_port: int) -> AsyncIterator[KopfRunner]:
    async with running_operator(cluster, free_port) as runner:
        yield runner


@pytest.fixture
def liveness_url(free_port: int) -> str:
    return f"http://127.0.0.1:{free_port}/healthz"


@pytest.fixture(autouse=True)
def _restore_what_kopf_run_changes() -> Iterator[None]:
    # `kopf run` makes the registry it is given the process-wide default, and sets up logging for a
    # process of its own (a root handler on the stream it was given, levels, asyncio's logger): put
    # all of it back, so that the rest of the suite logs as before.
    registry = kopf.get_default_registry()
    root, quiet = logging.getLogger(), logging.getLogger("asyncio")
    handlers, level, quiet_handlers, quiet_level, quiet_propagate = (
        root.handlers[:], root.level, quiet.handlers[:], quiet.level, quiet.propagate
    )
    yield
    kopf.set_default_registry(registry)
    root.handlers[:], quiet.handlers[:], quiet.propagate = handlers, quiet_handlers, quiet_propagate
    root.setLevel(level)  # setLevel, not assignment: it clears the loggers' cached levels
    quiet.setLevel(quiet_level)
