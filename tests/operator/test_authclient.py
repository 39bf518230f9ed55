"""AuthClient, the pure part: spec → admin API bodies and the app's Secret; and its CRD (schema and CEL)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from authsvc_operator import authclient, authconfig
from tests.operator import schema
from tests.operator.test_crd import Rule, rules, typed

EXAMPLE: dict[str, Any] = {
    "apiVersion": "auth.platform.dev/v1alpha1",
    "kind": "AuthClient",
    "metadata": {"name": "orders-worker", "namespace": "shop"},
    "spec": {
        "grantTypes": ["client_credentials"],
        "scopes": ["orders:read", "orders:write"],
        "audiences": ["https://orders.example.com"],
        "secretName": "orders-worker-oauth",
        "tokenLifetime": "10m",
    },
}


def openapi() -> dict[str, Any]:
    return schema.openapi(schema.CLIENT_CRD_PATH)


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = schema.defaulted(obj, openapi())
    return result


def with_spec(field: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(EXAMPLE)
    if value is None:
        del obj["spec"][field]
    else:
        obj["spec"][field] = value
    return obj


def test_the_crd_is_a_namespaced_v1alpha1_next_to_authconfig() -> None:
    crd = schema.crd(schema.CLIENT_CRD_PATH)
    assert crd["metadata"]["name"] == f"{authclient.PLURAL}.{authconfig.GROUP}"
    assert (crd["spec"]["group"], crd["spec"]["scope"], crd["spec"]["names"]["kind"]) == (
        authconfig.GROUP, "Namespaced", authclient.KIND
    )
    version = schema.version(schema.CLIENT_CRD_PATH)
    assert (version["name"], version["subresources"]) == (authconfig.VERSION, {"status": {}})
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Ready", "Client ID", "Secret", "Age"]


def test_the_operators_defaults_are_the_crds() -> None:
    minimal = {"spec": {"secretName": "s"}}
    assert defaulted(minimal)["spec"] == authclient.with_defaults(minimal["spec"])


def test_the_example_and_a_minimal_one_are_valid() -> None:
    validator = jsonschema.Draft202012Validator(openapi())
    validator.validate(defaulted(EXAMPLE))
    validator.validate(defaulted({**EXAMPLE, "spec": {"secretName": "s"}}))
    assert verdicts(EXAMPLE) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("secretName", None),
        ("secretName", "Orders"),
        ("grantTypes", []),
        ("grantTypes", ["authorization_code"]),
        ("scopes", ["two words"]),
        ("scopes", ['quote"d']),
        ("audiences", [""]),
        ("audiences", ["has space"]),
        ("tokenLifetime", "10"),
        ("tokenLifetime", "1d"),
        ("rotationOverlap", "-1h"),
    ],
)
def test_the_schema_refuses_malformed_fields(field: str, value: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(openapi()).validate(defaulted(with_spec(field, value)))


def verdicts(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    new, old = defaulted(new), (defaulted(old) if old is not None else None)
    refused = []
    for rule in rules(openapi()):
        node: Any = new
        for part in rule.path.split("."):
            if part not in node:
                break
            node = node[part]
        else:
            if "oldSelf" in rule.text and old is None:
                continue
            if evaluate(rule, node, old) is False:
                refused.append(rule.message)
    return refused


def evaluate(rule: Rule, value: Any, old: dict[str, Any] | None) -> bool:
    env = celpy.Environment()
    activation = {"self": typed(value, rule.node)}
    if old is not None:
        node: Any = old
        for part in rule.path.split("."):
            node = node[part]
        activation["oldSelf"] = typed(node, rule.node)
    return bool(env.program(env.compile(rule.text)).evaluate(activation))


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [
        ("tokenLifetime", "30s", None),
        ("tokenLifetime", "24h", None),
        ("tokenLifetime", "29s", "tokenLifetime must be 30s to 24h"),
        ("tokenLifetime", "24h1s", "tokenLifetime must be 30s to 24h"),
        ("rotationOverlap", "0s", None),
        ("rotationOverlap", "721h", "rotationOverlap is at most 720h"),
    ],
)
def test_cel_rules_and_the_operator_agree_on_the_lifetimes(field: str, value: str, refusal: str | None) -> None:
    obj = with_spec(field, value)
    spec = defaulted(obj)["spec"]
    if refusal is None:
        assert verdicts(obj) == []
        authclient.registration(spec, "shop", "x")
        authclient.overlap(spec)
    else:
        assert verdicts(obj) == [refusal]
        with pytest.raises(authconfig.InvalidSpec, match=refusal):
            authclient.registration(spec, "shop", "x")
            authclient.overlap(spec)


def test_the_secret_name_cannot_change() -> None:
    assert verdicts(with_spec("secretName", "other"), old=EXAMPLE) == [
        "secretName is immutable; create another AuthClient for another Secret"
    ]
    assert verdicts(with_spec("scopes", ["orders:read"]), old=EXAMPLE) == []


def test_the_registration_asks_for_a_confidential_client_as_the_spec_says() -> None:
    assert authclient.registration(EXAMPLE["spec"], "shop", "orders-worker") == {
        "name": "shop/orders-worker",
        "grant_types": ["client_credentials"],
        "scope": "orders:read orders:write",
        "audiences": ["https://orders.example.com"],
        "type": "confidential",
        "access_token_ttl": 600,
    }
    minimal = authclient.registration({"secretName": "s"}, "n" * 63, "x" * 253)
    assert (minimal["access_token_ttl"], minimal["scope"], len(minimal["name"])) == (None, "", 100)


def test_a_registration_that_matches_the_spec_needs_no_change() -> None:
    live = {"client_id": "abc", "name": "shop/orders-worker", "type": "confidential",
            "grant_types": ["client_credentials"], "scope": "orders:write orders:read",
            "audiences": ["https://orders.example.com"], "access_token_ttl": 600, "disabled_at": None}
    assert authclient.changes(live, EXAMPLE["spec"]) == {}
    drifted = {**live, "scope": "orders:read", "access_token_ttl": None, "grant_types": ["password"]}
    assert authclient.changes(drifted, EXAMPLE["spec"]) == {
        "grant_types": ["client_credentials"], "scope": "orders:read orders:write", "access_token_ttl": 600
    }


def test_the_secret_holds_the_four_fields_the_app_reads() -> None:
    credentials = {"client_id": "abc", "client_secret": "s3cret", "token_endpoint": "https://a/oauth2/token",
                   "issuer": "https://a"}
    secret = authclient.secret("orders-worker-oauth", "orders-worker", credentials, "now")
    assert secret["metadata"]["annotations"] == {authclient.ROTATED_FOR: "now"}
    assert secret["metadata"]["labels"][authclient.OWNER_LABEL] == "orders-worker"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == credentials
    assert authclient.read(secret) == credentials
    assert authclient.secret("s", "o", credentials, None)["metadata"]["annotations"] == {}


def test_the_docs_example_is_a_valid_authclient() -> None:
    docs = (schema.ROOT / "docs" / "operator.md").read_text()
    blocks = [block.split("```", 1)[0] for block in docs.split("```yaml\n")[1:]]
    (example,) = [doc for block in blocks for doc in yaml.safe_load_all(block) if doc and doc["kind"] == "AuthClient"]
    jsonschema.Draft202012Validator(openapi()).validate(defaulted(example))
    assert verdicts(example) == []
    authclient.registration(defaulted(example)["spec"], "shop", "orders-worker")
