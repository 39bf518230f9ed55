"""schemathesis against `authsvc serve` on PostgreSQL behind PgBouncer: every check, seeded and bounded.

`scripts/fuzz` runs the same with a bigger budget (FUZZ_EXAMPLES per operation, FUZZ_SEED), on every
operation or on those whose path matches FUZZ_PATHS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import httpx
import pytest

from devtools.stack import Stack
from service.config import Settings
from tests.service.conftest import PASSWORD, wipe
from tests.service.test_oauth_serve import authsvc
from tests.service.test_observability_serve import serving

pytestmark = pytest.mark.anyio

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))  # per operation: about 1,400 cases in all, 30 s here
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
PATHS = os.environ.get("FUZZ_PATHS", "")  # a regular expression; empty: every operation
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
ROOT = Path(__file__).parents[2]  # for the hooks module


async def access_token(client: httpx.AsyncClient, username: str) -> str:
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    response = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def oauth_client(stack: Stack, settings: Settings) -> tuple[str, str]:
    """A confidential client that may use every grant: /oauth2/* answer its requests, not just 401."""
    status, out, err = await authsvc(
        stack, settings, "clients", "create", "fuzzer", "--grant-type", "password", "--grant-type", "refresh_token",
        "--grant-type", "client_credentials", "--scope", "profile email",
    )
    assert status == 0, err
    created = json.loads(out)
    return created["client_id"], created["client_secret"]


async def test_schemathesis_with_every_check_finds_no_failure(
    settings: Settings, stack: Stack, tmp_path: Path
) -> None:
    client_id, client_secret = await oauth_client(stack, settings)
    async with serving(settings, stack, tmp_path) as (url, _, _), httpx.AsyncClient(base_url=url) as client:
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            "cache = { enabled = false }\n"  # no crashes replayed from an earlier run: the seed says it all
            # the caller's own token; logout-all gets another user's, so that it does not end the first
            f'[auth.openapi.bearer]\nbearer = "{await access_token(client, "fuzzer")}"\n'
            f'[auth.openapi.clientBasic]\nusername = "{client_id}"\npassword = "{client_secret}"\n'
            '[auth.openapi.introspectionBasic]\nusername = "introspect"\npassword = "introspection-secret"\n'
            '[auth.openapi.introspectionBearer]\nbearer = "introspection-secret"\n'
            '[[operations]]\ninclude-path = "/api/v1/auth/logout-all"\n'
            f'headers = {{ Authorization = "Bearer {await access_token(client, "leaver")}" }}\n'
        )
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/openapi.json",
            "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
            "--generation-database", "none", "--no-color", "--warnings", "off",
            *(["--include-path-regex", PATHS] if PATHS else []),
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.service.fuzz_hooks", "PYTHONPATH": str(ROOT)},
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    await wipe(stack)
    report = output.decode()
    print(report)  # shown by `pytest -s` (scripts/fuzz): what ran, phase by phase
    assert process.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts is not None, report
    generated, passed = map(int, counts.groups())
    assert generated == passed >= 200, report  # a few hundred cases, every one passing every check
