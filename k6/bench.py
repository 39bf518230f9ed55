"""``k6/run``'s command line: one command from nothing to a report (the run itself: k6/runner.py).

It starts PostgreSQL, PgBouncer (transaction pooling) and Redis on free loopback ports (devtools/stack.py),
migrates, generates a signing key, seeds users by COPY, measures the ceilings (raw bcrypt rate; a bare
Starlette endpoint served by `authsvc serve`'s own code), starts the service under uvicorn, runs the chosen k6
scenarios one after another while sampling CPU and memory of every process and the service's /metrics,
stops everything it started, and writes ``results.json`` and ``report.html`` into the output folder.

All traffic goes to 127.0.0.1. The exit status is 1 when a k6 threshold (error rates) failed or a step broke;
the performance targets are judged in the report, never by the exit status (they are benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import devtools.stack
from k6 import processes, runner, scripts, targets
from service.passwords import available_cpus

SUITE = ("register", "login", "me", "refresh", "mixed", "overload", "storm", "concurrent", "soak")
SMOKE_SETTINGS = {  # seconds and a handful of requests: keeps the scripts and the runner working (CI)
    "TOKENS": "4", "WARMUP": "1s", "MAX_VUS": "40",
    "refresh.VUS": "2", "refresh.BURSTS": "2", "refresh.BURST_VUS": "4", "refresh.BURST_GAP_MS": "300",
    "mixed.READ_RATE": "20", "mixed.STORM_VUS": "4", "mixed.NAIVE_VUS": "4", "overload.RATE": "20",
    "storm.VUS": "8", "concurrent.REGISTRATIONS": "5", "concurrent.LOGINS": "20", "concurrent.WINDOW": "5s",
    "soak.LOGIN_RATE": "4", "soak.READ_RATE": "20", "soak.REFRESH_RATE": "4", "soak.REFRESH_VUS": "2",
    "latency.LOGIN_RATE": "4", "latency.READ_RATE": "20",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k6/run", description="Load-test the auth service on a throwaway local stack and write a report.",
        epilog="k6 parameters of each scenario are listed at the top of k6/scenarios/<name>.js; set them with "
               "--set NAME=VALUE (every scenario) or --set SCENARIO.NAME=VALUE.",
    )
    p.add_argument("--only", "--scenarios", dest="scenarios", default=",".join(SUITE), metavar="SCENARIOS",
                   help=f"comma-separated, run in suite order (default: all: {','.join(SUITE)})")
    p.add_argument("--runs", type=int, default=1, metavar="N",
                   help="run the ceilings and the scenarios N times, each with a fresh service, and judge each "
                   "target on the median of the runs (the worst run for targets stated for every run); default 1")
    p.add_argument("--users", type=int, default=10_000, help="seeded users (default 10000)")
    p.add_argument("--scale-users", type=int, default=0, metavar="N",
                   help="afterwards, measure login and me latency at light load (k6/scenarios/latency.js), grow the "
                   "users table to N (e.g. 1000000) and measure again")
    p.add_argument("--workers", type=int, default=available_cpus(),
                   help="uvicorn worker processes (default: the CPUs available, %(default)s here)")
    p.add_argument("--bcrypt-cost", type=int, default=12, help="AUTH_BCRYPT_COST of the service and the seeded "
                   "hashes (default 12, the service's default)")
    p.add_argument("--duration", default="30s", help="measured phase of each scenario (k6 duration, default 30s)")
    p.add_argument("--soak-duration", default="2m", help="length of the soak (default 2m)")
    p.add_argument("--vus", type=int, default=32, help="concurrent clients for register, login, me and the "
                   "read ceiling (default 32)")
    p.add_argument("--overload-factor", type=float, default=4.0,
                   help="overload offers this many times the measured bcrypt rate (default 4)")
    p.add_argument("--bcrypt-seconds", type=float, default=8.0, help="length of the bcrypt ceiling measurement")
    p.add_argument("--refresh-baseline", type=float, default=targets.REFRESH_BASELINE, metavar="PER_SECOND",
                   help="rotations/s the refresh target (1.5x) is compared with (default %(default)g, the first "
                   "round's figure through PgBouncer)")
    p.add_argument("--set", action="append", default=[], metavar="[SCENARIO.]NAME=VALUE",
                   help="a k6 parameter (__ENV) for every scenario, or one scenario")
    p.add_argument("--database", choices=["pgbouncer", "direct"], default="pgbouncer",
                   help="pgbouncer (default, as in production: transaction pooling, statement cache off) or "
                   "direct to PostgreSQL with asyncpg's statement cache on (what PgBouncer >= 1.21 would allow)")
    p.add_argument("--service-env", action="append", default=[], metavar="AUTH_NAME=VALUE",
                   help="extra service setting, e.g. AUTH_HASH_QUEUE_SIZE=8 (repeatable)")
    p.add_argument("--profile", choices=["register", "login", "me", "refresh"], default=None,
                   help="afterwards, run this scenario again under py-spy and report where the CPU goes")
    p.add_argument("--sample-interval", type=float, default=1.0, help="seconds between CPU/RSS samples")
    p.add_argument("--out", type=Path, default=None, help="output folder (default k6/results/<UTC time>)")
    p.add_argument("--keep-raw", action="store_true", help="keep k6's raw CSV points (large) in the output")
    p.add_argument("--smoke", action="store_true",
                   help="seconds of tiny load at bcrypt cost 4 with 200 users: checks the scripts work (CI)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    if options.smoke:
        options.users, options.bcrypt_cost, options.workers = min(options.users, 200), 4, 1
        options.duration, options.soak_duration, options.vus, options.bcrypt_seconds = "2s", "3s", 4, 0.5
        options.sample_interval = min(options.sample_interval, 0.5)
        options.set = [f"{name}={value}" for name, value in SMOKE_SETTINGS.items()] + options.set
    chosen = [name.strip() for name in options.scenarios.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SUITE))
    if unknown:
        parser().error(f"unknown scenarios: {', '.join(unknown)} (choose from {', '.join(SUITE)})")
    if options.runs < 1:
        parser().error("--runs must be at least 1")
    if options.scale_users and options.scale_users <= options.users:
        parser().error("--scale-users must be larger than --users")
    for duration in (options.duration, options.soak_duration):
        scripts.seconds(duration)  # a typo fails here, not minutes later in k6
    out = options.out or processes.ROOT / "k6" / "results" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    bench = runner.Runner(options, [name for name in SUITE if name in chosen], settings(options.set), out)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` unwinds like Ctrl-C: everything gets stopped
    try:
        bench.run()
    except (processes.BenchError, devtools.stack.StackError) as error:
        bench.failures.append(str(error))
        print(f"error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        bench.failures.append("interrupted")
        print("interrupted: stopping everything", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        bench.finish()
    return 1 if bench.failures else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def settings(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"k6/run: --set expects [SCENARIO.]NAME=VALUE, got {pair!r}")
        found[name] = value
    return found


if __name__ == "__main__":
    sys.exit(main())
