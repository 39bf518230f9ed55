"""Throwaway PostgreSQL, PgBouncer and Redis on free loopback ports, for the tests and the benchmarks.

    with Stack(log_directory) as stack:
        stack.pgbouncer_url  # postgresql+asyncpg://auth@127.0.0.1:PORT/auth, transaction pooling

Standard library only, so it runs before the project's dependencies are installed. Each server runs in the
foreground as our child, in its own process group: stopping is a signal and a wait, and nothing outlives us
(context exit, then atexit, then a parent-death signal for when we are killed outright). A server that does
not start raises `StackError` with the end of its log. `python -m devtools.stack` runs a stack until Ctrl-C and
prints its settings as KEY=value lines.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

HOST = "127.0.0.1"
SUPERUSER = "postgres"
ROLE = "auth"  # login role of the service: owns its database, not a superuser
DATABASE = "auth"
STARTUP_TIMEOUT = 60.0  # seconds per server; initdb on a slow CI disk is the long pole
STOP_TIMEOUT = 15.0  # then SIGKILL
POLL_INTERVAL = 0.05
PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it

# what atexit stops, by id: servers, and stacks (which also remove their data)
_running: dict[int, Callable[[], None]] = {}


class StackError(RuntimeError):
    """A server is missing or did not start; the message says which, why, and what to install."""


class PortTaken(StackError):
    """Another process bound the port first."""


class Postgres:
    """A fresh cluster: superuser `postgres`, login role `auth` owning database `auth`, trust on loopback.

    Durability is off (fsync, full-page writes, synchronous commit): the data dies with the cluster, and
    tests that commit often should not wait for a disk.
    """

    def __init__(self, data: Path, logs: Path, *, port: int = 0) -> None:
        self.data = data  # cluster and socket; must be writable by the server's user
        self.port = port  # 0 until started: then kept, so a restart comes back on the same port
        self._server = _Server("PostgreSQL", logs / "postgres.log", signal.SIGINT)  # SIGINT: fast shutdown

    @property
    def pid(self) -> int | None:
        return self._server.pid

    def url(self, user: str = ROLE, database: str = DATABASE) -> str:
        return f"postgresql+asyncpg://{user}@{HOST}:{_started(self.port, 'PostgreSQL')}/{database}"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Creates the cluster on first start, then starts it (a no-op while running)."""
        if self._server.running:
            return
        deadline = time.monotonic() + timeout
        bindir = postgres_bindir()
        account = server_account()
        cluster = self.data / "pgdata"
        fresh = not (cluster / "PG_VERSION").exists()
        if fresh:
            initdb = [str(bindir / "initdb"), "-D", str(cluster), "-U", SUPERUSER, "-A", "trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
            self._server.run(initdb, account=account, cwd=self.data, deadline=deadline)

        def command(port: int) -> list[str]:
            settings = {
                "listen_addresses": HOST,
                "port": str(port),
                "unix_socket_directories": str(self.data),
                "max_connections": "200",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            return [str(bindir / "postgres"), "-D", str(cluster),
                    *(arg for name, value in settings.items() for arg in ("-c", f"{name}={value}"))]

        def ready(port: int) -> bool:
            # Only our postmaster writes "ready" in our cluster, and only once it listens: another server
            # answering on the port cannot pass for it
            pidfile = _read(cluster / "postmaster.pid").splitlines()
            ours = len(pidfile) >= 8 and pidfile[0] == str(self._server.pid) and pidfile[7].strip() == "ready"
            return ours and _output([str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(port),
                                     "-U", SUPERUSER, "-d", "postgres", "-t", "2"]) is not None

        self.port = self._server.start(command, ready, port=self.port, account=account, cwd=self.data,
                                       deadline=deadline)
        if fresh:
            psql = [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", HOST, "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"]
            # separate -c: CREATE DATABASE cannot run inside the implicit transaction of a multi-statement -c
            self._server.run([*psql, "-c", f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER",
                              "-c", f"CREATE DATABASE {DATABASE} OWNER {ROLE}"], deadline=deadline)

    def stop(self) -> None:
        self._server.stop()

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster and its backends; `start()` recovers on the same port."""
        self._server.kill()


class PgBouncer:
    """Debian's PgBouncer (1.18) in transaction pooling mode in front of `postgres`, trusting loopback."""

    def __init__(self, postgres: Postgres, data: Path, logs: Path, *, port: int = 0) -> None:
        self.postgres = postgres
        self.data = data  # config and socket; must be readable and writable by the server's user
        self.port = port
        # SIGTERM: immediate shutdown in 1.18 (SIGINT would wait for open transactions)
        self._server = _Server("PgBouncer", logs / "pgbouncer.log", signal.SIGTERM)

    @property
    def pid(self) -> int | None:
        return self._server.pid

    def url(self, user: str = ROLE, database: str = DATABASE) -> str:
        return f"postgresql+asyncpg://{user}@{HOST}:{_started(self.port, 'PgBouncer')}/{database}"

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Starts PgBouncer (a no-op while running); PostgreSQL must be started first."""
        if self._server.running:
            return
        deadline = time.monotonic() + timeout
        pgbouncer = executable("pgbouncer", "pgbouncer", "/usr/sbin/pgbouncer")
        upstream = f"host={HOST} port={_started(self.postgres.port, 'PostgreSQL')}"
        users = self.data / "userlist.txt"
        users.write_text(f'"{ROLE}" ""\n"{SUPERUSER}" ""\n')  # trust still wants the user listed

        def command(port: int) -> list[str]:
            config = self.data / "pgbouncer.ini"
            config.write_text(
                "[databases]\n"
                f"{DATABASE} = {upstream} dbname={DATABASE}\n"
                f"* = {upstream}\n"  # any other database of the same name, e.g. one per test worker
                "[pgbouncer]\n"
                f"listen_addr = {HOST}\n"
                f"listen_port = {port}\n"
                f"unix_socket_dir = {self.data}\n"
                "auth_type = trust\n"
                f"auth_file = {users}\n"
                f"admin_users = {SUPERUSER}\n"
                "pool_mode = transaction\n"
                "max_client_conn = 500\n"
                "default_pool_size = 20\n"
                # asyncpg sends these startup parameters, which PgBouncer cannot track per server connection
                "ignore_startup_parameters = extra_float_digits,options\n"
                # after a PostgreSQL restart (outage tests), log in again within a second, not the default 15
                "server_login_retry = 1\n"
            )
            return [pgbouncer, str(config)]

        psql = postgres_bindir() / "psql"

        def ready(port: int) -> bool:
            # end to end, as the service role; and only our PgBouncer leads to our PostgreSQL's port
            answer = _output([str(psql), "-X", "-q", "-A", "-t", "-h", HOST, "-p", str(port), "-U", ROLE,
                              "-d", DATABASE, "-c", "SELECT current_setting('port')"])
            return answer is not None and answer.strip() == str(self.postgres.port)

        self.port = self._server.start(command, ready, port=self.port, account=server_account(),
                                       cwd=self.data, deadline=deadline)

    def stop(self) -> None:
        self._server.stop()

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye to its clients; `start()` comes back on the same port."""
        self._server.kill()


class Redis:
    """redis-server with no persistence; `stop()` then `start()` brings it back empty on the same port."""

    def __init__(self, data: Path, logs: Path, *, port: int = 0) -> None:
        self.data = data
        self.port = port
        self._server = _Server("Redis", logs / "redis.log", signal.SIGTERM)

    @property
    def pid(self) -> int | None:
        return self._server.pid

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{_started(self.port, 'Redis')}/0"

    @property
    def running(self) -> bool:
        return self._server.running

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Starts Redis, on its previous port if it ran before (a no-op while running)."""
        if self._server.running:
            return
        redis = executable("redis-server", "redis-server", "/usr/bin/redis-server")

        def command(port: int) -> list[str]:
            return [redis, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                    "--dir", str(self.data), "--daemonize", "no", "--logfile", ""]

        def ready(port: int) -> bool:  # our process answers, not whoever else listens on the port
            return _redis_pid(port) == self._server.pid

        self.port = self._server.start(command, ready, port=self.port, account=None, cwd=self.data,
                                       deadline=time.monotonic() + timeout)

    def stop(self) -> None:
        self._server.stop()

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye to its clients; `start()` comes back empty on the same port."""
        self._server.kill()


class Stack:
    """PostgreSQL, PgBouncer in front of it, and Redis; stopped, and their data removed, on exit.

    Logs go to `logs` (kept; the data directory when none is given). Data lives in a private temporary
    directory: pytest's own is private to its user, and as root the servers run as `postgres`.
    """

    def __init__(self, logs: Path | None = None, *, timeout: float = STARTUP_TIMEOUT) -> None:
        self.timeout = timeout
        account = server_account()
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
        self.data = Path(tempfile.mkdtemp(prefix="authsvc-stack-"))
        if account is not None:
            os.chown(self.data, account.pw_uid, account.pw_gid)
        self.logs = self.data if logs is None else logs
        self.postgres = Postgres(self.data, self.logs)
        self.pgbouncer = PgBouncer(self.postgres, self.data, self.logs)
        self.redis = Redis(self.data, self.logs)
        _running[id(self)] = self.stop  # removes the data at exit even if never started

    @property
    def database_url(self) -> str:
        """The service role, straight to PostgreSQL."""
        return self.postgres.url()

    @property
    def pgbouncer_url(self) -> str:
        """The service role through PgBouncer (transaction pooling: use statement_cache_size=0)."""
        return self.pgbouncer.url()

    @property
    def admin_url(self) -> str:
        """The superuser, straight to PostgreSQL, database `auth`."""
        return self.postgres.url(SUPERUSER)

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def environ(self) -> dict[str, str]:
        """The service's settings for this stack: through PgBouncer, as in production."""
        return {
            "AUTH_DATABASE_URL": self.pgbouncer_url,
            "AUTH_DB_STATEMENT_CACHE_SIZE": "0",  # PgBouncer 1.18 in transaction mode
            "AUTH_REDIS_URL": self.redis_url,
        }

    def start(self) -> None:
        try:
            self.postgres.start(self.timeout)
            self.pgbouncer.start(self.timeout)
            self.redis.start(self.timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops every server (in reverse order of start) and removes the data; safe to call twice."""
        try:
            self.redis.stop()
            self.pgbouncer.stop()
            self.postgres.stop()
        finally:
            shutil.rmtree(self.data, ignore_errors=True)
            _running.pop(id(self), None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class _Server:
    """One server process: started on a free port, awaited until it answers, always reaped on stop."""

    def __init__(self, name: str, log: Path, stop_signal: signal.Signals) -> None:
        self.name = name
        self.log = log
        self.stop_signal = stop_signal
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where this run's output begins in the log

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self.running else None

    def start(self, command: Callable[[int], list[str]], ready: Callable[[int], bool], *, port: int,
              account: pwd.struct_passwd | None, cwd: Path, deadline: float) -> int:
        """Starts the server on `port`, or when 0 on a free one (another if it is taken); returns the port."""
        attempt = 1
        while True:
            chosen = port or free_port()
            self._spawn(command(chosen), account, cwd)
            try:
                self._wait(functools.partial(ready, chosen), deadline)
                return chosen
            except PortTaken:
                if port or attempt == PORT_ATTEMPTS:
                    raise
                attempt += 1

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(self.stop_signal)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the group: PostgreSQL's backends too
                process.wait()
        self._process = None
        _running.pop(id(self), None)  # only once stopped: an interrupted stop is retried at exit

    def kill(self) -> None:
        """SIGKILL to the server and its children, as a crash of its machine would; returns once all are gone.

        PostgreSQL's backends lead process groups of their own, so the group is not enough: the postmaster is
        stopped first (it can fork no more), its children listed, then all are killed.
        """
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGSTOP)
            children = _children(process.pid)
            for pid in [process.pid, *children]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(POLL_INTERVAL)  # until the kernel has torn them down (their shared memory too)
        self._process = None
        _running.pop(id(self), None)

    def run(self, argv: Sequence[str], *, account: pwd.struct_passwd | None = None, cwd: Path | None = None,
            deadline: float) -> None:
        """Runs a one-off setup command (initdb, psql) with its output in this server's log."""
        with self.log.open("ab") as log:
            start = log.tell()
            try:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=_environ(),
                    timeout=max(deadline - time.monotonic(), 1), check=False,
                    user=_uid(account), group=_gid(account), extra_groups=_groups(account))
            except subprocess.TimeoutExpired:
                raise StackError(f"{Path(argv[0]).name} timed out{self._tail(start)}") from None
        if done.returncode != 0:
            raise StackError(f"{Path(argv[0]).name} failed with status {done.returncode}{self._tail(start)}")

    def _spawn(self, argv: Sequence[str], account: pwd.struct_passwd | None, cwd: Path) -> None:
        with self.log.open("ab") as log:
            self._log_start = log.tell()
            # the child has its own copy of the log's descriptor
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=_environ(),
                start_new_session=True,  # Ctrl-C in a terminal reaches us only; we stop the servers in order
                preexec_fn=_die_with_parent(self.stop_signal),
                user=_uid(account), group=_gid(account), extra_groups=_groups(account))
        _running[id(self)] = self.stop

    def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        process = self._process
        if process is None:
            raise StackError(f"{self.name} was not started")
        while True:
            answered = ready()
            exited = process.poll() is not None
            tail = self._tail(self._log_start)
            if exited or "already in use" in tail:  # PgBouncer 1.18 only warns, and stays up without its port
                self.stop()
                kind = PortTaken if "already in use" in tail else StackError
                status = f"exited with status {process.returncode}" if exited else "could not bind its port"
                raise kind(f"{self.name} {status} while starting{tail}")
            if answered:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"{self.name} did not answer in time{self._tail(self._log_start)}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(POLL_INTERVAL)  # the poll interval, cut short if the server exits

    def _tail(self, start: int, lines: int = 40) -> str:
        try:
            with self.log.open("rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
        except OSError as error:
            return f" (its log {self.log} is unreadable: {error})"
        last = "\n".join(text.splitlines()[-lines:]) or "(empty)"
        return f"; the end of its log {self.log}:\n{last}"


def postgres_bindir() -> Path:
    """Where PostgreSQL's server binaries are: `pg_config --bindir`, else Debian's newest version."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run([pg_config, "--bindir"],
                                   capture_output=True, text=True, check=True, timeout=10)
            candidates.append(Path(found.stdout.strip()))
    # Debian keeps server binaries off PATH, in one directory per major version
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "postgres", "pg_isready", "psql")):
            return bindir
    raise StackError(_missing("the PostgreSQL server (initdb, postgres, pg_isready, psql)", "postgresql"))


def executable(name: str, package: str, *fallbacks: str) -> str:
    """The path of `name`, on PATH or else in `fallbacks` (/usr/sbin is not on a user's PATH)."""
    found = shutil.which(name) or next((path for path in fallbacks if os.access(path, os.X_OK)), None)
    if found is None:
        raise StackError(_missing(name, package))
    return found


def server_account() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL and PgBouncer: both refuse root, so as root the `postgres` user, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("running as root, and the `postgres` user (to run PostgreSQL and PgBouncer as, since "
                         "they refuse root) is " + _missing("", "postgresql").lstrip()) from None


def _missing(what: str, package: str) -> str:
    return (f"{what} not found: install the Debian package {package} (scripts/test does it when run as "
            f"root; otherwise: sudo apt-get install -y --no-install-recommends {package})")


def _started(port: int, name: str) -> int:
    if port == 0:
        raise StackError(f"{name} has not been started")
    return port


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _environ() -> dict[str, str]:
    # libpq and the servers read PG* variables (PGHOST, PGDATA, PGSSLMODE, ...): the caller's must not leak in
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def _output(argv: Sequence[str]) -> str | None:
    """What a client command prints, or None if it fails."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, env={**_environ(), "PGCONNECT_TIMEOUT": "2"}, timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # not written yet
        return ""


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent`, from /proc (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state, ppid, ...
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (which holds no memory; nobody may ever reap it in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _redis_pid(port: int) -> int | None:
    """The process id of the Redis answering on `port`, or None if none answers (yet)."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as connection:
            connection.sendall(b"INFO server\r\n")
            reply = b""
            while b"\nprocess_id:" not in reply or not reply.split(b"\nprocess_id:", 1)[1].count(b"\n"):
                chunk = connection.recv(65536)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    return int(reply.split(b"\nprocess_id:", 1)[1].split(b"\r", 1)[0])


# Popen switches user in the child before exec, so the server is our direct child and gets our signals
# itself (runuser would sit in between, with a PAM session and its own signal handling)
def _uid(account: pwd.struct_passwd | None) -> int | None:
    return None if account is None else account.pw_uid


def _gid(account: pwd.struct_passwd | None) -> int | None:
    return None if account is None else account.pw_gid


def _groups(account: pwd.struct_passwd | None) -> list[int] | None:
    return None if account is None else []  # drop root's supplementary groups


_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = getattr(ctypes.CDLL(None), "prctl", None)  # Linux only


def _die_with_parent(stop_signal: signal.Signals) -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to signal the server when we die without running atexit (SIGKILL...)."""
    # Linux ties the setting to the thread that forks: only the main thread lives as long as the process
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(stop_signal))
        if os.getppid() != parent:  # we died before it was armed
            os._exit(1)

    return arm


@atexit.register
def _stop_everything() -> None:
    for stop in reversed(list(_running.values())):
        with contextlib.suppress(Exception):
            stop()


def main() -> None:
    def terminate(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)  # unwinds the `with`, so `kill` stops the servers as Ctrl-C does

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background (ignored)
    try:
        with Stack() as stack:
            settings = {
                **stack.environ(),
                "STACK_DATABASE_URL": stack.database_url,
                "STACK_PGBOUNCER_URL": stack.pgbouncer_url,
                "STACK_ADMIN_URL": stack.admin_url,
                "STACK_REDIS_URL": stack.redis_url,
                "STACK_LOGS": str(stack.logs),
            }
            for name, value in settings.items():
                print(f"{name}={value}", flush=True)
            print("stack running; Ctrl-C stops it", file=sys.stderr, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    signal.pause()
    except StackError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
