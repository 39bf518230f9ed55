"""Request parsing and response shaping: ``parse_*(raw) -> Struct``, ``shape_*(obj) -> dict``.

JSON bodies are decoded and validated in one pass by msgspec (unknown fields refused); OAuth2
form bodies follow RFC 6749 §3.1 and ignore parameters they do not know. The structs double as the
OpenAPI schemas, so the documentation cannot drift from what is enforced.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from email_validator import EmailNotValidError, validate_email
from starlette.datastructures import FormData

from service import clients, errors, passwords
from service.db.models import Session, User

# PostgreSQL text cannot hold NUL (a NUL in a login name was a 500); msgspec already refuses lone
# surrogates in JSON, and form values are checked for both by _field
TEXT = r"^[^\x00]*$"
Username = Annotated[
    str,
    msgspec.Meta(
        min_length=3, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$",
        description="3 to 50 of A-Z a-z 0-9 _ . -; unique case-insensitively",
    ),
]
# email_validator's bounds: "a@b.c" to 254 characters; it also wants a dot and a real top-level domain
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=5, max_length=254, extra_json_schema={"format": "email"},
        description="an email address; unique. The domain needs a dot and a real top-level domain; RFC 6761's "
        "special-use names (.test, .local, .localhost, .invalid, .onion, .arpa) are refused",
    ),
]
# JSON Schema counts characters, bcrypt bytes: maxLength is exact for ASCII, and passwords.encode
# refuses more than 72 bytes of UTF-8 whatever the characters
PASSWORD_SCHEMA = {"format": "password", "maxLength": passwords.MAX_BYTES}
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=8, pattern=TEXT, description="8+ characters, at most 72 bytes of UTF-8 (never truncated)",
        extra_json_schema=PASSWORD_SCHEMA,
    ),
]
TOKEN_MAX_LENGTH = 2048
OpaqueToken = Annotated[str, msgspec.Meta(min_length=1, max_length=TOKEN_MAX_LENGTH, pattern=TEXT)]
LOGIN_MAX_LENGTH = 320  # the form's username: a username or an email address
RESOURCE_MAX_LENGTH = 512  # RFC 8707 `resource` on /oauth2/token


class Register(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    email: Email
    password: Password


NOT_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
CurrentPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=1024, pattern=NOT_NUL)]
LinkToken = Annotated[
    str, msgspec.Meta(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$", description="the token from the link")
]


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: CurrentPassword
    new_password: Password


class PasswordResetRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email


class PasswordResetConfirm(msgspec.Struct, forbid_unknown_fields=True):
    token: LinkToken
    new_password: Password


class VerifyEmail(msgspec.Struct, forbid_unknown_fields=True):
    token: LinkToken


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: OpaqueToken


class PasswordGrant(msgspec.Struct):
    username: str
    password: str
    scope: frozenset[str] | None = None  # None: none asked (the old route never asks)


class RefreshGrant(msgspec.Struct):
    refresh_token: str
    scope: frozenset[str] | None = None


class ClientCredentialsGrant(msgspec.Struct):
    scope: frozenset[str] | None = None
    resources: tuple[str, ...] = ()  # RFC 8707 `resource`, which may repeat


def decode(body: bytes, kind: type[Any]) -> Any:
    """A JSON body as ``kind``, or InvalidRequest saying what is wrong with it."""
    if not body:
        raise errors.InvalidRequest("request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidRequest(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise errors.InvalidRequest("request body is not valid UTF-8") from None


def parse_register(body: bytes) -> Register:
    data: Register = decode(body, Register)
    passwords.encode(data.password)  # > 72 bytes: PasswordTooLong
    try:
        email = validate_email(data.email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise errors.InvalidRequest(f"email: {exc}") from None
    return Register(username=data.username, email=email, password=data.password)


def _email(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise errors.InvalidRequest(f"email: {exc}") from None


def _new_password(password: str) -> None:
    if "\x00" in password:  # as every other text field: a NUL is refused, not hashed
        raise errors.InvalidRequest("new_password holds a NUL character")
    passwords.encode(password)  # > 72 bytes: PasswordTooLong


def parse_password_change(body: bytes) -> PasswordChange:
    data: PasswordChange = decode(body, PasswordChange)
    _new_password(data.new_password)
    return data


def parse_password_reset(body: bytes) -> PasswordResetRequest:
    data: PasswordResetRequest = decode(body, PasswordResetRequest)
    return PasswordResetRequest(email=_email(data.email))


def parse_password_reset_confirm(body: bytes) -> PasswordResetConfirm:
    data: PasswordResetConfirm = decode(body, PasswordResetConfirm)
    _new_password(data.new_password)
    return data


def parse_verify_email(body: bytes) -> VerifyEmail:
    data: VerifyEmail = decode(body, VerifyEmail)
    return data


def parse_refresh(body: bytes) -> RefreshRequest:
    data: RefreshRequest = decode(body, RefreshRequest)
    return data


def _field(form: FormData, name: str, *, max_length: int = TOKEN_MAX_LENGTH) -> str:
    value = form.get(name)
    if not isinstance(value, str) or value == "":
        raise errors.InvalidRequest(f"form field `{name}` is required")
    if len(value) > max_length:
        raise errors.InvalidRequest(f"form field `{name}` is longer than {max_length} characters")
    if "\x00" in value or not _encodable(value):
        raise errors.InvalidRequest(f"form field `{name}` holds a NUL or a lone surrogate, which text cannot")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def parse_token_form(form: FormData) -> PasswordGrant | RefreshGrant:
    """The old route: grant_type defaults to password; `scope`, `client_id` and the rest are ignored."""
    grant = form.get("grant_type") or "password"
    if grant == "password":
        return _password_grant(form)
    if grant == "refresh_token":
        return RefreshGrant(refresh_token=_field(form, "refresh_token"))
    raise errors.UnsupportedGrantType()


def parse_oauth_token_form(form: FormData) -> PasswordGrant | RefreshGrant | ClientCredentialsGrant:
    """RFC 6749 §4.3, §6, §4.4 on /oauth2/token: grant_type is required, parameters appear at most once."""
    _once(form, "grant_type", "username", "password", "refresh_token", "scope")
    grant = _field(form, "grant_type", max_length=64)
    scope = clients.parse_scope(_optional(form, "scope"))
    if grant == "password":
        return msgspec.structs.replace(_password_grant(form), scope=scope)
    if grant == "refresh_token":
        return RefreshGrant(refresh_token=_field(form, "refresh_token"), scope=scope)
    if grant == "client_credentials":
        resources = [value for value in form.getlist("resource") if isinstance(value, str) and value]
        if any(len(value) > RESOURCE_MAX_LENGTH or "#" in value or "\x00" in value for value in resources):
            raise errors.InvalidTarget("resource must be an absolute URI without a fragment (RFC 8707)")
        return ClientCredentialsGrant(scope=scope, resources=tuple(resources))
    raise errors.UnsupportedGrantType("grant_type must be password, refresh_token or client_credentials")


def _password_grant(form: FormData) -> PasswordGrant:
    password = _field(form, "password", max_length=1024)
    passwords.encode(password)  # > 72 bytes: PasswordTooLong
    return PasswordGrant(username=_field(form, "username", max_length=LOGIN_MAX_LENGTH), password=password)


def _optional(form: FormData, name: str, *, max_length: int = 2048) -> str | None:
    value = form.get(name)
    if not isinstance(value, str) or value == "":
        return None
    return _field(form, name, max_length=max_length)


def parse_token_param(form: FormData) -> str:
    """RFC 7009 / RFC 7662 bodies: the token is in the `token` field."""
    return _field(form, "token")


def parse_oauth_token_param(form: FormData) -> str:
    """The same on /oauth2/revoke and /oauth2/introspect, where parameters appear at most once (RFC 6749
    §3.1). `token_type_hint` is ignored whatever it says (RFC 7009 §2.1 and RFC 7662 §2.1 allow that): the
    token's form tells a JWT access token from an opaque refresh token."""
    _once(form, "token", "token_type_hint")
    return _field(form, "token")


def _once(form: FormData, *names: str) -> None:
    for name in names:
        if len(form.getlist(name)) > 1:
            raise errors.InvalidRequest(f"form field `{name}` is given more than once")


def shape_user(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "email": user.email,
        "is_active": user.is_active,
        "email_verified": user.email_verified_at is not None,
        "created_at": _iso(user.created_at),
    }


def shape_session(session: Session, *, current: bool) -> dict[str, Any]:
    return {
        "id": str(session.id),
        "created_at": _iso(session.created_at),
        "last_used_at": _iso(session.last_used_at),
        "expires_at": _iso(session.expires_at),
        "user_agent": session.user_agent,
        "client_ip": session.client_ip,
        "current": current,
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
