"""k6/run end to end with seconds of tiny load (bcrypt cost 4, 200 users): keeps the runner and every k6 script
working. The figures of such a run mean nothing; that they exist, add up and draw is what is checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from k6 import targets

ROOT = Path(__file__).resolve().parents[2]
RUNS = {"ceiling", "register", "login", "me", "refresh", "mixed", "overload", "storm", "concurrent", "soak"}
FLAGGED = {"r1.jwt", "r1.scale.login", "r1.scale.me"}  # rows only with --profile me, --scale-users


def smoke(out: Path, *arguments: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [str(ROOT / "k6" / "run"), "--smoke", "--out", str(out), *arguments],
        env={**os.environ, "BENCH_PYTHON": sys.executable},  # this environment, not a fresh .venv
        capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, f"k6/run failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return json.loads((out / "results.json").read_text()), done.stdout


def test_a_smoke_run_measures_every_scenario_and_writes_a_report(tmp_path: Path) -> None:
    results, stdout = smoke(tmp_path)

    assert set(results["runs"]) == RUNS
    assert results["failures"] == []
    for label, run in results["runs"].items():
        assert all(run["thresholds"].values()), (label, run["thresholds"])
        assert run["phases"], label
        for phase, figures in run["phases"].items():
            assert figures["ok"] > 0 and figures["errors"] == 0, (label, phase, figures)
    assert results["ceilings"]["bcrypt"]["rate"] > 0
    assert results["ceilings"]["reads"]["rate"] > 0
    burst = results["runs"]["refresh"]["extra"]
    assert set(burst["burst_rounds"].values()) == {1}  # exactly one winner per round of concurrent refreshes
    assert results["runs"]["mixed"]["phases"].keys() == {
        "reads_alone", "storm_reads", "storm_logins", "naive_reads", "naive_logins"}
    for phase, answers in results["runs"]["concurrent"]["extra"]["bursts"].items():  # every client answered
        assert answers["admitted"]["count"] + answers["refused"]["count"] == answers["offered"] > 0, (phase, answers)
    groups = {group for sample in results["samples"] for group in sample["cpu"]}
    assert {"service", "postgres", "pgbouncer", "redis", "k6"} <= groups

    # a row per target, in results.json and in the table printed at the end, each with a verdict and a figure
    rows = {row["id"]: row for row in results["targets"]}
    assert set(rows) == {target.id for target in targets.TARGETS} - FLAGGED
    for target_id, row in rows.items():
        assert row["met"] in (True, False, None) and row["measured"], row
        assert re.search(rf"^  (met   |MISSED|n/a   ) {re.escape(target_id)} ", stdout, re.MULTILINE), target_id
    assert rows["5.refresh"]["met"] is True and rows["0.answered"]["met"] is True  # zero counts hold even here

    page = (tmp_path / "report.html").read_text()
    charts = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert len(charts) >= 20
    for chart in charts:  # well-formed SVG (XML), not only HTML a browser tolerates
        ET.fromstring(chart)  # noqa: S314 - our own report


def test_only_some_scenarios_several_times_gives_each_target_the_median_of_the_runs(tmp_path: Path) -> None:
    results, _ = smoke(tmp_path, "--only", "storm,login", "--runs", "2")

    assert set(results["runs"]) == {"login (run 1)", "storm (run 1)", "login (run 2)", "storm (run 2)"}
    assert "reads" not in results["ceilings"]  # no chosen scenario is compared with the bare endpoint
    assert [len(repetition["targets"]) for repetition in results["repetitions"]] == [5, 5]
    goodput = {row["id"]: row for row in results["targets"]}["0.goodput"]
    first, second = (next(row["value"] for row in repetition["targets"] if row["id"] == "0.goodput")
                     for repetition in results["repetitions"])
    assert goodput["runs"] == [first, second]
    assert goodput["value"] == (first + second) / 2  # the median of two
