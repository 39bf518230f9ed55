"""Drift, ownership and status: how a pass compares the live objects and reports, on plain dicts."""

from __future__ import annotations

import datetime as dt

from authsvc_operator import authconfig_state

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class TestDrift:
    def test_nothing_drifted_when_desired_is_contained_in_live(self) -> None:
        live = {"metadata": {"name": "a", "uid": "1", "labels": {"x": "1", "y": "2"}},
                "spec": {"a": [1, {"b": 2, "c": 3}]}}
        desired = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": [1, {"b": 2}]}}
        assert authconfig_state.drift(live, desired) == {}

    def test_a_changed_value_is_patched_at_its_depth(self) -> None:
        live = {"spec": {"schedule": "@daily", "suspend": False}}
        assert authconfig_state.drift(live, {"spec": {"schedule": "@hourly"}}) == {"spec": {"schedule": "@hourly"}}

    def test_a_list_is_replaced_whole(self) -> None:
        live = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
        assert authconfig_state.drift(live, {"spec": {"containers": [{"name": "a"}]}}) == {
            "spec": {"containers": [{"name": "a"}]}
        }

    def test_exact_fields_lose_keys_added_by_hand(self) -> None:
        live = {"data": {"A": "1", "B": "hand", "EXTRA": "x"}}
        assert authconfig_state.drift(live, {"data": {"A": "1", "B": "2"}}, exact=("data",)) == {
            "data": {"EXTRA": None, "A": "1", "B": "2"}
        }
        assert authconfig_state.drift({"data": {"A": "1"}}, {"data": {"A": "1"}}, exact=("data",)) == {}


def test_ownership_means_a_controller_reference_to_this_uid() -> None:
    ref = {"uid": "u1", "controller": True}
    assert authconfig_state.owned_by({"metadata": {"ownerReferences": [ref]}}, "u1")
    assert not authconfig_state.owned_by({"metadata": {"ownerReferences": [{**ref, "controller": False}]}}, "u1")
    assert not authconfig_state.owned_by({"metadata": {"ownerReferences": [ref]}}, "u2")
    assert not authconfig_state.owned_by({"metadata": {}}, "u1")


class TestStatus:
    ok = authconfig_state.Outcome(3, checksum="c1", pgbouncer_checksum="p1", warnings=("w",))

    def test_success_is_ready_reconciled_and_not_degraded(self) -> None:
        status = authconfig_state.status({}, self.ok, NOW)
        assert status["observedGeneration"] == 3
        assert (status["checksum"], status["pgbouncerChecksum"], status["warnings"]) == ("c1", "p1", ["w"])
        assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
            ("Ready", "True", "Reconciled"),
            ("Reconciled", "True", "Reconciled"),
            ("Degraded", "False", "AsExpected"),
        ]
        assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2026-01-02T03:04:05Z"}
        assert {c["observedGeneration"] for c in status["conditions"]} == {3}

    def test_a_condition_keeps_its_transition_time_while_its_status_holds(self) -> None:
        before = authconfig_state.status({}, self.ok, NOW)
        later = authconfig_state.status(before, self.ok, NOW + dt.timedelta(hours=1))
        assert later == before

    def test_a_failure_flips_the_conditions_and_keeps_the_last_applied_checksums(self) -> None:
        before = authconfig_state.status({}, self.ok, NOW)
        failed = authconfig_state.Outcome(4, failure="ApiError", message="503: boom")
        status = authconfig_state.status(before, failed, NOW + dt.timedelta(minutes=5))
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "False"
        assert conditions["Degraded"] == {
            "type": "Degraded", "status": "True", "reason": "ApiError", "message": "503: boom",
            "lastTransitionTime": "2026-01-02T03:09:05Z", "observedGeneration": 4,
        }
        assert (status["checksum"], status["pgbouncerChecksum"]) == ("c1", "p1")
