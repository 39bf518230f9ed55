"""One benchmark run, step by step: the stack, the seeded users, the ceilings, the service, the k6 scenarios, the
optional users-table growth and profile; then results.json and report.html (also after a failure).

Processes are started here and always stopped here: the stack by its context manager, the servers by
`processes.stop`, k6 by `scripts.run`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import devtools.stack
from k6 import analysis, ceilings, processes, profile, report, sampler, scripts, seed, targets, usage
from service.passwords import available_cpus

ROOT = processes.ROOT


class Runner:
    def __init__(self, options: argparse.Namespace, scenarios: list[str], settings: dict[str, str],
                 out: Path) -> None:
        self.options = options
        self.scenarios = scenarios
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(exist_ok=True)
        self.k6 = scripts.binary()
        self.sampler = sampler.Sampler(options.sample_interval)
        self.failures: list[str] = []
        self.run_id = "r" + secrets.token_hex(3)
        self.settings = settings
        self.runs: dict[str, dict[str, Any]] = {}  # every k6 run, by its label ("login", "login (run 2)"…)
        self.repetitions: list[dict[str, Any]] = []  # per run of the suite: ceilings, labels of its k6 runs, targets
        self.profile: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "available_cpus": available_cpus(), "workers": options.workers,
            "bcrypt_cost": options.bcrypt_cost, "database": options.database, "users": options.users,
            "scale_users": options.scale_users,
            "duration": options.duration, "soak_duration": options.soak_duration, "vus": options.vus,
            "smoke": options.smoke, "service_env": options.service_env, "settings": options.set,
            "runs": options.runs, "refresh_baseline": options.refresh_baseline,
            "loadavg_before": os.getloadavg(), "k6": processes.output([self.k6, "version"]).strip(),
            "python": sys.version.split()[0], "commit": processes.git_commit(),
            "service_digest": processes.digest(ROOT / "service"),
            "command": " ".join(["k6/run", *sys.argv[1:]]),
        }
        self._service: subprocess.Popen[bytes] | None = None
        self._base_url = ""
        self._keys = Path(tempfile.mkdtemp(prefix="authsvc-bench-keys-"))

    # the run, step by step

    def run(self) -> None:
        step(f"results in {self.out}")
        self.sampler.watch("runner", os.getpid())
        self.sampler.start()
        with devtools.stack.Stack(self.logs) as stack:
            self.sampler.watch("postgres", stack.postgres.pid)
            self.sampler.watch("pgbouncer", stack.pgbouncer.pid)
            self.sampler.watch("redis", stack.redis.pid)
            step(f"stack up: PostgreSQL :{stack.postgres.port}, PgBouncer :{stack.pgbouncer.port} "
                 f"(transaction pooling), Redis :{stack.redis.port}")
            environ = self._service_environ(stack)
            processes.cli(["migrate"], {**environ, "AUTH_DATABASE_URL": stack.database_url}, self.logs / "migrate.log")
            processes.cli(["keys", "generate", "--dir", str(self._keys)], environ, self.logs / "keys.log")
            hashed = seed.password_hash(self.options.bcrypt_cost)
            took = asyncio.run(seed.users(stack.database_url, 0, self.options.users, hashed))
            self.meta["seed_seconds"] = {str(self.options.users): round(took, 2)}
            step(f"seeded {self.options.users} users by COPY in {took:.1f}s (one shared hash at cost "
                 f"{self.options.bcrypt_cost})")
            for index in range(self.options.runs):
                # each run measures its own ceilings and starts a fresh service: runs are independent samples
                self.repetitions.append({"ceilings": {}, "labels": {}})
                if self.options.runs > 1:
                    step(f"run {index + 1} of {self.options.runs}")
                self._measure_ceilings()
                self._start_service(environ)
                try:
                    for name in self.scenarios:
                        self._scenario(name)
                    if index == self.options.runs - 1 and self.options.scale_users:
                        self._scale(stack.database_url, hashed)
                    if index == self.options.runs - 1 and self.options.profile:
                        self._profile(self.options.profile)
                finally:  # before the stack goes: a service losing its database mid-drain only adds noise to its log
                    self._stop_service()

    @property
    def ceilings(self) -> dict[str, Any]:
        """The current run's ceilings."""
        found: dict[str, Any] = self.repetitions[-1]["ceilings"] if self.repetitions else {}
        return found

    def finish(self) -> None:
        """Stops what is still running, writes results.json and report.html (also after a failure)."""
        self._stop_service()
        self.sampler.stop()
        shutil.rmtree(self._keys, ignore_errors=True)
        self.meta["ended"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.meta["loadavg_after"] = os.getloadavg()
        self.meta["metrics_endpoint"] = self.sampler.metrics_status
        results: dict[str, Any] = {
            "meta": self.meta, "ceilings": self.repetitions[0]["ceilings"] if self.repetitions else {},
            "runs": self.runs, "profile": self.profile, "failures": self.failures, "repetitions": self.repetitions,
        }
        results["noise"] = usage.noise(results, self.sampler.samples)
        for index, repetition in enumerate(self.repetitions):
            last = index == len(self.repetitions) - 1
            repetition["targets"] = targets.targets({
                "meta": self.meta, "ceilings": repetition["ceilings"], "profile": self.profile if last else None,
                "runs": {name: self.runs[label] for name, label in repetition["labels"].items()},
            })
        results["targets"] = targets.combine([repetition["targets"] for repetition in self.repetitions]
                                             ) if self.repetitions else []
        results["samples"] = [
            {"at": s.at, "cpu": s.cpu, "rss": s.rss, "machine_cpu": s.machine_cpu, "metrics": s.metrics}
            for s in self.sampler.samples
        ]
        (self.out / "results.json").write_text(json.dumps(finite(results), indent=1))
        (self.out / "report.html").write_text(report.render(results))
        targets.print_table(results["targets"], smoke=self.options.smoke)
        print(f"\nreport: {self.out / 'report.html'}\nresults: {self.out / 'results.json'}")
        for failure in self.failures:
            print(f"FAILED: {failure}", file=sys.stderr)

    def _measure_ceilings(self) -> None:
        threads = available_cpus()
        step(f"ceiling 1/2: raw bcrypt at cost {self.options.bcrypt_cost}, {threads} threads, "
             f"{self.options.bcrypt_seconds:g}s")
        begun = time.time()
        rate: dict[str, Any] = {**ceilings.bcrypt_rate(self.options.bcrypt_cost, self.options.bcrypt_seconds, threads)}
        rate["cpu"] = usage.cpu(self.sampler.between(begun, time.time()))
        self.ceilings["bcrypt"] = rate
        print(f"    {rate['rate']:.2f} hashes/s from {rate['cpu_ms_per_hash']:.0f} ms of CPU per hash "
              f"({rate['wall_rate']:.2f}/s by the clock, with whatever else the machine ran)")

        if not self._needs_reads_ceiling():
            print("    the bare Starlette ceiling is skipped: no chosen scenario is compared with it")
            return
        step(f"ceiling 2/2: bare Starlette endpoint under uvicorn, {self.options.workers} workers")
        process, url = self._serve(["-m", "k6.ceilings"], os.environ.copy(), "bare", "/")
        try:
            run = self._k6("ceiling", "ceiling", {"BASE_URL": url, **self._params("ceiling")})
        finally:
            self._stop(process, "bare")
        phase = run["phases"].get("ceiling", {})
        self.ceilings["reads"] = {"rate": phase.get("throughput", math.nan), "p50_ms": phase.get("p50_ms"),
                                  "p99_ms": phase.get("p99_ms"), "vus": self.options.vus, "run": run["label"]}
        print(f"    {self.ceilings['reads']['rate']:.0f} requests/s")

    def _needs_reads_ceiling(self) -> bool:
        return any(analysis.CEILING_OF.get(phase) == "reads" for name in self.scenarios
                   for phase in analysis.PHASES[name])

    def _start_service(self, environ: dict[str, str]) -> None:
        route = "through PgBouncer" if self.options.database == "pgbouncer" else "straight to PostgreSQL"
        step(f"service: authsvc serve, {self.options.workers} uvicorn workers, bcrypt cost "
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
            raise processes.BenchError(f"the service is not running (see {self.logs / 'service.log'})")
        step(f"scenario {label}")
        params = {"BASE_URL": self._base_url, **self._params(name), **(extra or {})}
        run = self._k6(name, label, params)
        for phase, figures in run["phases"].items():
            ratio = figures.get("ceiling_ratio")
            print(f"    {phase:13} {figures['throughput']:8.1f}/s  p50 {targets.ms(figures['p50_ms'])}  p99 "
                  f"{targets.ms(figures['p99_ms'])}  errors {figures['errors']}"
                  + (f"  = {ratio:.0%} of the {analysis.CEILING_OF[phase]} ceiling" if ratio is not None else ""))
        return run

    def _scale(self, database_url: str, hashed: str) -> None:
        """Service time at the seeded size, then with the users table grown to --scale-users: the same light load
        (k6/scenarios/latency.js), so a difference comes from the table, not from queueing."""
        scale = self.options.scale_users
        self._scenario("latency", f"latency@{self.options.users}")
        step(f"growing the users table to {scale} (COPY)")
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
        measured = next(iter(analysis.PHASES[name]))  # the phase py-spy waits for: after setup logins and warm-up
        duration = max(1, int(scripts.seconds(params.get("DURATION", self.options.duration)) - 2))
        folded = self.out / f"profile-{name}.txt"
        step(f"profiling {name} with py-spy ({duration}s, every worker)")
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
        me_label = self.repetitions[-1]["labels"].get("me", "") if self.repetitions else ""
        me = self.runs.get(me_label, {}).get("phases", {}).get("me", {}).get("throughput", 0.0)
        # unique per run of the suite: registrations never collide with an earlier run's names
        run_id = f"{self.run_id}{len(self.repetitions)}" if o.runs > 1 else self.run_id
        params: dict[str, str] = {"USERS": str(o.users), "PASSWORD": seed.PASSWORD, "RUN_ID": run_id,
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
        name = label
        if self.options.runs > 1:
            label = f"{label} (run {len(self.repetitions)})"
        slug = label.replace(" ", "-").replace("(", "").replace(")", "").replace("@", "-at-")
        raw = self.out / f"{slug}.csv"
        summary = self.out / f"{slug}.summary.json"
        params = {**params, "SUMMARY_JSON": str(summary)}
        log_path = self.logs / f"k6-{slug}.log"
        begun = time.time()
        code = scripts.run(self.k6, script, params, raw, log_path, self.sampler, during)
        ended = time.time()
        run = analysis.analyse(script, label, params, raw, summary, begun, ended, code, self.sampler, self.ceilings)
        self.runs[label] = run
        self.repetitions[-1]["labels"][name] = label
        if code not in (0, 99):  # 99: thresholds crossed, judged below; anything else: k6 could not run
            self.failures.append(f"k6 {label} exited with {code} (see {log_path})")
        failed = [name for name, ok in run["thresholds"].items() if not ok]
        if failed:
            self.failures.append(f"{label}: thresholds crossed: {', '.join(failed)}")
            print(f"    thresholds crossed: {', '.join(failed)}")
        if not self.options.keep_raw:
            raw.unlink(missing_ok=True)
        return run

    # processes

    def _service_environ(self, stack: devtools.stack.Stack) -> dict[str, str]:
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

    def _serve(self, module: list[str], environ: dict[str, str], label: str,
               ready_path: str) -> tuple[subprocess.Popen[bytes], str]:
        """Starts a uvicorn server on a free loopback port, sampled as `label`, once `ready_path` answers 200."""
        log_path = self.logs / f"{label}.log"
        process, url = processes.spawn_server(module, environ, log_path, self.options.workers)
        self.sampler.watch(label, process.pid)
        try:
            processes.wait_ready(process, url + ready_path, label, log_path)
        except BaseException:
            self._stop(process, label)
            raise
        return process, url

    def _stop(self, process: subprocess.Popen[bytes], label: str) -> None:
        processes.stop(process)
        self.sampler.forget(label)


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def finite(value: Any) -> Any:
    """NaN and infinities → None: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
