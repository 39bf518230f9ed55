"""schemathesis hooks for tests/service/test_fuzz.py (``SCHEMATHESIS_HOOKS=tests.service.fuzz_hooks``).

Where the service is stricter than JSON Schema can say, a schema-valid case may be refused, and the
positive-data check would call that a failure. Two such gaps exist, both stated in the schema's
descriptions; positive cases that fall into them are dropped, nothing else:

* a password of at most 72 characters (``maxLength``) but more than 72 bytes of UTF-8: bcrypt's limit is
  in bytes, refused rather than truncated, and JSON Schema counts characters;
* an email address in one of RFC 6761's special-use domains (.test, .local, ...), which ``format: email``
  allows, email_validator refuses, and schemathesis' generator draws from (its top-level domains
  include ``test``).

Negative cases are never dropped: outside the schema the service is at least as strict.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from email_validator import SPECIAL_USE_DOMAIN_NAMES

from service import passwords


def _in_a_gap(body: dict[str, Any]) -> bool:
    for field in ("password", "new_password", "current_password"):
        password = body.get(field)
        if isinstance(password, str) and len(password.encode("utf-8", "surrogatepass")) > passwords.MAX_BYTES:
            return True
    email = body.get("email")
    if isinstance(email, str):
        domain = email.rpartition("@")[2].lower().rstrip(".")
        return any(domain == name or domain.endswith("." + name) for name in SPECIAL_USE_DOMAIN_NAMES)
    return False


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    positive = case.meta is None or case.meta.generation.mode.name == "POSITIVE"
    return not (positive and isinstance(case.body, dict) and _in_a_gap(case.body))
