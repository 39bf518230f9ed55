"""The AuthConfig operator: ``kopf run --standalone --namespace NS -m authsvc_operator.handlers``.
(Importing this module registers the AuthClient handlers of ``client_handlers.py`` too.)

One idempotent reconcile serves create, update and resume, and a timer re-runs it to put back what
someone changed by hand. Every write is preceded by a read and skipped when nothing differs, so a
reconcile that finds everything in place changes nothing (and rolls no pods).

A bad spec is a ``kopf.PermanentError`` (retried only when the spec changes); an outage, a missing
target or a conflict is a ``kopf.TemporaryError`` retried after ``AUTHCONFIG_RETRY_DELAY`` seconds.
Either way the reason is in ``status.conditions`` first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from authsvc_operator import (
    authconfig,
    authconfig_state,
    client_handlers,  # noqa: F401 - importing it registers the AuthClient handlers
    clock,
    environment,
    kubeapi,
    signing,
)

AUTHCONFIGS = (authconfig.GROUP, authconfig.VERSION, authconfig.PLURAL)
PERMANENT = frozenset({"InvalidSpec", "Rejected"})


DRIFT_INTERVAL = environment.seconds("AUTHCONFIG_DRIFT_INTERVAL", 60)
RETRY_DELAY = environment.seconds("AUTHCONFIG_RETRY_DELAY", 30)
# kopf watches every namespace it serves for every kind; AuthConfigs count only in this one (the chart's),
# AuthClients in all of them.
HOME = environment.text("AUTHCONFIG_NAMESPACE")


def _at_home(namespace: str | None, **_: Any) -> bool:
    return HOME is None or namespace == HOME


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Namespaced and least-privilege: no cluster-wide watch of CRDs or namespaces (the CRD is
    # installed before the operator starts, so the initial discovery sees it).
    settings.scanning.disabled = True
    # Our own keys on the AuthConfig, not kopf's defaults; no progress kept in status (the CRD
    # describes every status field).
    settings.persistence.finalizer = f"{authconfig.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=authconfig.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=authconfig.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events for problems, not for every pass
    settings.posting.loggers = True  # the handlers' warnings and errors are the Events (off by default in kopf 1.45)


@kopf.on.resume(*AUTHCONFIGS, when=_at_home)
@kopf.on.create(*AUTHCONFIGS, when=_at_home)
@kopf.on.update(*AUTHCONFIGS, when=_at_home)
async def reconcile(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    outcome = await _serialised(memo, body, logger)
    _record(patch, status, memo, outcome, logger)
    if outcome.failure in PERMANENT:
        raise kopf.PermanentError(outcome.message)
    if outcome.failure is not None:
        raise kopf.TemporaryError(outcome.message, delay=RETRY_DELAY)


@kopf.timer(*AUTHCONFIGS, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL, when=_at_home)
async def recheck(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Put back a hand edit; retry what an outage left undone. Failures go to status, the next tick retries."""
    _record(patch, status, memo, await _serialised(memo, body, logger), logger)


async def _serialised(memo: kopf.Memo, body: kopf.Body, logger: kopf.Logger) -> authconfig_state.Outcome:
    # The timer and the change handlers run concurrently in kopf: one pass per object at a time.
    lock: asyncio.Lock = memo.setdefault("reconcile_lock", asyncio.Lock())
    async with lock:
        outcome = await _reconcile(body, logger)
        if body.spec.get("signingKeys") is not None:
            outcome = await _rotate(body, outcome, logger)
        return outcome


async def _reconcile(body: kopf.Body, logger: kopf.Logger) -> authconfig_state.Outcome:
    generation = body.metadata.get("generation")
    spec = authconfig.with_defaults(body.spec)
    names = authconfig.Names(spec["targetRef"]["name"])
    namespace = str(body.metadata.namespace)
    env = authconfig.settings_env(spec)
    try:
        authconfig.validate(env)
    except authconfig.InvalidSpec as exc:
        return authconfig_state.Outcome(generation, failure="InvalidSpec", message=f"the service would refuse: {exc}")

    ini = {"pgbouncer.ini": authconfig.pgbouncer_ini(spec)}
    config_sum, pgbouncer_sum = authconfig.checksum(env), authconfig.checksum(ini)
    try:
        async with kubeapi.connect() as api:
            target = await api.get(kubeapi.DEPLOYMENTS, namespace, names.target)
            if target is None:
                return authconfig_state.Outcome(
                    generation, failure="TargetNotFound", message=f"no Deployment {namespace}/{names.target}"
                )
            pgbouncer = await api.get(kubeapi.DEPLOYMENTS, namespace, names.pgbouncer)

            # ConfigMaps first, then the checksums: pods roll only once what they will read is there.
            owner = body.metadata.name
            overrides = authconfig.configmap(names.overrides, owner, env)
            await _ensure(api, kubeapi.CONFIGMAPS, namespace, overrides, body, logger, exact=("data",))
            pgbouncer_overrides = authconfig.configmap(names.pgbouncer_overrides, owner, ini)
            await _ensure(api, kubeapi.CONFIGMAPS, namespace, pgbouncer_overrides, body, logger, exact=("data",))
            await _stamp(api, namespace, target, authconfig.CONFIG_CHECKSUM, config_sum, logger)
            if pgbouncer is not None:
                await _stamp(api, namespace, pgbouncer, authconfig.PGBOUNCER_CHECKSUM, pgbouncer_sum, logger)
            # Last, so that a CronJob someone else owns (Conflict) still lets the settings apply.
            cleanup = authconfig.cronjob(spec, names, owner, target["spec"]["template"])
            await _ensure(api, kubeapi.CRONJOBS, namespace, cleanup, body, logger)
            warnings = _warnings(spec, names, env, target, pgbouncer)
    except authconfig.InvalidSpec as exc:
        return authconfig_state.Outcome(generation, failure="InvalidSpec", message=str(exc))
    except authconfig_state.Conflict as exc:
        return authconfig_state.Outcome(generation, failure="Conflict", message=str(exc))
    except kubeapi.ApiError as exc:
        failure = "Forbidden" if exc.status == 403 else "ApiError" if exc.transient else "Rejected"
        return authconfig_state.Outcome(generation, failure=failure, message=str(exc))
    return authconfig_state.Outcome(
        generation,
        checksum=config_sum,
        pgbouncer_checksum=pgbouncer_sum if pgbouncer is not None else None,
        warnings=tuple(warnings),
    )


async def _rotate(
    body: kopf.Body, outcome: authconfig_state.Outcome, logger: kopf.Logger
) -> authconfig_state.Outcome:
    """Move the signing keys on (``signing.py``); independent of the settings, so it runs whatever they did."""
    annotations = dict(body.metadata.annotations)
    try:
        async with kubeapi.connect() as api:
            result = await signing.reconcile(
                api, str(body.metadata.namespace), str(body.metadata.name), body.spec, annotations, clock.now()
            )
    except authconfig.InvalidSpec as exc:
        return outcome.failed("InvalidSpec", str(exc), rotating=True)
    except authconfig_state.Conflict as exc:
        return outcome.failed("Conflict", str(exc), rotating=True)
    except kubeapi.ApiError as exc:
        failure = "Forbidden" if exc.status == 403 else "ApiError" if exc.transient else "Rejected"
        hint = " (does the chart set signingKeys.managedByOperator?)" if exc.status == 403 else ""
        return outcome.failed(failure, f"signing keys: {exc}{hint}", rotating=True)
    for line in result.changes:
        logger.info(line)
    for kid in result.compromised:
        logger.warning(f"signing key {kid} removed as compromised: its tokens are refused from now on")
    consumed = (signing.FORCE,) if signing.FORCE in annotations else ()
    return dataclasses.replace(
        outcome, rotating=True, signing_keys=result.status, warnings=outcome.warnings + tuple(result.warnings),
        consumed=consumed,
    )


async def _ensure(
    api: kubeapi.Api,
    kind: kubeapi.Kind,
    namespace: str,
    desired: dict[str, Any],
    owner: kopf.Body,
    logger: kopf.Logger,
    exact: tuple[str, ...] = (),
) -> None:
    """Create ``desired`` or patch what drifted; never touch an object this AuthConfig does not control."""
    kopf.adopt(desired, owner=owner)
    name = desired["metadata"]["name"]
    live = await api.get(kind, namespace, name)
    if live is None:
        await api.create(kind, namespace, desired)
        logger.info(f"Created {desired['kind']} {name}.")
        return
    if not authconfig_state.owned_by(live, str(owner.metadata.uid)):
        hint = (
            " (the chart's own cleanup CronJob? set the chart's cleanup.mode to operator)"
            if kind == kubeapi.CRONJOBS else " (another AuthConfig targeting the same Deployment?)"
        )
        raise authconfig_state.Conflict(
            f"{desired['kind']} {name} exists and is not controlled by this AuthConfig{hint}"
        )
    # Ownership is settled above; comparing owner references would fight other (non-controller) owners.
    desired["metadata"].pop("ownerReferences", None)
    change = authconfig_state.drift(live, desired, exact=exact)
    if change:
        await api.patch(kind, namespace, name, change)
        logger.info(f"Updated {desired['kind']} {name}: {sorted(change)}.")


async def _stamp(
    api: kubeapi.Api, namespace: str, deployment: Mapping[str, Any], key: str, value: str, logger: kopf.Logger
) -> None:
    """Set the pod-template annotation that rolls the Deployment, unless it already holds ``value``."""
    name = deployment["metadata"]["name"]
    annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    if annotations.get(key) == value:
        return
    await api.patch(
        kubeapi.DEPLOYMENTS, namespace, name, {"spec": {"template": {"metadata": {"annotations": {key: value}}}}}
    )
    logger.info(f"Rolling Deployment {name}: {key}={value[:12]}….")


def _warnings(
    spec: Mapping[str, Any],
    names: authconfig.Names,
    env: Mapping[str, str],
    target: Mapping[str, Any],
    pgbouncer: Mapping[str, Any] | None,
) -> list[str]:
    found = authconfig.wiring_warnings(target["spec"]["template"], names, env)
    if spec.get("signingKeys") is not None:
        found += signing.mount_warnings(spec, target["spec"]["template"])
    if pgbouncer is None:
        found.append(f"no Deployment {names.pgbouncer}: the PgBouncer settings are written but applied nowhere")
    replicas = int(target["spec"].get("replicas", 1))
    pgbouncer_replicas = int(pgbouncer["spec"].get("replicas", 1)) if pgbouncer is not None else None
    return found + authconfig.pool_warnings(spec, replicas, pgbouncer_replicas)


def _record(
    patch: kopf.Patch, status: kopf.Status, memo: kopf.Memo, outcome: authconfig_state.Outcome, logger: kopf.Logger
) -> None:
    """Write the status fields that changed; an unchanged pass writes nothing."""
    desired = authconfig_state.status(status, outcome, now=clock.now())
    for key, value in desired.items():
        if authconfig_state.pruned(status.get(key)) != authconfig_state.pruned(value):
            patch.status[key] = value
    for annotation in outcome.consumed:  # a request the Secret now records: the same value may ask again
        patch.metadata.annotations[annotation] = None
    # Posted as Kubernetes Events once, when they first appear. The last pass's are remembered too: a
    # timer's pass may start from a body whose status does not show the previous pass's yet.
    told: set[str] = memo.setdefault("told", set())
    for warning in sorted(set(outcome.warnings) - set(status.get("warnings") or ()) - told):
        logger.warning(warning)
    failure = f"{outcome.failure}: {outcome.message}" if outcome.failure is not None else None
    if failure is not None and outcome.failure != _reason(status) and failure not in told:
        logger.error(failure)
    told.clear()
    told.update(outcome.warnings, [failure] if failure is not None else [])


def _reason(status: kopf.Status) -> str | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return str(condition.get("reason"))
    return None
