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

ROOT = Path(__file__).resolve().parents[2]
RUNS = {"ceiling", "register", "login", "me", "refresh", "mixed", "overload", "soak"}


def test_a_smoke_run_measures_every_scenario_and_writes_a_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "k6" / "run"), "--smoke", "--out", str(tmp_path)],
        env={**os.environ, "BENCH_PYTHON": sys.executable},  # this environment, not a fresh .venv
        capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, f"k6/run failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    results = json.loads((tmp_path / "results.json").read_text())
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
    assert results["runs"]["mixed"]["phases"].keys() == {"reads_alone", "storm_reads", "storm_logins"}
    groups = {group for sample in results["samples"] for group in sample["cpu"]}
    assert {"service", "postgres", "pgbouncer", "redis", "k6"} <= groups

    page = (tmp_path / "report.html").read_text()
    charts = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert len(charts) >= 20
    for chart in charts:  # well-formed SVG (XML), not only HTML a browser tolerates
        ET.fromstring(chart)  # noqa: S314 - our own report
