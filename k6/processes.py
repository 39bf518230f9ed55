"""The runner's child processes: uvicorn servers on a free loopback port (started, awaited, stopped with their
workers), `authsvc` commands, and the one-line commands whose output names the run (git, k6 version)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import devtools.stack

ROOT = Path(__file__).resolve().parent.parent
HOST = devtools.stack.HOST
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def cli(arguments: list[str], environ: dict[str, str], log_path: Path) -> None:
    """Runs `authsvc ARGUMENTS` to completion with its output in `log_path`."""
    with log_path.open("wb") as log:
        done = subprocess.run([sys.executable, "-m", "service.cli", *arguments],  # noqa: S603
                              stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise BenchError(f"authsvc {' '.join(arguments)} failed{tail(log_path)}")


def spawn_server(module: list[str], environ: dict[str, str], log_path: Path,
                 workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `python MODULE --host --port --workers` on a free loopback port; returns it and its base URL."""
    port = devtools.stack.free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [sys.executable, *module, "--host", HOST, "--port", str(port), "--workers", str(workers)],
            stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT, start_new_session=True,
        )
    return process, f"http://{HOST}:{port}"


def wait_ready(process: subprocess.Popen[bytes], url: str, label: str, log_path: Path) -> None:
    """Waits until `url` answers 200; raises BenchError if the server exits or does not answer in time."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise BenchError(f"{label} exited with status {process.returncode} while starting{tail(log_path)}")
        if status(url) == 200:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{label} did not become ready in {READY_TIMEOUT:.0f}s{tail(log_path)}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn drains and stops its workers), then SIGKILL to the process group we created."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def output(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False,  # noqa: S603
                              cwd=ROOT).stdout
    return ""


def git_commit() -> str:
    commit = output(["git", "rev-parse", "--short", "HEAD"]).strip()
    dirty = output(["git", "status", "--porcelain", "--untracked-files=no"]).strip()
    return f"{commit}{' + uncommitted changes' if dirty else ''}" if commit else "unknown"


def digest(folder: Path) -> str:
    """A short hash of the service's source as it ran: names the code even when it is not committed yet."""
    hashed = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        hashed.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return hashed.hexdigest()[:12]


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return f"; the end of {path}:\n{text}"
    return ""
