"""The CRDs as the tests use them (AuthConfig unless told otherwise): schema, and the API server's defaulting."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "auth-platform" / "crds" / "authconfigs.yaml"  # Helm installs it from crds/
CLIENT_CRD_PATH = ROOT / "charts" / "auth-platform" / "crds" / "authclients.yaml"


@functools.cache
def crd(path: Path = CRD_PATH) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def version(path: Path = CRD_PATH) -> dict[str, Any]:
    (only,) = crd(path)["spec"]["versions"]
    return copy.deepcopy(only)


def openapi(path: Path = CRD_PATH) -> dict[str, Any]:
    return version(path)["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def defaulted(obj: Any, schema: dict[str, Any] | None = None) -> Any:
    """Apply the schema's defaults as the API server does: absent fields get theirs, recursively."""
    schema = openapi() if schema is None else schema
    if isinstance(obj, dict) and "properties" in schema:
        result = dict(obj)
        for key, sub in schema["properties"].items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = defaulted(result[key], sub)
        return result
    if isinstance(obj, list) and "items" in schema:
        return [defaulted(item, schema["items"]) for item in obj]
    return obj


def nested(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The sub-schema at a dotted path of properties, e.g. ``spec.tokens``."""
    for part in path.split("."):
        schema = schema["properties"][part]
    return schema
