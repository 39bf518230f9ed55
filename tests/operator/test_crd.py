"""The AuthConfig CRD: its schema against valid and invalid objects (jsonschema), its CEL rules (cel-python).

The API server defaults an object before it validates it and runs the CEL rules, so the tests do the
same (``schema.defaulted``), and hand CEL the values typed as the schema says (``number`` → double).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import celpy
import celpy.adapter
import httpx
import jsonschema
import pytest
import yaml
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from authsvc_operator import authconfig, rotation
from service.routes import meta
from tests.operator import schema

EXAMPLE: dict[str, Any] = {
    "apiVersion": "auth.platform.dev/v1alpha1",
    "kind": "AuthConfig",
    "metadata": {"name": "auth", "namespace": "auth"},
    "spec": {
        "targetRef": {"name": "auth"},
        "database": {"pool": {"size": 20, "maxOverflow": 5, "timeoutSeconds": 2.5}},
        "pgbouncer": {"poolMode": "transaction", "defaultPoolSize": 40, "maxClientConn": 2000},
        "rateLimits": {
            "routes": {"token": "20/minute", "tokenPerUser": "5 per minute"},
            "backoff": {"baseSeconds": 0.5, "capSeconds": 120},
            "trustedProxies": ["10.0.0.0/8", "fd00::/8"],
        },
        "passwords": {"bcryptCost": 13, "hashQueueSize": 128},
        "tokens": {"accessTtlSeconds": 600, "reuseGraceSeconds": 5, "clientCredentialsTtlSeconds": 3600},
        "cors": {"allowedOrigins": ["https://app.example.com", "*"]},
        "cleanup": {"schedule": "*/5 * * * *", "batchSize": 500, "retentionSeconds": 86400},
    },
}


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema.openapi())


def with_spec(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(EXAMPLE)
    node = obj["spec"]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return obj


def test_the_crd_is_a_namespaced_v1alpha1_with_a_status_subresource() -> None:
    crd = schema.crd()
    assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{authconfig.PLURAL}.{authconfig.GROUP}"
    assert (crd["spec"]["group"], crd["spec"]["scope"], crd["spec"]["names"]["kind"]) == (
        authconfig.GROUP, "Namespaced", authconfig.KIND
    )
    version = schema.version()
    assert (version["name"], version["served"], version["storage"]) == (authconfig.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_the_printer_columns_show_readiness_cost_schedule_and_age() -> None:
    columns = {c["name"]: c for c in schema.version()["additionalPrinterColumns"] if c.get("priority", 0) == 0}
    assert list(columns) == ["Ready", "Cost", "Schedule", "Active Kid", "Next Rotation", "Age"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Cost"]["jsonPath"] == ".spec.passwords.bcryptCost"
    assert columns["Schedule"]["jsonPath"] == ".spec.cleanup.schedule"
    assert columns["Active Kid"]["jsonPath"] == ".status.signingKeys.activeKid"
    # a string, not a date: kubectl shows a date as an age, and a time to come as "<invalid>"
    assert (columns["Next Rotation"]["type"], columns["Next Rotation"]["jsonPath"]) == (
        "string", ".status.signingKeys.nextRotation"
    )
    assert (columns["Age"]["type"], columns["Age"]["jsonPath"]) == ("date", ".metadata.creationTimestamp")


def leaves(node: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    if node.get("type") == "object":
        for key, sub in node["properties"].items():
            yield from leaves(sub, f"{path}.{key}")
    else:
        yield path, node


def test_every_field_is_typed_bounded_and_defaulted() -> None:
    for path, node in leaves(schema.nested(schema.openapi(), "spec")):
        assert node.get("type") in {"integer", "number", "string", "boolean", "array"}, path
        if path != "spec.targetRef.name":
            assert "default" in node, path
        if node["type"] in {"integer", "number"}:
            assert {"minimum", "maximum"} <= set(node), path
        if node["type"] == "string":
            assert "enum" in node or {"maxLength", "pattern"} <= set(node), path
        if node["type"] == "array":
            assert "maxItems" in node and "maxLength" in node["items"], path


def test_the_example_and_the_minimal_object_are_valid_once_defaulted() -> None:
    for obj in (EXAMPLE, {**EXAMPLE, "spec": {"targetRef": {"name": "auth"}}}):
        validator().validate(schema.defaulted(obj))


def test_the_docs_examples_are_valid_authconfigs() -> None:
    docs = (schema.ROOT / "docs" / "operator.md").read_text()
    blocks = [block.split("```", 1)[0] for block in docs.split("```yaml\n")[1:]]
    examples = [doc for block in blocks for doc in yaml.safe_load_all(block) if doc and doc.get("kind") == "AuthConfig"]
    assert len(examples) >= 5
    for example in examples:
        validator().validate(schema.defaulted(example))
        assert verdicts(example) == [], example["metadata"]["name"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("passwords.bcryptCost", 9),
        ("passwords.bcryptCost", 17),
        ("passwords.bcryptCost", "12"),
        ("passwords.hashQueueSize", -1),
        ("database.pool.size", 0),
        ("database.pool.maxOverflow", -1),
        ("database.pool.timeoutSeconds", 0),
        ("database.pool.recycleSeconds", -2),
        ("pgbouncer.poolMode", "statement"),
        ("pgbouncer.defaultPoolSize", 0),
        ("pgbouncer.maxClientConn", 100001),
        ("rateLimits.perIp", "lots"),
        ("rateLimits.routes.token", "30/min"),
        ("rateLimits.routes.register", "-1/minute"),
        ("rateLimits.backoff.baseSeconds", 61),
        ("rateLimits.trustedProxies", ["proxy.example.com"]),
        ("rateLimits.trustedProxies", ["10.0.0.0/8"] * 65),
        ("rateLimits.enabled", "yes"),
        ("tokens.accessTtlSeconds", 29),
        ("tokens.refreshTtlSeconds", 31536001),
        ("tokens.reuseGraceSeconds", 301),
        ("tokens.clientCredentialsTtlSeconds", 29),
        ("cors.allowedOrigins", ["https://app.example.com/path"]),
        ("cors.allowedOrigins", ["app.example.com"]),
        ("cleanup.schedule", "every ten minutes"),
        ("cleanup.schedule", "* * * *"),
        ("cleanup.batchSize", 0),
        ("cleanup.retentionSeconds", -1),
        ("targetRef.kind", "StatefulSet"),
        ("targetRef.name", "Auth_Service"),
        ("targetRef.name", "a" * 45),
    ],
)
def test_the_schema_refuses_out_of_range_and_malformed_values(path: str, value: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(schema.defaulted(with_spec(path, value)))


def test_the_schema_refuses_an_authconfig_without_a_target() -> None:
    with pytest.raises(jsonschema.ValidationError, match="targetRef"):
        validator().validate(schema.defaulted({**EXAMPLE, "spec": {"passwords": {"bcryptCost": 12}}}))


def numeric_bounds() -> Iterator[tuple[str, float]]:
    for path, node in leaves(schema.nested(schema.openapi(), "spec")):
        if node["type"] in {"integer", "number"}:
            yield path.removeprefix("spec."), node["minimum"]
            yield path.removeprefix("spec."), node["maximum"]


@pytest.mark.parametrize(("path", "value"), list(numeric_bounds()))
def test_the_service_accepts_every_bound_the_crd_admits(path: str, value: float) -> None:
    obj = schema.defaulted({"spec": {"targetRef": {"name": "auth"}}})
    node = obj["spec"]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    if path == "rateLimits.backoff.capSeconds":
        node["baseSeconds"] = 0  # the cap may not go below the base (a CEL rule, tested below)
    authconfig.validate(authconfig.settings_env(obj["spec"]))


@pytest.mark.parametrize("rate", ["30/minute", "100 per hour", "5/second", "1000/day", "10/2minutes"])
def test_rates_the_schema_admits_are_rates_the_service_reads(rate: str) -> None:
    validator().validate(schema.defaulted(with_spec("rateLimits.routes.token", rate)))
    authconfig.validate(authconfig.settings_env(with_spec("rateLimits.routes.token", rate)["spec"]))


# ---- CEL (x-kubernetes-validations)


class Rule:
    def __init__(self, path: str, node: dict[str, Any], text: str, message: str) -> None:
        self.path, self.node, self.text, self.message = path, node, text, message


def rules(node: dict[str, Any] | None = None, path: str = "") -> list[Rule]:
    node = schema.openapi() if node is None else node
    found = [Rule(path, node, r["rule"], r["message"]) for r in node.get("x-kubernetes-validations", [])]
    for key, sub in node.get("properties", {}).items():
        found += rules(sub, f"{path}.{key}".lstrip("."))
    return found


def typed(value: Any, node: dict[str, Any]) -> Any:
    """The value as the API server hands it to CEL: typed by the schema, not by its JSON spelling."""
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        return celpy.celtypes.MapType({
            celpy.celtypes.StringType(k): typed(v, props.get(k, {})) for k, v in value.items()
        })
    if kind == "array":
        return celpy.celtypes.ListType([typed(v, node.get("items", {})) for v in value])
    if kind == "number":
        return celpy.celtypes.DoubleType(value)
    if kind == "integer":
        return celpy.celtypes.IntType(value)
    return celpy.adapter.json_to_cel(value)


def at(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = obj[part]
    return obj


def evaluate(rule: Rule, new: dict[str, Any], old: dict[str, Any] | None = None) -> bool | None:
    """The rule's verdict; None for a transition rule on a create, or a field that is absent (the API
    server runs neither)."""
    if "oldSelf" in rule.text and old is None:
        return None
    try:
        at(new, rule.path)
    except KeyError:
        return None
    env = celpy.Environment()
    activation = {"self": typed(at(new, rule.path), rule.node)}
    if old is not None:
        activation["oldSelf"] = typed(at(old, rule.path), rule.node)
    return bool(env.program(env.compile(rule.text)).evaluate(activation))


def verdicts(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """The messages of the rules that refuse ``new`` (an update from ``old`` when given)."""
    new, old = schema.defaulted(new), (schema.defaulted(old) if old is not None else None)
    return [rule.message for rule in rules() if evaluate(rule, new, old) is False]


def test_the_crd_has_cross_field_rules() -> None:
    assert {rule.path for rule in rules()} == {
        "spec", "spec.targetRef", "spec.database.pool", "spec.pgbouncer", "spec.rateLimits.backoff", "spec.tokens",
        "spec.signingKeys",
    }


def test_the_rules_all_compile_and_pass_on_the_defaults_and_the_example() -> None:
    for obj in ({"spec": {"targetRef": {"name": "auth"}}}, EXAMPLE, with_spec("signingKeys", {})):
        assert verdicts(obj) == []
        assert verdicts(obj, old=obj) == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("rateLimits.backoff", {"baseSeconds": 30, "capSeconds": 10.5}, "capSeconds must be at least baseSeconds"),
        ("database.pool", {"size": 900, "maxOverflow": 101}, "size + maxOverflow is at most 1000"),
        ("pgbouncer", {"defaultPoolSize": 100, "maxClientConn": 50}, "maxClientConn must be at least defaultPoolSize"),
        ("tokens", {"accessTtlSeconds": 3600, "refreshTtlSeconds": 3600}, "accessTtlSeconds must be shorter"),
        ("tokens", {"refreshTtlSeconds": 86400, "sessionMaxAgeSeconds": 3600}, "refreshTtlSeconds cannot be longer"),
    ],
)
def test_a_cel_rule_refuses_inconsistent_fields(path: str, value: Any, message: str) -> None:
    refused = verdicts(with_spec(path, value))
    assert len(refused) == 1
    assert refused[0].startswith(message)


def test_a_cel_rule_allows_the_same_fields_when_consistent() -> None:
    assert verdicts(with_spec("rateLimits.backoff", {"baseSeconds": 10, "capSeconds": 10})) == []
    assert verdicts(with_spec("database.pool", {"size": 500, "maxOverflow": 500})) == []


def test_the_target_cannot_be_changed_on_an_existing_authconfig() -> None:
    moved = with_spec("targetRef.name", "other")
    assert verdicts(moved) == []  # creating it is fine
    assert verdicts(moved, old=EXAMPLE) == [
        "targetRef is immutable; create another AuthConfig for another Deployment"
    ]
    assert verdicts(with_spec("passwords.bcryptCost", 14), old=EXAMPLE) == []


# ---- signingKeys


def test_signing_keys_are_off_unless_asked_for_and_then_defaulted_like_the_operator() -> None:
    assert "signingKeys" not in schema.defaulted(EXAMPLE)["spec"]
    assert schema.defaulted(with_spec("signingKeys", {}))["spec"]["signingKeys"] == rotation.DEFAULTS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rotateEvery", "30d"),  # Go durations stop at hours
        ("rotateEvery", "720"),
        ("publishAhead", "1h 30m"),
        ("retireAfter", "-48h"),
        ("retireAfter", "1" * 33 + "h"),
        ("algorithm", "HS256"),
        ("algorithm", "ed25519"),
        ("secretName", "Keys"),
        ("secretName", "keys-"),
    ],
)
def test_the_schema_refuses_malformed_signing_key_fields(field: str, value: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(schema.defaulted(with_spec(f"signingKeys.{field}", value)))


def signing(tokens: dict[str, int] | None = None, **fields: str) -> dict[str, Any]:
    obj = with_spec("signingKeys", fields)
    if tokens is not None:
        obj["spec"]["tokens"] = tokens
    return obj


@pytest.mark.parametrize(
    ("obj", "refusal"),
    [
        (signing(publishAhead="10m"), None),
        (signing(publishAhead="9m59s"), "publishAhead must be at least 10m"),
        (signing(publishAhead="0.1h"), "publishAhead must be at least 10m"),
        (signing(rotateEvery="1h", publishAhead="1h"), None),
        (signing(rotateEvery="59m", publishAhead="1h"), "rotateEvery must be at least publishAhead"),
        # EXAMPLE's access tokens live 600 s and its client-credentials tokens 3600 s
        (signing(retireAfter="1h5m"), None),
        (signing(retireAfter="1h4m59s"), "signingKeys.retireAfter must be at least tokens.clientCredentials"),
        (signing({"accessTtlSeconds": 7200}, retireAfter="2h"), "signingKeys.retireAfter must be at least tokens.acc"),
        (signing({"accessTtlSeconds": 7200}, retireAfter="125m"), None),  # clientCredentials defaults to 900
    ],
)
def test_the_cel_rules_and_the_operator_agree_on_the_signing_key_bounds(
    obj: dict[str, Any], refusal: str | None
) -> None:
    refused = verdicts(obj)
    if refusal is None:
        assert refused == []
        rotation.Policy.from_spec(schema.defaulted(obj)["spec"])
    else:
        assert len(refused) == 1 and refused[0].startswith(refusal), refused
        with pytest.raises(authconfig.InvalidSpec):
            rotation.Policy.from_spec(schema.defaulted(obj)["spec"])


def test_the_lower_bound_of_publish_ahead_covers_the_jwks_max_age_the_service_sends() -> None:
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"resources": types.SimpleNamespace(jwks=b'{"keys":[]}')}

    async def fetch() -> str:
        app = Starlette(routes=meta.ROUTES, lifespan=contextlib.asynccontextmanager(lifespan))
        async with LifespanManager(app) as manager, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://auth.test"
        ) as client:
            response = await client.get("/.well-known/jwks.json")
        return response.headers["cache-control"]

    cache_control = anyio.run(fetch)
    max_age = int(cache_control.split("max-age=")[1].split(",")[0])
    assert dt.timedelta(seconds=max_age) == rotation.JWKS_MAX_AGE
    assert rotation.MIN_PUBLISH_AHEAD == dt.timedelta(minutes=10) == rotation.duration("10m")  # the CEL rule's
