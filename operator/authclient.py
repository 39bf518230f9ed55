"""AuthClient → what the admin API is asked and what the app's Secret holds: pure functions, plain dicts.

An AuthClient names an OAuth client of the service (``spec``: grant types, scopes, audiences, token
lifetime) and the Secret of its namespace that gets ``client_id``, ``client_secret``, ``token_endpoint``
and ``issuer``. The client is always confidential: its secret lives in that Secret.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from authsvc_operator import authconfig, rotation

PLURAL = "authclients"
KIND = "AuthClient"
# Not under auth.platform.dev/, which kopf keeps for itself (a change of it would not wake the handlers).
ROTATE = "clients.auth.platform.dev/rotate-secret"  # any new value: a new secret, the old one kept for the overlap
ROTATED_FOR = f"{authconfig.GROUP}/rotated-for"  # on the Secret: the request its secret answers
OWNER_LABEL = f"{authconfig.GROUP}/authclient"
DEFAULTS: dict[str, Any] = {  # the CRD's defaults (a test keeps them equal)
    "grantTypes": ["client_credentials"], "scopes": [], "audiences": [], "rotationOverlap": "24h"
}
NAME_LENGTH = 100  # the service's limit on a client's name


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}


def lifetime(spec: Mapping[str, Any]) -> int | None:
    """``tokenLifetime`` in whole seconds, or None for the service's default."""
    text = with_defaults(spec).get("tokenLifetime")
    if not text:
        return None
    seconds = int(rotation.duration(text).total_seconds())
    if not 30 <= seconds <= 86400:
        raise authconfig.InvalidSpec("tokenLifetime must be 30s to 24h")
    return seconds


def overlap(spec: Mapping[str, Any]) -> int:
    """``rotationOverlap`` in whole seconds: how long the previous secret works after a rotation."""
    seconds = int(rotation.duration(with_defaults(spec)["rotationOverlap"]).total_seconds())
    if not 0 <= seconds <= 720 * 3600:
        raise authconfig.InvalidSpec("rotationOverlap is at most 720h")
    return seconds


def registration(spec: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """The body of ``POST /admin/v1/clients``."""
    s = with_defaults(spec)
    return {
        "name": f"{namespace}/{name}"[:NAME_LENGTH],  # a label for people; the id is what counts
        "grant_types": sorted(s["grantTypes"]),
        "scope": " ".join(sorted(s["scopes"])),
        "audiences": list(s["audiences"]),
        "type": "confidential",
        "access_token_ttl": lifetime(spec),
    }


def changes(live: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``PATCH /admin/v1/clients/{id}`` that brings ``live`` to ``spec``; empty when nothing differs."""
    want = registration(spec, "", "")
    patch: dict[str, Any] = {}
    if sorted(live.get("grant_types") or []) != want["grant_types"]:
        patch["grant_types"] = want["grant_types"]
    if set(str(live.get("scope") or "").split()) != set(want["scope"].split()):
        patch["scope"] = want["scope"]
    if list(live.get("audiences") or []) != want["audiences"]:
        patch["audiences"] = want["audiences"]
    if live.get("access_token_ttl") != want["access_token_ttl"]:
        patch["access_token_ttl"] = want["access_token_ttl"]
    return patch


def secret(
    name: str, owner: str, credentials: Mapping[str, str], rotated_for: str | None
) -> dict[str, Any]:
    """The app's Secret: ``credentials`` holds client_id, client_secret, token_endpoint and issuer."""
    annotations = {ROTATED_FOR: rotated_for} if rotated_for else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": authconfig.MANAGED_BY, OWNER_LABEL: owner},
            "annotations": annotations,
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(credentials.items())},
    }


def read(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """What a Secret of ours holds, decoded; empty for none."""
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value).decode(errors="replace") for key, value in data.items()}


FIELDS = ("client_id", "client_secret", "token_endpoint", "issuer")
