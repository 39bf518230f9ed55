"""The AuthClient handlers (imported by ``handlers.py``, so ``kopf run -m authsvc_operator.handlers`` serves both).

One pass, on create, update, resume and every drift interval: register the client through the admin API
if it has none, bring its registration to the spec, rotate its secret when asked (or when the Secret lost
it), and write the Secret. A deletion disables the client in the service and deletes the Secret; the
finalizer holds the AuthClient until the service has answered.

The secret is seen twice, when the client is registered and when it is rotated, and goes straight into
the Secret. Should that write fail, it is kept in the handler's memory for the next try, so a retry does
not rotate again (the service keeps one previous secret: a second rotation would end the overlap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

import kopf

from authsvc_operator import adminapi, authclient, authconfig, authconfig_state, clock, environment, kubeapi

AUTHCLIENTS = (authconfig.GROUP, authconfig.VERSION, authclient.PLURAL)
DRIFT_INTERVAL = environment.seconds("AUTHCONFIG_DRIFT_INTERVAL", 60)
RETRY_DELAY = environment.seconds("AUTHCONFIG_RETRY_DELAY", 30)
ENDPOINT = adminapi.Endpoint.from_environ(os.environ)
PERMANENT = frozenset({"InvalidSpec", "Rejected"})
# The namespaces the chart grants Secrets in (operator.clientNamespaces); unset: every one kopf serves.
SERVED = frozenset(filter(None, (environment.text("AUTHCLIENT_NAMESPACES") or "").split(","))) or None


def _served(namespace: str | None, **_: Any) -> bool:
    return SERVED is None or namespace in SERVED


@dataclasses.dataclass(frozen=True)
class Outcome:
    generation: int | None
    client_id: str | None = None
    rotated_at: str | None = None
    previous_valid_until: str | None = None
    failure: str | None = None  # InvalidSpec, Rejected, Conflict, ClientDisabled, NotConfigured, ServiceError, ApiError
    message: str = ""
    consumed: bool = False  # the rotation request is in the Secret: remove the annotation


@kopf.on.resume(*AUTHCLIENTS, when=_served)
@kopf.on.create(*AUTHCLIENTS, when=_served)
@kopf.on.update(*AUTHCLIENTS, when=_served)
async def reconcile(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    outcome = await _serialised(memo, body, status, logger)
    _record(patch, status, outcome, logger)
    if outcome.failure in PERMANENT:
        raise kopf.PermanentError(outcome.message)
    if outcome.failure is not None:
        raise kopf.TemporaryError(outcome.message, delay=RETRY_DELAY)


@kopf.timer(*AUTHCLIENTS, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL, when=_served)
async def recheck(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Put back a deleted or edited Secret, a registration changed by hand; retry what an outage left undone."""
    _record(patch, status, await _serialised(memo, body, status, logger), logger)


@kopf.on.delete(*AUTHCLIENTS, when=_served)
async def remove(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Disable the client, then delete the Secret (its owner reference would too, later)."""
    lock: asyncio.Lock = memo.setdefault("client_lock", asyncio.Lock())
    async with lock:
        namespace, spec = str(body.metadata.namespace), authclient.with_defaults(body.spec)
        async with kubeapi.connect() as api:
            live = await api.get(kubeapi.SECRETS, namespace, spec["secretName"])
            owned = live is not None and authconfig_state.owned_by(live, str(body.metadata.uid))
            client_id = status.get("clientId") or (authclient.read(live).get("client_id") if owned else None)
            if client_id:
                if ENDPOINT is None:
                    raise kopf.TemporaryError(_NOT_CONFIGURED + "; the client stays enabled", delay=RETRY_DELAY)
                try:
                    async with adminapi.connect(ENDPOINT) as admin:
                        known = await admin.disable(client_id)
                except adminapi.AdminError as exc:
                    raise kopf.TemporaryError(f"disabling client {client_id}: {exc}", delay=RETRY_DELAY) from None
                logger.info(f"Disabled client {client_id}." if known else f"Client {client_id} was not known.")
            if owned:
                await api.delete(kubeapi.SECRETS, namespace, spec["secretName"])
                logger.info(f"Deleted Secret {spec['secretName']}.")


_NOT_CONFIGURED = (
    "the operator has no admin client: AUTHCLIENT_SERVICE_URL, AUTHCLIENT_ADMIN_CLIENT_ID and "
    "AUTHCLIENT_ADMIN_CLIENT_SECRET must be set (the chart does with oauth.bootstrapClient enabled)"
)


async def _serialised(memo: kopf.Memo, body: kopf.Body, status: kopf.Status, logger: kopf.Logger) -> Outcome:
    lock: asyncio.Lock = memo.setdefault("client_lock", asyncio.Lock())
    async with lock:
        generation = body.metadata.get("generation")
        try:
            return await _reconcile(body, status, memo, logger)
        except authconfig.InvalidSpec as exc:
            return Outcome(generation, status.get("clientId"), failure="InvalidSpec", message=str(exc))
        except authconfig_state.Conflict as exc:
            return Outcome(generation, status.get("clientId"), failure="Conflict", message=str(exc))
        except adminapi.AdminError as exc:
            failure = "ServiceError" if exc.transient else "Rejected"
            return Outcome(generation, memo.get("client_id") or status.get("clientId"), failure=failure,
                           message=f"the auth service answered {exc}")
        except kubeapi.ApiError as exc:
            failure = "Forbidden" if exc.status == 403 else "ApiError" if exc.transient else "Rejected"
            return Outcome(generation, memo.get("client_id") or status.get("clientId"), failure=failure,
                           message=str(exc))


async def _reconcile(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, logger: kopf.Logger) -> Outcome:
    generation = body.metadata.get("generation")
    if ENDPOINT is None:
        return Outcome(generation, status.get("clientId"), failure="NotConfigured", message=_NOT_CONFIGURED)
    spec = authclient.with_defaults(body.spec)
    namespace, name, uid = str(body.metadata.namespace), str(body.metadata.name), str(body.metadata.uid)
    overlap = authclient.overlap(spec)
    registration = authclient.registration(spec, namespace, name)  # InvalidSpec before any call
    request = body.metadata.annotations.get(authclient.ROTATE) or None
    rotated_at, previous_until = status.get("secretRotatedAt"), status.get("previousSecretValidUntil")

    async with kubeapi.connect() as api, adminapi.connect(ENDPOINT) as admin:
        live = await api.get(kubeapi.SECRETS, namespace, spec["secretName"])
        if live is not None and not authconfig_state.owned_by(live, uid):
            raise authconfig_state.Conflict(f"Secret {spec['secretName']} exists and is not owned by this AuthClient")
        held = authclient.read(live)
        handled = ((live or {}).get("metadata", {}).get("annotations") or {}).get(authclient.ROTATED_FOR)
        client_id = memo.get("client_id") or status.get("clientId") or held.get("client_id")
        client = await admin.get(client_id) if client_id else None
        issued: dict[str, str] | None = memo.get("issued")  # a secret the last pass could not write
        if issued is not None and issued["client_id"] != client_id:
            issued = None

        if client is None:
            created = await admin.create(registration)
            client_id, rotated_at, previous_until = str(created["client_id"]), _now(), None
            issued = {"client_id": client_id, "client_secret": str(created["client_secret"]), "for": request or ""}
            memo["client_id"], memo["issued"] = client_id, issued
            logger.info(f"Registered client {client_id}.")
        elif client.get("disabled_at"):
            return Outcome(generation, client_id, rotated_at, previous_until, failure="ClientDisabled",
                           message=f"client {client_id} was disabled in the service; delete and re-create the "
                                   "AuthClient for new credentials")
        else:
            client_id = str(client["client_id"])
            change = authclient.changes(client, spec)
            if change:
                await admin.update(client_id, change)
                logger.info(f"Updated client {client_id}: {sorted(change)}.")
            asked = request is not None and request != handled and (issued is None or issued["for"] != request)
            lost = issued is None and (not held.get("client_secret") or held.get("client_id") != client_id)
            if asked or lost:
                rotated = await admin.update(client_id, {"rotate_secret": True, "keep_previous_seconds": overlap})
                rotated_at, previous_until = _now(), rotated.get("previous_secret_valid_until")
                issued = {"client_id": client_id, "client_secret": str(rotated["client_secret"]), "for": request or ""}
                memo["issued"] = issued
                logger.info(f"Rotated the secret of client {client_id}; the previous one works until {previous_until}.")

        meta = await admin.discovery()
        credentials = {
            "client_id": client_id,
            "client_secret": issued["client_secret"] if issued is not None else held["client_secret"],
            "token_endpoint": str(meta["token_endpoint"]),
            "issuer": str(meta["issuer"]),
        }
        # The secret written now answers the request present now, if any (a new client's included).
        desired = authclient.secret(spec["secretName"], name, credentials, request)
        kopf.append_owner_reference(desired, owner=body)
        if live is None:
            await api.create(kubeapi.SECRETS, namespace, desired)
            logger.info(f"Created Secret {spec['secretName']}.")
        else:
            change = _drift(live, desired)
            if change:
                await api.patch(kubeapi.SECRETS, namespace, spec["secretName"], change)
                logger.info(f"Updated Secret {spec['secretName']}: {sorted(change.get('data', {}))}.")
        memo.pop("issued", None)
    return Outcome(generation, client_id, rotated_at, previous_until, consumed=request is not None)


def _drift(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from the live Secret to ours: data key for key, our labels, our one annotation."""
    patch: dict[str, Any] = {}
    have = dict(live.get("data") or {})
    if have != desired["data"]:
        patch["data"] = {**{key: None for key in have if key not in desired["data"]}, **desired["data"]}
    meta, want = live.get("metadata", {}), desired["metadata"]
    if any((meta.get("labels") or {}).get(k) != v for k, v in want["labels"].items()):
        patch.setdefault("metadata", {})["labels"] = want["labels"]
    annotation = want["annotations"].get(authclient.ROTATED_FOR)
    if (meta.get("annotations") or {}).get(authclient.ROTATED_FOR) != annotation:
        patch.setdefault("metadata", {})["annotations"] = {authclient.ROTATED_FOR: annotation}
    if patch:
        patch.setdefault("metadata", {})["resourceVersion"] = meta.get("resourceVersion")
    return patch


def _record(patch: kopf.Patch, status: kopf.Status, outcome: Outcome, logger: kopf.Logger) -> None:
    ok = outcome.failure is None
    message = outcome.message or "registered; credentials in the Secret"
    desired: dict[str, Any] = {
        "observedGeneration": outcome.generation,
        "clientId": outcome.client_id,
        "secretRotatedAt": outcome.rotated_at,
        "previousSecretValidUntil": outcome.previous_valid_until,
        "conditions": authconfig_state.conditions(status, outcome.generation, outcome.failure, message, clock.now()),
    }
    for key, value in desired.items():
        if authconfig_state.pruned(status.get(key)) != authconfig_state.pruned(value):
            patch.status[key] = value
    if outcome.consumed and ok:
        patch.metadata.annotations[authclient.ROTATE] = None
    reason = next((c.get("reason") for c in status.get("conditions") or () if c.get("type") == "Degraded"
                   and c.get("status") == "True"), None)
    if not ok and outcome.failure != reason:
        logger.error(f"{outcome.failure}: {outcome.message}")


def _now() -> str:
    return clock.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
