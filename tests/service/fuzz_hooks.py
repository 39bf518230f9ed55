"""schemathesis hooks for tests/service/test_fuzz.py (``SCHEMATHESIS_HOOKS=tests.service.fuzz_hooks``).

Where the service is stricter than JSON Schema can say, a schema-valid case may be refused, and the
positive-data checks would call that a failure. Four such gaps exist, all stated in the schema's
descriptions:

* a password of at most 72 characters (``maxLength``) but more than 72 bytes of UTF-8: bcrypt's limit is
  in bytes, refused rather than truncated, and JSON Schema counts characters;
* an email address in one of RFC 6761's special-use domains (.test, .local, ...), which ``format: email``
  allows, email_validator refuses, and schemathesis' generator draws from (its top-level domains
  include ``test``);
* on /oauth2/*, a ``client_secret`` in the form of a request that also carries Basic credentials: one
  client authentication method per request (RFC 6749 §2.3), refused with invalid_request, and a body's
  schema cannot see the Authorization header;
* a form of more than ``web.FORM_MAX_FIELDS`` fields: a repeated field (an array) counts once per value,
  and no JSON Schema keyword adds up array lengths and properties (unknown parameters, which the forms
  ignore, may repeat).

For a positive case in a gap, the refusal (ST202, or ``oauth_form_refused`` below) is dropped when it
is the gap's own refusal, nothing else: the case is still sent, and a 500, a nonconforming answer or a
refusal for another reason still fails. ``filter_failure`` rather than ``filter_case`` because only it
also runs in the stateful phase. Negative cases are never touched: outside the schema the service is at
least as strict.

RFC 6749 §5.2 answers a wrong password or an unknown refresh token on /oauth2/token with 400
invalid_grant, so the schema names that operation as its oauth2 scheme's tokenUrl, and the positive-data
check then lets a 400 pass there, as it must for credentials that do not exist. That would also let a
malformed-request 400 pass; ``oauth_form_refused`` fails a schema-valid case refused as malformed.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from email_validator import SPECIAL_USE_DOMAIN_NAMES

from service import errors, passwords, web

MALFORMED = {"invalid_request", "unsupported_grant_type"}  # what /oauth2/* answers a request its schema refuses
REFUSALS = {"ST202"}  # schema-valid request rejected; and oauth_form_refused, a custom check (ST901)


def _positive(case: Any) -> bool:
    return case.meta is None or case.meta.generation.mode.name == "POSITIVE"


def _gaps(case: Any) -> list[str]:
    """The refusals (a part of each message) that gaps explain for this case: none when it is in none."""
    body, explained = case.body, []
    if not isinstance(body, dict):
        return explained
    for field in ("password", "new_password", "current_password"):
        password = body.get(field)
        if isinstance(password, str) and len(password.encode("utf-8", "surrogatepass")) > passwords.MAX_BYTES:
            explained.append(errors.PasswordTooLong.default_detail)
    email = body.get("email")
    if isinstance(email, str):
        domain = email.rpartition("@")[2].lower().rstrip(".")
        if any(domain == name or domain.endswith("." + name) for name in SPECIAL_USE_DOMAIN_NAMES):
            explained.append("email: ")
    if case.media_type in web.FORM_TYPES:
        basic = str((case.headers or {}).get("Authorization", "")).lower().startswith("basic ")
        if case.path.startswith("/oauth2/") and basic and body.get("client_secret"):
            explained.append("use one client authentication method")
        if sum(len(value) if isinstance(value, list) else 1 for value in body.values()) > web.FORM_MAX_FIELDS:
            explained.append("Too many fields")
    return explained


def _detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else ""


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    refusal = failure.code in REFUSALS or "oauth_form_refused" in failure.title
    detail = _detail(response) if refusal and _positive(case) else ""
    return not any(part in detail for part in _gaps(case))


@schemathesis.check
def oauth_form_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request to /oauth2/* must not be refused as malformed (400 invalid_request)."""
    if not (_positive(case) and case.path.startswith("/oauth2/") and response.status_code == 400):
        return None
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    if error in MALFORMED:
        raise AssertionError(f"schema-valid request refused as malformed: {response.text}")
    return None
