"""The wheel is the product: built as a release builds it (sdist, then the wheel from the sdist), installed
into a new virtualenv with no source tree on ``sys.path``, and run from an unrelated folder: ``authsvc
keys generate``, ``migrate``, ``serve`` and ``cleanup`` on PostgreSQL, and ``serve`` on the embedded default.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from alembic.script import ScriptDirectory

from devtools.stack import Stack, free_port
from tests.service.conftest import scratch_database

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 600  # pip fetches setuptools for the isolated build, and the dependencies for the venv


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=BUILD_TIMEOUT)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("authsvc-*-py3-none-any.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding the wheel and what it declares, nothing else; returns its bin folder."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # this environment's pip, told which Python to install for; it reuses pip's cache of downloads
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python"), "install", "--quiet",
         "--no-compile", str(wheel)],
        check=True, capture_output=True, timeout=BUILD_TIMEOUT, env=env,
    )
    return folder / "bin"


def packaged_folders() -> dict[str, str]:
    """Repository folder → import name, from pyproject.toml's package-dir."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {folder: name for name, folder in package_dir.items()}


def source_files(folder: str) -> list[Path]:
    return [p for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".orig"}]


def test_the_wheel_holds_every_module_and_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"authsvc_migrations/env.py", "authsvc_migrations/script.py.mako"} <= names
    migrations = sorted(p.name for p in (ROOT / "alembic" / "versions").glob("*.py"))
    assert migrations and {f"authsvc_migrations/versions/{name}" for name in migrations} <= names
    for folder, name in packaged_folders().items():
        expected = {f"{name}/{p.relative_to(ROOT / folder).as_posix()}" for p in source_files(folder)}
        assert expected <= names, expected - names
    assert not [n for n in names if n.split("/")[0] in {"tests", "alembic", "operator", "charts", "k6"}]


def test_the_sdist_holds_the_folders_the_wheel_is_built_from(dist: Path, wheel: Path) -> None:
    (sdist,) = dist.glob("authsvc-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for folder in packaged_folders():
        expected = {p.relative_to(ROOT).as_posix() for p in source_files(folder)}
        assert expected <= names, expected - names


def test_a_checkout_shadows_neither_alembic_nor_operator() -> None:
    """alembic/ and operator/ have no __init__.py: from the repository root, the real modules still win."""
    result = subprocess.run(
        [sys.executable, "-c", "import alembic.command, operator; print(alembic.__file__); print(operator.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )
    for path in result.stdout.split():
        assert not Path(path).is_relative_to(ROOT / "alembic") and not Path(path).is_relative_to(ROOT / "operator")


def run(bin_dir: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "authsvc"), *args], cwd=cwd, env=clean(bin_dir, env),
                          capture_output=True, text=True, timeout=120, check=False)


def clean(bin_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """Only the virtualenv on PATH, no PYTHONPATH, no AUTH_* but the test's own."""
    return {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "AUTH_BCRYPT_COST": "4", **env}


def read(path: Path) -> str:
    return path.read_text()


@contextlib.asynccontextmanager
async def serving(bin_dir: Path, cwd: Path, env: dict[str, str], log: Path) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    with log.open("wb") as stderr:
        process = await anyio.open_process([str(bin_dir / "authsvc"), "serve", "--port", str(port)], cwd=cwd,
                                           env=clean(bin_dir, env), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with anyio.fail_after(60):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health/startup")).status_code == 200:
                            break
                    assert process.returncode is None, read(log)
                    await anyio.sleep(0.1)
            yield client
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await process.wait()
    assert process.returncode in (0, -signal.SIGTERM), read(log)  # uvicorn re-raises the signal it handled


async def round_trip(client: httpx.AsyncClient, username: str = "alice") -> None:
    """register → login → me → refresh → me with the new token, over HTTP."""
    account = {"username": username, "email": f"{username}@example.com", "password": "correct horse"}
    registered = await client.post("/api/v1/auth/register", json=account)
    assert registered.status_code == 201, registered.text
    login = await client.post("/api/v1/auth/token", data={"username": username, "password": "correct horse"})
    assert login.status_code == 200, login.text
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert (me.status_code, me.json()["username"]) == (200, username)
    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    again = await client.get("/api/v1/auth/me",
                             headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"})
    assert again.status_code == 200


async def readme_try_it(base_url: str) -> None:
    """The README's "Try it" block, pasted into bash as it is (only the port differs)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Try it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert "localhost:8000" in block
    script = block.replace("localhost:8000", base_url.removeprefix("http://").replace("127.0.0.1", "localhost"))
    with anyio.fail_after(60):
        result = await anyio.run_process(["bash", "-euo", "pipefail", "-c", script], check=False)
    assert result.returncode == 0, result.stderr.decode()
    output, decoder, documents = result.stdout.decode(), json.JSONDecoder(), []
    while output.strip():  # curl prints each body as it is, without a newline after it
        document, end = decoder.raw_decode(output.lstrip())
        documents.append(document)
        output = output.lstrip()[end:]
    registered, me, openapi, discovery = documents
    assert registered["username"] == "alice"
    assert me["username"] == "alice"  # the captured ACCESS_TOKEN worked
    assert "/api/v1/auth/me" in openapi["paths"]
    assert discovery["token_endpoint"].endswith("/oauth2/token")


def installed_only(bin_dir: Path, cwd: Path) -> None:
    """The commands import the installed copy, and nothing of the repository is on sys.path."""
    probe = ("import json, sys, service, authsvc_migrations, authsvc_operator.authconfig as a; "
             "print(json.dumps({'paths': sys.path, 'files': [service.__file__, a.__file__, "
             "*authsvc_migrations.__path__]}))")
    result = subprocess.run([str(bin_dir / "python"), "-c", probe], cwd=cwd, env=clean(bin_dir, {}),
                            capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(result.stdout)
    venv = bin_dir.parent
    assert all(Path(f).resolve().is_relative_to(venv.resolve()) for f in seen["files"]), seen["files"]
    assert not [p for p in seen["paths"] if p and Path(p).resolve().is_relative_to(ROOT)], seen["paths"]


def repository_revisions() -> list[str]:
    """The repository's migrations, oldest first: what the installed wheel must apply."""
    scripts = ScriptDirectory(str(ROOT / "alembic"))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


@pytest.mark.anyio
async def test_the_installed_wheel_migrates_serves_and_cleans_up_on_postgresql(
    venv: Path, stack: Stack, tmp_path: Path
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    installed_only(venv, cwd)
    async with scratch_database(stack) as url:
        # trust authentication ignores the password; it must not show up in any output
        env = {"AUTH_DATABASE_URL": url.replace("auth@", "auth:hunter2@", 1), "AUTH_KEYS_DIR": str(cwd / "keys"),
               "AUTH_REDIS_URL": stack.redis_url}
        generated = run(venv, cwd, env, "keys", "generate", "--kid", "wheel")
        assert generated.returncode == 0 and generated.stdout.strip() == str(cwd / "keys" / "wheel.pem")

        migrated = run(venv, cwd, env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        database = url.rsplit("@", 1)[1]  # 127.0.0.1:PORT/NAME
        revisions = repository_revisions()
        assert migrated.stdout.strip() == f"schema at {revisions[-1]} on PostgreSQL {database}"
        migration_logs = [json.loads(line) for line in migrated.stderr.splitlines()]
        applied = [r["message"].split(":")[0] for r in migration_logs]
        assert applied == [f"migration {revision} applied" for revision in revisions]  # no chatter

        log = tmp_path / "serve.log"
        async with serving(venv, cwd, env, log) as client:
            await round_trip(client)
        records = [json.loads(line) for line in read(log).splitlines()]
        (summary,) = [r["message"] for r in records if r["logger"] == "service.cli"]
        assert summary.startswith(f"authsvc 0.1.0 on PostgreSQL {database}, Redis {stack.redis_url[8:]}, "
                                  "signing key wheel (EdDSA), keys wheel, bcrypt cost 4, hash pool of ")

        cleaned = run(venv, cwd, env, "cleanup")
        assert cleaned.returncode == 0, cleaned.stderr
        assert cleaned.stdout.startswith("cleanup: deleted ")
        for output in (generated, migrated, cleaned):
            assert "hunter2" not in output.stdout + output.stderr
        assert "hunter2" not in read(log)
    # nothing but the keys asked for, and (no AUTH_SMTP_URL) the registration's mail as a file (docs/accounts.md)
    assert sorted(p.name for p in cwd.iterdir()) == [".authsvc", "keys"]
    assert [p.name for p in (cwd / ".authsvc").iterdir()] == ["mail"]


@pytest.mark.anyio
async def test_the_installed_wheel_serves_the_embedded_default_from_an_empty_folder(
    venv: Path, tmp_path: Path
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    async with serving(venv, cwd, {}, tmp_path / "serve.log") as client:
        await readme_try_it(str(client.base_url))
        await round_trip(client, "bob")
    assert (cwd / ".authsvc" / "auth.db").is_file()
    assert [p.name for p in (cwd / ".authsvc" / "keys").iterdir()] == ["local.pem"]
    cleaned = run(venv, cwd, {}, "cleanup")
    assert cleaned.returncode == 0 and cleaned.stdout.startswith("cleanup: deleted "), cleaned.stderr
