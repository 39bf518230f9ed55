"""The live side of an AuthConfig: has a child drifted, is it ours, and what status says about a pass.

Pure functions, no API calls; the clock comes in as ``now``. (``authconfig.py`` renders what should
be; this compares it with what is and reports.)
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any


class Conflict(Exception):
    """A child's name is taken by an object this AuthConfig does not control."""


def drift(live: Mapping[str, Any], desired: Mapping[str, Any], *, exact: Sequence[str] = ()) -> dict[str, Any]:
    """The merge patch that brings ``live`` to ``desired``; empty when nothing drifted.

    Fields under ``exact`` (e.g. a ConfigMap's ``data``) must match key for key: keys someone added
    by hand are removed. Elsewhere ``desired`` only has to be contained in ``live``, so the defaults
    the API server fills in (and fields other controllers own) never look like drift.
    """
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = live.get(key)
        if key in exact:
            have_map = dict(have or {})
            if have_map != want:
                patch[key] = {**{k: None for k in have_map if k not in want}, **want}
        elif not contains(have, want):
            if isinstance(want, Mapping) and isinstance(have, Mapping):
                patch[key] = drift(have, want)
            else:
                patch[key] = copy.deepcopy(want)
    return patch


def contains(have: Any, want: Any) -> bool:
    """Whether ``want`` is a sub-document of ``have`` (lists compared item by item, same length)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(contains(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list) and len(have) == len(want) and all(map(contains, have, want))
        )
    return bool(have == want)


def pruned(value: Any) -> Any:
    """``value`` as the API server stores it after a merge patch: a null removes a field, so drop them."""
    if isinstance(value, Mapping):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences", [])
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one reconcile achieved, for status: failure is None when everything is in place."""

    generation: int | None
    checksum: str | None = None
    pgbouncer_checksum: str | None = None
    warnings: tuple[str, ...] = ()
    failure: str | None = None  # reason: InvalidSpec, TargetNotFound, Conflict, ApiError, Forbidden
    message: str = ""
    rotating: bool = False  # spec.signingKeys is set
    signing_keys: Mapping[str, Any] | None = None  # status.signingKeys; None after a failed pass
    consumed: tuple[str, ...] = ()  # AuthConfig annotations acted upon, to remove

    def failed(self, failure: str, message: str, *, rotating: bool = False) -> Outcome:
        """This outcome with a further failure; the first failure stays the reason, the messages add up."""
        if self.failure is not None:
            return dataclasses.replace(self, message=f"{self.message}; {message}", rotating=rotating)
        return dataclasses.replace(self, failure=failure, message=message, rotating=rotating)


def conditions(
    previous: Mapping[str, Any], generation: int | None, failure: str | None, message: str, now: dt.datetime
) -> list[dict[str, Any]]:
    """Ready, Reconciled and Degraded for a pass; each keeps its lastTransitionTime while its status holds."""
    ok = failure is None
    reason = "Reconciled" if ok else str(failure)
    wanted = [
        ("Ready", ok, reason, message),
        ("Reconciled", ok, reason, message),
        ("Degraded", not ok, reason if not ok else "AsExpected", message if not ok else ""),
    ]
    before = {c.get("type"): c for c in previous.get("conditions", []) if isinstance(c, Mapping)}
    found = []
    for kind, value, why, text in wanted:
        state = "True" if value else "False"
        old = before.get(kind, {})
        since = old.get("lastTransitionTime") if old.get("status") == state else None
        found.append({
            "type": kind,
            "status": state,
            "reason": why,
            "message": text,
            "lastTransitionTime": since or now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "observedGeneration": generation,
        })
    return found


def status(previous: Mapping[str, Any], outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    """The whole status for an outcome."""
    ok = outcome.failure is None
    message = outcome.message or ("settings applied; pods roll on a new checksum" if ok else "")
    result: dict[str, Any] = {
        "observedGeneration": outcome.generation,
        "conditions": conditions(previous, outcome.generation, outcome.failure, message, now),
        "warnings": list(outcome.warnings),
    }
    # A failed pass leaves the last applied checksums in place: they still describe the running pods.
    result["checksum"] = outcome.checksum if outcome.checksum is not None else previous.get("checksum")
    result["pgbouncerChecksum"] = (
        outcome.pgbouncer_checksum if outcome.pgbouncer_checksum is not None else previous.get("pgbouncerChecksum")
    )
    # Likewise the last known keys; without spec.signingKeys there are none to report (null removes it).
    if not outcome.rotating:
        result["signingKeys"] = None
    else:
        result["signingKeys"] = (
            dict(outcome.signing_keys) if outcome.signing_keys is not None else previous.get("signingKeys")
        )
    return result
