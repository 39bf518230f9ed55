"""Signing-key rotation as pure functions of the stored timestamps and ``now``.

Each key moves through three phases and then leaves the Secret::

    published ─── publishAhead ───▶ activated ─── rotateEvery ───▶ retired ─── retireAfter ───▶ removed
    next: <kid>.pem, in the JWKS     active: <kid>.pem, signs        retired: <kid>.pub.pem, verifies

``State`` is what the operator keeps in an annotation of the keys Secret (kids and times, never key
material), so a restarted operator picks up where it left off. ``step`` applies everything due by
``now``; every transition is stamped with the ``now`` it happened at (not with when it was due), since
that is when the Secret changed. Phases follow from the stamps alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from authsvc_operator import authconfig

ALGORITHMS = ("EdDSA", "ES256", "RS256")
JWKS_MAX_AGE = dt.timedelta(seconds=300)  # service/routes/meta.py's Cache-Control (a test keeps them equal)
# From a Secret write to every pod using it: the kubelet's sync period and cache (a minute each), the
# service's AUTH_KEYS_RELOAD_INTERVAL (10 s) and some clock skew, rounded up.
PROPAGATION = dt.timedelta(minutes=5)
MIN_PUBLISH_AHEAD = JWKS_MAX_AGE + PROPAGATION  # the CRD's CEL rules state the same bounds
DEFAULTS: dict[str, Any] = {
    "secretName": "", "rotateEvery": "720h", "publishAhead": "1h", "retireAfter": "48h", "algorithm": "EdDSA"
}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_UNITS = {"h": 3600, "m": 60, "s": 1}


def duration(text: str) -> dt.timedelta:
    """A Go-style duration as the CRD admits it (``720h``, ``1h30m``, ``90s``): hours, minutes, seconds."""
    parts = _DURATION.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise authconfig.InvalidSpec(f"not a duration: {text!r} (write it like 720h, 1h30m or 90s)")
    return dt.timedelta(seconds=sum(float(number) * _UNITS[unit] for number, unit in parts))


@dataclasses.dataclass(frozen=True)
class Policy:
    rotate_every: dt.timedelta
    publish_ahead: dt.timedelta
    retire_after: dt.timedelta
    algorithm: str

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Policy:
        """From a whole AuthConfig spec: the token lifetimes set how long a former signer must stay public."""
        full = authconfig.with_defaults(spec)
        keys = {**DEFAULTS, **full.get("signingKeys", {})}
        policy = cls(
            duration(keys["rotateEvery"]), duration(keys["publishAhead"]), duration(keys["retireAfter"]),
            keys["algorithm"],
        )
        if policy.algorithm not in ALGORITHMS:
            raise authconfig.InvalidSpec(f"signingKeys.algorithm must be one of {', '.join(ALGORITHMS)}")
        if policy.publish_ahead < MIN_PUBLISH_AHEAD:
            raise authconfig.InvalidSpec(
                "signingKeys.publishAhead must be at least 10m: the JWKS max-age plus the time a Secret takes to "
                "reach the pods"
            )
        if policy.rotate_every < policy.publish_ahead:
            raise authconfig.InvalidSpec("signingKeys.rotateEvery must be at least publishAhead")
        longest = max(int(full["tokens"]["accessTtlSeconds"]), int(full["tokens"]["clientCredentialsTtlSeconds"]))
        if policy.retire_after < dt.timedelta(seconds=longest) + PROPAGATION:
            raise authconfig.InvalidSpec(
                f"signingKeys.retireAfter must be at least the longest token lifetime ({longest}s) plus 5m"
            )
        return policy


class Phase(enum.Enum):
    NEXT = "next"  # published, not signing yet
    ACTIVE = "active"  # signs
    RETIRED = "retired"  # public half only, until its last tokens expire


@dataclasses.dataclass(frozen=True)
class Key:
    kid: str
    algorithm: str
    published: dt.datetime
    activated: dt.datetime | None = None
    retired: dt.datetime | None = None

    @property
    def phase(self) -> Phase:
        if self.retired is not None:
            return Phase.RETIRED
        return Phase.ACTIVE if self.activated is not None else Phase.NEXT


@dataclasses.dataclass(frozen=True)
class State:
    keys: tuple[Key, ...] = ()
    forced_at: dt.datetime | None = None  # a rotation asked for then; done at the first safe moment
    forced_for: str | None = None  # the annotation's value while present, so one request forces once

    @property
    def active(self) -> Key | None:
        return next((key for key in self.keys if key.phase is Phase.ACTIVE), None)

    def of(self, phase: Phase) -> list[Key]:
        return [key for key in self.keys if key.phase is phase]

    def to_json(self) -> str:
        keys = [{k: _stamp(v) if isinstance(v, dt.datetime) else v for k, v in dataclasses.asdict(key).items()}
                for key in self.keys]
        state = {"keys": keys, "forcedAt": _stamp(self.forced_at), "forcedFor": self.forced_for}
        return json.dumps(state, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> State:
        """What the annotation holds; a missing or unreadable one is no state (the keys are then adopted)."""
        try:
            raw = json.loads(text or "{}")
            keys = tuple(
                Key(str(k["kid"]), str(k["algorithm"]), _required(_time(k["published"])),
                    _time(k.get("activated")), _time(k.get("retired")))
                for k in raw.get("keys", [])
            )
            return cls(keys, _time(raw.get("forcedAt")), raw.get("forcedFor"))
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()


@dataclasses.dataclass(frozen=True)
class Material:
    """What the Secret holds for one kid, as far as rotation cares: a private key or only the public one."""

    algorithm: str
    private: bool


def sync(state: State, found: Mapping[str, Material], active_kid: str | None, now: dt.datetime) -> State:
    """Reconcile the records with the keys the Secret really holds.

    A record whose key is gone (deleted by hand) is dropped; a key without a record (the chart's first
    key, one added by hand) is adopted: the signer (``active-kid``, else the newest private key) as
    active, other private keys as next, public ones as retired, all as of ``now``, which is the
    conservative reading (they stay at least as long as if they had just arrived).
    """
    now = _second(now)
    kept = tuple(
        key for key in state.keys
        if key.kid in found and (found[key.kid].private or key.phase is Phase.RETIRED)
    )
    known = {key.kid for key in kept}
    strays = {kid: m for kid, m in found.items() if kid not in known}
    signer = None
    if not any(key.phase is Phase.ACTIVE for key in kept):
        private = sorted(kid for kid, m in strays.items() if m.private)
        signer = active_kid if active_kid in private else (private[-1] if private else None)
    adopted = tuple(
        Key(kid, m.algorithm, now, activated=now if kid == signer else None, retired=None if m.private else now)
        for kid, m in sorted(strays.items())
    )
    return dataclasses.replace(state, keys=kept + adopted)


def step(
    state: State, policy: Policy, now: dt.datetime, *, force: str | None = None, compromised: Iterable[str] = ()
) -> State:
    """The state once everything due by ``now`` has happened.

    ``force`` is the value of the force-rotation annotation: a value other than the one last seen
    starts a rotation now (a key published now signs after ``publishAhead``, so no verifier is caught
    out; a next key published long enough ago signs at once). The operator removes the annotation once
    the request is stored, so the same value can ask again.
    ``compromised`` kids are removed at once, whatever their phase; if one was signing, a next key
    signs from now on, or a new one made now (verifiers then fetch the JWKS on the unknown kid).
    """
    now = _second(now)
    bad = set(compromised)
    taken = {key.kid for key in state.keys} | bad
    keys = [key for key in state.keys if key.kid not in bad]
    keys = [key for key in keys if key.retired is None or now < key.retired + policy.retire_after]
    forced_at, forced_for = state.forced_at, force
    if force and force != state.forced_for:
        forced_at = now

    active = next((key for key in keys if key.phase is Phase.ACTIVE), None)
    pending = sorted((key for key in keys if key.phase is Phase.NEXT), key=lambda key: key.published)
    if active is None:  # nothing signs (a first key, or the signer was compromised): sign at once
        chosen = pending[0] if pending else Key(new_kid(now, taken), policy.algorithm, now)
        keys = [key for key in keys if key.kid != chosen.kid] + [dataclasses.replace(chosen, activated=now)]
        return State(tuple(keys), forced_at, forced_for)

    due = _due(active, policy, forced_at)
    if pending:
        successor = pending[0]
        if now >= max(due, successor.published + policy.publish_ahead):
            keys = [
                dataclasses.replace(key, retired=now) if key.kid == active.kid
                else dataclasses.replace(key, activated=now) if key.kid == successor.kid
                else key
                for key in keys
            ]
            active, pending = next(key for key in keys if key.kid == successor.kid), pending[1:]
            due = _due(active, policy, forced_at)
    if not pending and now >= due - policy.publish_ahead:
        keys.append(Key(new_kid(now, taken | {key.kid for key in keys}), policy.algorithm, now))
    return State(tuple(keys), forced_at, forced_for)


def next_rotation(state: State, policy: Policy) -> dt.datetime | None:
    """When the signer changes next, as far as the schedule goes."""
    active = state.active
    if active is None:
        return None
    due = _due(active, policy, state.forced_at)
    pending = sorted(key.published for key in state.of(Phase.NEXT))
    return max(due, pending[0] + policy.publish_ahead) if pending else due


def describe(state: State, policy: Policy, secret_name: str) -> dict[str, Any]:
    """``status.signingKeys``: the Secret, the signer, the next rotation, and every kid with its times."""
    keys = []
    for key in sorted(state.keys, key=lambda key: key.published):
        entry: dict[str, Any] = {"kid": key.kid, "phase": key.phase.value, "algorithm": key.algorithm,
                                 "publishedAt": _stamp(key.published)}
        if key.activated is not None:
            entry["activatedAt"] = _stamp(key.activated)
        if key.retired is not None:
            entry["retiredAt"] = _stamp(key.retired)
            entry["removeAt"] = _stamp(key.retired + policy.retire_after)
        keys.append(entry)
    active = state.active
    return {
        "secretName": secret_name,
        "activeKid": active.kid if active else None,
        "nextRotation": _stamp(next_rotation(state, policy)),
        "keys": keys,
    }


def changes(before: State, after: State) -> list[str]:
    """One line per transition, kids only: for the log."""
    old = {key.kid: key.phase for key in before.keys}
    new = {key.kid: key.phase for key in after.keys}
    lines = [f"signing key {kid}: {old[kid].value if kid in old else 'new'} -> {phase.value}"
             for kid, phase in new.items() if old.get(kid) is not phase]
    lines += [f"signing key {kid}: {phase.value} -> removed" for kid, phase in old.items() if kid not in new]
    return lines


def new_kid(now: dt.datetime, taken: set[str]) -> str:
    """A kid from the time (readable, sortable), made unique among ``taken``."""
    base = now.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    kid, n = base, 1
    while kid in taken:
        n += 1
        kid = f"{base}-{n}"
    return kid


def _due(active: Key, policy: Policy, forced_at: dt.datetime | None) -> dt.datetime:
    activated = _required(active.activated)
    due = activated + policy.rotate_every
    if forced_at is not None and forced_at > activated:  # asked for while this key signs
        due = min(due, forced_at)
    return due


def _stamp(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


def _second(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC).replace(microsecond=0)  # what the stamps keep


def _required(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        raise ValueError("a time is missing")
    return when


def _time(text: Any) -> dt.datetime | None:
    if text is None:
        return None
    return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
