"""py-spy's folded stacks (``py-spy record --format raw``) → where the service's CPU time goes.

Two views: the share of samples that are inside a concern (JWT verification, the database layer, Redis…),
counted once per sample however deep; and the self time by library (the innermost frame's package), which is
where the HTTP server and the event loop show up.
py-spy leaves idle threads out, so every sample is a thread on a CPU (or holding the GIL).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.+?)(?::\d+)?\)$")

# a concern → (libraries whose frames are part of it, substrings of frames that are). Only concerns that are not
# an ancestor of every request (the HTTP server and the event loop are; see the self time by library for them).
CONCERNS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "JWT verification (tokens.verify_access: PyJWT, cryptography)": (
        frozenset({"jwt", "cryptography"}), ("verify_access (service/tokens.py",)),
    "database layer (SQLAlchemy, asyncpg)": (frozenset({"sqlalchemy", "asyncpg"}), ()),
    "Redis client": (frozenset({"redis"}), ()),
    "bcrypt": (frozenset({"bcrypt"}), ("checkpw (", "hashpw (")),
    "logging (JSON lines)": (frozenset({"logging"}), ("(service/logs.py",)),
    "Prometheus metrics": (frozenset({"prometheus_client"}), ()),
    "OpenTelemetry": (frozenset({"opentelemetry"}), ()),
    "JSON and validation (json, msgspec)": (frozenset({"json", "msgspec"}), ()),
}


# py-spy --subprocesses roots each stack at `process PID:"command line"` (a worker's under its parent's), and a
# command line may hold `;` (uvicorn's workers: python -c "from multiprocessing.spawn import spawn_main; …")
PROCESS = re.compile(r'^(?:process \d+:"(?:[^"\\]|\\.)*"(?:;|$))+')


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [frame for frame in PROCESS.sub("", stack).split(";") if frame and not frame.startswith("thread ")]
            stacks.append((frames, int(count)))
    return stacks


def library(frame: str) -> str:
    """The package a frame belongs to: `sqlalchemy`, `service`, `asyncio`, `abc`…

    py-spy names files relative to their sys.path entry (`jwt/api_jws.py`, `asyncio/tasks.py`), so the first
    path segment is the package; an absolute path is cut after site-packages.
    """
    match = FRAME.match(frame)
    path = match.group("file") if match else frame
    if path.startswith("<frozen "):
        return path.removeprefix("<frozen ").removesuffix(">")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith("/"):
        stdlib = re.search(r"/python3\.\d+/(.+)$", path)
        path = stdlib.group(1) if stdlib else path.rsplit("/", 1)[-1]
    return path.split("/", 1)[0].removesuffix(".py")


def _in(concern: tuple[frozenset[str], tuple[str, ...]], frames: list[str], libraries: list[str]) -> bool:
    names, needles = concern
    return any(name in names for name in libraries) or any(n in frame for frame in frames for n in needles)


def analyse(stacks: list[tuple[list[str], int]], top: int = 15) -> dict[str, object]:
    total = sum(count for _, count in stacks)
    concerns: Counter[str] = Counter()
    self_by_library: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for frames, count in stacks:
        libraries = [library(frame) for frame in frames]
        for concern, markers in CONCERNS.items():
            if _in(markers, frames, libraries):
                concerns[concern] += count
        if frames:
            self_by_library[library(frames[-1])] += count
            self_time[frames[-1]] += count
        for frame in set(frames):
            if library(frame) == "service":  # our functions: the universal ancestors (uvicorn, asyncio) say nothing
                inclusive[frame] += count

    def shares(counter: Counter[str], limit: int | None = None) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(limit)] if total else []

    return {
        "samples": total,
        "concerns": shares(concerns),
        "self_by_library": shares(self_by_library, top),
        "top_self": shares(self_time, top),
        "top_inclusive": shares(inclusive, top),
    }
