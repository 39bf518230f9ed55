"""Signing-key rotation, the pure part: phases from stored timestamps and a fake clock, nothing else."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from authsvc_operator import authconfig, rotation
from authsvc_operator.rotation import Key, Material, Phase, State

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
POLICY = rotation.Policy(
    rotate_every=720 * HOUR, publish_ahead=HOUR, retire_after=48 * HOUR, algorithm="EdDSA"
)


def spec(**signing_keys: Any) -> dict[str, Any]:
    return {"targetRef": {"name": "auth"}, "signingKeys": signing_keys}


def phases(state: State) -> dict[str, str]:
    return {key.kid: key.phase.value for key in state.keys}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("720h", 720 * 3600), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("10m", 600), ("2h0m5s", 7205)],
)
def test_durations_are_read_as_go_writes_them(text: str, seconds: int) -> None:
    assert rotation.duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "h", "1h 30m", "-1h", "1hh"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(authconfig.InvalidSpec, match="not a duration"):
        rotation.duration(text)


def test_the_policy_defaults_are_a_month_an_hour_and_two_days_of_ed25519() -> None:
    assert rotation.Policy.from_spec(spec()) == POLICY


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"publishAhead": "9m59s"}, "publishAhead must be at least 10m"),
        ({"rotateEvery": "30m", "publishAhead": "1h"}, "rotateEvery must be at least publishAhead"),
        ({"retireAfter": "19m59s"}, r"retireAfter must be at least the longest token lifetime \(900s\) plus 5m"),
        ({"algorithm": "HS256"}, "algorithm must be one of EdDSA, ES256, RS256"),
    ],
)
def test_the_policy_refuses_bounds_the_service_cannot_live_with(fields: dict[str, str], complaint: str) -> None:
    with pytest.raises(authconfig.InvalidSpec, match=complaint):
        rotation.Policy.from_spec(spec(**fields))


def test_retire_after_follows_the_longest_token_lifetime_of_the_spec() -> None:
    longer = {**spec(retireAfter="1h"), "tokens": {"clientCredentialsTtlSeconds": 3600}}
    with pytest.raises(authconfig.InvalidSpec, match=r"\(3600s\)"):
        rotation.Policy.from_spec(longer)
    rotation.Policy.from_spec({**longer, "signingKeys": {"retireAfter": "1h5m"}})
    shortest = rotation.Policy.from_spec(spec(publishAhead="10m", retireAfter="20m"))
    assert shortest.publish_ahead == rotation.MIN_PUBLISH_AHEAD


def test_a_first_key_signs_at_once() -> None:
    state = rotation.step(State(), POLICY, T0)
    assert state.keys == (Key("20260101-000000", "EdDSA", T0, activated=T0),)
    assert rotation.next_rotation(state, POLICY) == T0 + 720 * HOUR


def test_a_full_cycle_next_active_retired_removed_on_the_timers() -> None:
    state = rotation.step(State(), POLICY, T0)
    first = state.keys[0].kid
    publish = T0 + 720 * HOUR - HOUR

    assert rotation.step(state, POLICY, publish - dt.timedelta(seconds=1)) == state  # nothing due yet
    state = rotation.step(state, POLICY, publish)
    second = "20260130-230000"
    assert phases(state) == {first: "active", second: "next"}
    assert rotation.next_rotation(state, POLICY) == T0 + 720 * HOUR

    assert rotation.step(state, POLICY, T0 + 720 * HOUR - dt.timedelta(seconds=1)) == state
    switch = T0 + 720 * HOUR
    state = rotation.step(state, POLICY, switch)
    assert phases(state) == {first: "retired", second: "active"}
    assert state.active is not None and state.active.activated == switch
    assert rotation.next_rotation(state, POLICY) == switch + 720 * HOUR

    assert rotation.step(state, POLICY, switch + 48 * HOUR - dt.timedelta(seconds=1)) == state
    state = rotation.step(state, POLICY, switch + 48 * HOUR)
    assert phases(state) == {second: "active"}


def test_a_key_published_late_waits_its_publish_ahead_before_signing() -> None:
    # The operator was down past the due time: the new key appears now, and signs an hour later, not now.
    state = rotation.step(State(), POLICY, T0)
    late = T0 + 800 * HOUR
    state = rotation.step(state, POLICY, late)
    assert sorted(phases(state).values()) == ["active", "next"]
    assert rotation.next_rotation(state, POLICY) == late + HOUR
    assert rotation.step(state, POLICY, late + HOUR - dt.timedelta(seconds=1)) == state
    assert sorted(phases(rotation.step(state, POLICY, late + HOUR)).values()) == ["active", "retired"]


def test_a_forced_rotation_publishes_now_and_signs_after_publish_ahead_once_per_request() -> None:
    state = rotation.step(State(), POLICY, T0)
    asked = T0 + 24 * HOUR
    forced = rotation.step(state, POLICY, asked, force="now")
    assert sorted(phases(forced).values()) == ["active", "next"]
    assert (forced.forced_at, forced.forced_for) == (asked, "now")
    assert rotation.next_rotation(forced, POLICY) == asked + HOUR

    # The same request seen again (the annotation not yet removed) asks for nothing more.
    again = rotation.step(forced, POLICY, asked + dt.timedelta(minutes=30), force="now")
    assert again == forced
    done = rotation.step(again, POLICY, asked + HOUR)  # the annotation is gone by now
    assert sorted(phases(done).values()) == ["active", "retired"]
    assert done.forced_for is None
    assert rotation.next_rotation(done, POLICY) == asked + HOUR + 720 * HOUR  # back on the schedule

    # Once removed, the same value is a new request.
    assert len(rotation.step(done, POLICY, asked + 2 * HOUR, force="now").of(Phase.NEXT)) == 1


def test_a_forced_rotation_with_a_next_key_published_long_enough_ago_switches_at_once() -> None:
    state = rotation.step(rotation.step(State(), POLICY, T0), POLICY, T0 + 719 * HOUR)
    (waiting,) = state.of(Phase.NEXT)
    forced = rotation.step(state, POLICY, T0 + 719 * HOUR + 2 * dt.timedelta(minutes=30), force="x")
    assert forced.active is not None and forced.active.kid == waiting.kid


def test_a_compromised_signer_is_replaced_by_the_next_key_at_once() -> None:
    state = rotation.step(rotation.step(State(), POLICY, T0), POLICY, T0 + 719 * HOUR)
    signer, (waiting,) = state.active, state.of(Phase.NEXT)
    assert signer is not None
    now = T0 + 719 * HOUR + dt.timedelta(minutes=1)  # the next key is a minute old
    after = rotation.step(state, POLICY, now, compromised=[signer.kid])
    assert phases(after) == {waiting.kid: "active"}


def test_a_compromised_only_key_is_replaced_by_a_new_one_signing_at_once() -> None:
    state = rotation.step(State(), POLICY, T0)
    now = T0 + dt.timedelta(seconds=0)  # even in the same second: the new kid differs from the removed one
    after = rotation.step(state, POLICY, now, compromised=[state.keys[0].kid, "unknown"])
    assert phases(after) == {"20260101-000000-2": "active"}


def test_a_compromised_retired_key_goes_before_its_time() -> None:
    state = rotation.step(State(), POLICY, T0)
    for now in (T0 + 719 * HOUR, T0 + 720 * HOUR):
        state = rotation.step(state, POLICY, now)
    (retired,) = state.of(Phase.RETIRED)
    after = rotation.step(state, POLICY, T0 + 721 * HOUR, compromised=[retired.kid])
    assert [key.phase for key in after.keys] == [Phase.ACTIVE]


def test_keys_found_in_the_secret_without_records_are_adopted_conservatively() -> None:
    found = {
        "chart": Material("EdDSA", private=True),
        "added": Material("ES256", private=True),
        "old": Material("RS256", private=False),
    }
    adopted = rotation.sync(State(), found, active_kid="chart", now=T0)
    assert {key.kid: (key.phase, key.published) for key in adopted.keys} == {
        "chart": (Phase.ACTIVE, T0), "added": (Phase.NEXT, T0), "old": (Phase.RETIRED, T0)
    }
    # Without active-kid, the newest private kid is taken as the signer.
    assert rotation.sync(State(), found, active_kid=None, now=T0).active == Key("chart", "EdDSA", T0, activated=T0)


def test_records_whose_key_was_deleted_by_hand_are_dropped() -> None:
    state = rotation.step(rotation.step(State(), POLICY, T0), POLICY, T0 + 719 * HOUR)
    signer, (waiting,) = state.active, state.of(Phase.NEXT)
    assert signer is not None
    only_public = {signer.kid: Material("EdDSA", private=False), waiting.kid: Material("EdDSA", private=True)}
    synced = rotation.sync(state, only_public, active_kid=signer.kid, now=T0 + 719 * HOUR)
    # a signer reduced to its public half can no longer sign: it is forgotten, then re-adopted as retired
    assert phases(synced) == {waiting.kid: "next", signer.kid: "retired"}
    assert phases(rotation.step(synced, POLICY, T0 + 719 * HOUR)) == {waiting.kid: "active", signer.kid: "retired"}


def test_the_state_survives_its_annotation_and_a_broken_one_is_no_state() -> None:
    state = rotation.step(rotation.step(State(), POLICY, T0), POLICY, T0 + 719 * HOUR, force="x")
    assert State.from_json(state.to_json()) == state
    for broken in (None, "", "not json", '{"keys": [{"kid": 1}]}', "[]"):
        assert State.from_json(broken) == State()


def test_the_status_lists_every_kid_with_its_phase_and_times() -> None:
    state = rotation.step(State(), POLICY, T0)
    for now in (T0 + 719 * HOUR, T0 + 720 * HOUR, T0 + 1439 * HOUR):
        state = rotation.step(state, POLICY, now)
        if now == T0 + 720 * HOUR:
            retired = rotation.describe(state, POLICY, "auth-signing-keys")["keys"][0]
    assert retired == {
        "kid": "20260101-000000", "phase": "retired", "algorithm": "EdDSA", "publishedAt": "2026-01-01T00:00:00Z",
        "activatedAt": "2026-01-01T00:00:00Z", "retiredAt": "2026-01-31T00:00:00Z", "removeAt": "2026-02-02T00:00:00Z",
    }
    assert rotation.describe(state, POLICY, "auth-signing-keys") == {
        "secretName": "auth-signing-keys",
        "activeKid": "20260130-230000",
        "nextRotation": "2026-03-02T00:00:00Z",
        "keys": [
            {"kid": "20260130-230000", "phase": "active", "algorithm": "EdDSA",
             "publishedAt": "2026-01-30T23:00:00Z", "activatedAt": "2026-01-31T00:00:00Z"},
            {"kid": "20260301-230000", "phase": "next", "algorithm": "EdDSA", "publishedAt": "2026-03-01T23:00:00Z"},
        ],
    }
    assert rotation.describe(State(), POLICY, "s") == {
        "secretName": "s", "activeKid": None, "nextRotation": None, "keys": []
    }


def test_transitions_are_told_by_kid() -> None:
    first = rotation.step(State(), POLICY, T0)
    second = rotation.step(rotation.step(first, POLICY, T0 + 719 * HOUR), POLICY, T0 + 720 * HOUR)
    assert rotation.changes(State(), first) == ["signing key 20260101-000000: new -> active"]
    assert rotation.changes(first, second) == [
        "signing key 20260101-000000: active -> retired", "signing key 20260130-230000: new -> active"
    ]
    assert rotation.changes(second, State()) == [
        "signing key 20260101-000000: retired -> removed", "signing key 20260130-230000: active -> removed"
    ]


@pytest.mark.parametrize("policy", [
    POLICY,
    rotation.Policy(dt.timedelta(minutes=10), dt.timedelta(minutes=10), dt.timedelta(minutes=20), "ES256"),
    rotation.Policy(25 * HOUR, 3 * HOUR, 24 * HOUR + dt.timedelta(minutes=5), "EdDSA"),
])
def test_over_months_of_ticks_no_token_is_signed_by_a_key_a_verifier_could_lack(policy: rotation.Policy) -> None:
    """Every token stays verifiable until it expires, and no key signs before verifiers could have fetched it.

    A tick every 7 minutes (a busy operator's timer) for 90 days. Tokens live retireAfter minus the 5 minutes
    the Secret needs to reach the pods, the longest the CRD allows, and a pod that has not seen the latest
    Secret yet (for up to those 5 minutes) still signs with the key that was active before.
    """
    lifetime = policy.retire_after - rotation.PROPAGATION
    tick = dt.timedelta(minutes=7)
    state, now = State(), T0
    tokens: dict[str, dt.datetime] = {}  # kid -> when the last token it signed expires
    seen_since: dict[str, dt.datetime] = {}
    signers: list[tuple[dt.datetime, str]] = []  # (since, kid)
    while now < T0 + dt.timedelta(days=90):
        state = rotation.step(state, policy, now)
        for key in state.keys:
            seen_since.setdefault(key.kid, now)
        assert len(state.of(Phase.ACTIVE)) == 1
        signer = state.active
        assert signer is not None
        if signers and signers[-1][1] != signer.kid:
            assert now - seen_since[signer.kid] >= policy.publish_ahead, signer.kid
        if not signers or signers[-1][1] != signer.kid:
            signers.append((now, signer.kid))
        lagging = next((kid for since, kid in reversed(signers) if since <= now - rotation.PROPAGATION), signer.kid)
        tokens[signer.kid] = tokens[lagging] = now + lifetime
        tokens = {kid: expires for kid, expires in tokens.items() if expires > now}
        present = {key.kid for key in state.keys}
        assert set(tokens) <= present
        assert len(state.keys) <= 2 + policy.retire_after / policy.rotate_every + 1
        now += tick
