"""The password policy of NIST SP 800-63B rev. 4 §3.1.1.2 and OWASP ASVS 5.0 §6.2, one function.

- Length: at least ``AUTH_PASSWORD_MIN_LENGTH`` characters (Unicode code points of the NFKC form, as
  NIST counts them), at most 72 bytes of UTF-8 (bcrypt's limit; refused, never truncated). No
  composition rules: no "one digit, one capital".
- A blocklist of common passwords, offline: the 30,000 most common passwords of the ``zxcvbn``
  package's frequency lists (Dropbox's zxcvbn, from the xato.net corpus of ten million leaked
  passwords), compared case-insensitively. Loaded once per process into a frozenset (~60 ms, ~2 MB).
  Context-specific words are refused too: the username, the email address or its local part, and
  the service's name.
- Optionally a breach corpus, by k-anonymity: the first five hex digits of the password's SHA-1 go
  to a range API (``AUTH_PASSWORD_BREACH_API``, e.g. Have I Been Pwned's
  ``https://api.pwnedpasswords.com/range/``), never the password or its full hash; the answer lists
  the suffixes seen in breaches. When the API cannot be asked, ``AUTH_PASSWORD_BREACH_FAIL_CLOSED``
  decides: refuse the password (503) or accept it on the offline checks alone (the default).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import unicodedata

import httpx

from service import errors, passwords
from service.config import Settings

log = logging.getLogger("service.policy")
SERVICE_WORDS = frozenset({"authsvc", "auth-platform"})
BREACH_TIMEOUT = 3.0


@functools.cache
def blocklist() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-untyped]  # a 1 MB module: import once, on first use

    return frozenset(word.casefold() for word in FREQUENCY_LISTS["passwords"])


def check(settings: Settings, password: str, *, username: str, email: str) -> None:
    """Raise WeakPassword (422) naming the rule the password breaks. The offline part: no I/O."""
    passwords.encode(password)  # > 72 bytes: PasswordTooLong
    normal = unicodedata.normalize("NFKC", password)
    if len(normal) < settings.password_min_length:
        raise errors.WeakPassword(f"password must be at least {settings.password_min_length} characters")
    if not settings.password_blocklist:
        return
    folded = normal.casefold()
    local = email.rsplit("@", 1)[0].casefold()
    if folded in {username.casefold(), email.casefold(), local} | SERVICE_WORDS:
        raise errors.WeakPassword("password must not be your username, your email address or the service's name")
    if folded in blocklist():
        raise errors.WeakPassword("password is one of the most common passwords; choose another")


class BreachCheck:
    """The optional k-anonymity range check, with one HTTP client for the process's lifetime."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.password_breach_api
        self.fail_closed = settings.password_breach_fail_closed
        self._client = httpx.AsyncClient(timeout=BREACH_TIMEOUT) if self.url else None

    async def check(self, password: str) -> None:
        if self._client is None or self.url is None:
            return
        sha1 = hashlib.sha1(passwords.encode(password), usedforsecurity=False).hexdigest().upper()
        prefix, suffix = sha1[:5], sha1[5:]
        try:
            # Add-Padding: the answer's size says nothing about which prefix was asked
            response = await self._client.get(self.url + prefix, headers={"Add-Padding": "true"})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("password breach check unavailable: %s", type(exc).__name__)
            if self.fail_closed:
                raise errors.Unavailable(detail="The password check is unavailable; try again shortly") from None
            return
        for line in response.text.splitlines():
            found, _, count = line.strip().partition(":")
            if found.upper() == suffix and count.strip() not in {"", "0"}:  # padding entries count 0
                raise errors.WeakPassword("password appears in a known data breach; choose another")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
