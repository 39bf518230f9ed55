"""The keys Secret of an AuthConfig with ``spec.signingKeys``: read it, move the rotation on, write it back.

The Secret is the one the chart mounts as the service's keys folder (``<target>-signing-keys`` unless
``signingKeys.secretName`` says otherwise). It holds ``<kid>.pem`` for the next and active keys,
``<kid>.pub.pem`` for retired ones, ``active-kid`` naming the signer, and in one annotation the
rotation state (kids and times only). Each pass writes at most one merge patch, guarded by the
resourceVersion it read, so the kubelet swaps the pods' folder in one step and a concurrent writer
makes the pass fail (and be retried) rather than be overwritten.

The Secret carries no owner reference: deleting the AuthConfig must not take the service's keys
with it. It is claimed with a label instead; a Secret claimed by another AuthConfig is a Conflict.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from authsvc_operator import authconfig, authconfig_state, keypairs, kubeapi, rotation

ACTIVE_KID = "active-kid"  # the entry service/keys.py reads for the signer
STATE = f"{authconfig.GROUP}/signing-keys"  # the Secret's annotation holding rotation.State
# On the AuthConfig. Not under auth.platform.dev/: kopf (whose storage prefix that is) would not
# count a change of them as a change of the object, and the forced rotation would wait for the timer.
FORCE = "keys.auth.platform.dev/rotate"  # a new value starts a rotation now
COMPROMISED = "keys.auth.platform.dev/compromised"  # kids, comma-separated: removed at once


@dataclasses.dataclass(frozen=True)
class Result:
    status: dict[str, Any]  # status.signingKeys
    changes: list[str]  # one line per transition, kids only
    warnings: list[str]
    compromised: list[str]  # kids removed as compromised in this pass


def secret_name(spec: Mapping[str, Any]) -> str:
    return str(spec.get("signingKeys", {}).get("secretName") or f"{spec['targetRef']['name']}-signing-keys")


async def reconcile(
    api: kubeapi.Api, namespace: str, owner: str, spec: Mapping[str, Any], annotations: Mapping[str, str],
    now: dt.datetime,
) -> Result:
    policy = rotation.Policy.from_spec(spec)  # InvalidSpec before anything is read
    name = secret_name(spec)
    live = await api.get(kubeapi.SECRETS, namespace, name)
    meta: Mapping[str, Any] = (live or {}).get("metadata", {})
    claimant = (meta.get("labels") or {}).get(authconfig.OWNER_LABEL)
    if claimant not in (None, owner):
        raise authconfig_state.Conflict(f"Secret {name} holds the signing keys of AuthConfig {claimant}")
    data = {entry: base64.b64decode(value) for entry, value in ((live or {}).get("data") or {}).items()}
    found, warnings = _material(data)
    active_kid = data.get(ACTIVE_KID, b"").decode(errors="replace").strip() or None

    before = rotation.State.from_json((meta.get("annotations") or {}).get(STATE))
    synced = rotation.sync(before, found, active_kid, now)
    compromised = {kid.strip() for kid in annotations.get(COMPROMISED, "").split(",") if kid.strip()}
    after = rotation.step(synced, policy, now, force=annotations.get(FORCE) or None, compromised=compromised)
    desired = await asyncio.to_thread(_data, after, data)  # an RSA key takes a second to make: off the loop
    encoded = {entry: base64.b64encode(value).decode() for entry, value in desired.items()}
    labels = authconfig.labels(owner)

    if live is None:
        await api.create(kubeapi.SECRETS, namespace, {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "labels": labels, "annotations": {STATE: after.to_json()}},
            "data": encoded,
        })
    else:
        patch = _patch(live, encoded, labels, after.to_json())
        if patch:
            await api.patch(kubeapi.SECRETS, namespace, name, patch)
    removed = sorted(compromised & {key.kid for key in synced.keys})
    return Result(rotation.describe(after, policy, name), rotation.changes(before, after), warnings, removed)


def mount_warnings(spec: Mapping[str, Any], template: Mapping[str, Any]) -> list[str]:
    """Ways the target's pod template would keep the rotated keys from its pods."""
    name = secret_name(spec)
    volumes = template.get("spec", {}).get("volumes") or []
    if any((volume.get("secret") or {}).get("secretName") == name for volume in volumes):
        return []
    return [
        f"Deployment {spec['targetRef']['name']} mounts no Secret {name}: its pods do not see the rotated keys "
        "(set signingKeys.secretName to the Secret the chart mounts)"
    ]


def _material(data: Mapping[str, bytes]) -> tuple[dict[str, rotation.Material], list[str]]:
    """The keys the Secret holds, by kid; entries that do not load are left out, with a warning."""
    found: dict[str, rotation.Material] = {}
    warnings = []
    for entry, value in sorted(data.items()):
        kid = keypairs.kid_of(entry)
        if kid is None:
            continue
        try:
            material = keypairs.inspect(entry, value)
        except ValueError as exc:
            warnings.append(f"signing keys: {exc}; the operator removes it")
            continue
        if kid not in found or material.private:  # both halves present: the private one counts
            found[kid] = material
    return found, warnings


def _data(state: rotation.State, data: Mapping[str, bytes]) -> dict[str, bytes]:
    """The Secret's whole data for ``state``: kept keys as they are, new ones generated, retired ones halved."""
    desired: dict[str, bytes] = {}
    for key in state.keys:
        private = data.get(key.kid + keypairs.PRIVATE_SUFFIX)
        if key.phase is rotation.Phase.RETIRED:
            # From the private half while there is one (just retired); rotation.sync keeps a retired
            # record only while one of its halves is there.
            public = keypairs.public_half(private) if private is not None else data[key.kid + keypairs.PUBLIC_SUFFIX]
            desired[key.kid + keypairs.PUBLIC_SUFFIX] = public
        else:
            desired[key.kid + keypairs.PRIVATE_SUFFIX] = private or keypairs.generate(key.algorithm)
    active = state.active
    if active is not None:
        desired[ACTIVE_KID] = active.kid.encode()
    return desired


def _patch(live: Mapping[str, Any], data: Mapping[str, str], labels: Mapping[str, str], state: str) -> dict[str, Any]:
    """The merge patch from ``live`` to the desired Secret; empty when nothing differs."""
    meta = live["metadata"]
    patch: dict[str, Any] = {}
    have = dict(live.get("data") or {})
    if have != data:
        patch["data"] = {**{entry: None for entry in have if entry not in data}, **data}
    if any((meta.get("labels") or {}).get(k) != v for k, v in labels.items()):
        patch.setdefault("metadata", {})["labels"] = dict(labels)
    if (meta.get("annotations") or {}).get(STATE) != state:
        patch.setdefault("metadata", {})["annotations"] = {STATE: state}
    if patch:  # optimistic concurrency: a Secret changed since it was read is refused with 409
        patch.setdefault("metadata", {})["resourceVersion"] = meta.get("resourceVersion")
    return patch
