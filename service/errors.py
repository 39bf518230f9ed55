"""What can go wrong, classified by what the caller should do about it.

ServiceError (400 invalid_request)                                      on /oauth2/* (RFC 6749 §5.2)
├── InvalidRequest (422)             malformed body, a field fails validation   400 invalid_request
│   ├── PasswordTooLong (422)        over 72 UTF-8 bytes: refused, never truncated  400 invalid_request
│   ├── UnsupportedGrantType (422)   a grant_type we do not serve          400 unsupported_grant_type
│   └── WeakPassword (422)           too short, too common, or found in a breach (service/policy.py)
├── InvalidLink (404)                a reset or verification token unknown, used, expired or superseded
├── InvalidScope (400)               a scope the client may not have
├── InvalidTarget (400)              RFC 8707: a resource the client may not address
├── UnauthorizedClient (400)         the client may not use this grant type or token
├── InvalidCursor (400)              a list cursor that is malformed, tampered with, or from another query
├── UnsupportedMediaType (415)                                                 400 invalid_request
├── PayloadTooLarge (413)
├── RequestTimeout (408)             the body did not arrive in time (slow client); closes the connection
├── NotFound (404) · MethodNotAllowed (405)
├── Conflict (409)
│   ├── UsernameTaken
│   └── EmailTaken
├── Forbidden (403)
│   ├── WrongPassword                the current password given to a password change is wrong
│   └── EmailNotVerified             AUTH_REQUIRE_VERIFIED_EMAIL: only after the password was right
├── Unauthorized (401, WWW-Authenticate: Bearer)
│   ├── InvalidCredentials          one answer for unknown user, wrong password, inactive user
│   │                                                                          400 invalid_grant
│   ├── InvalidToken                 bad, expired or revoked access token
│   ├── InvalidGrant                 unknown, expired, reused or revoked refresh token  400 invalid_grant
│   └── InvalidClient (Basic)        client authentication failed: unknown, wrong secret, disabled
├── InsufficientScope (403)          a valid token that may not do this (a user's token on /admin/v1/*)
├── RateLimited (429, Retry-After)
├── Unavailable (503, Retry-After)
│   ├── Overloaded                   the hash queue is full
│   └── DatabaseUnavailable          no connection in time, or the connection broke
└── InternalError (500)              a bug: logged with its traceback, never details to the client

The old `/api/v1/auth/*` routes answer with ``status_code`` and ``code`` (the old app's contract);
the standard `/oauth2/*` endpoints with ``oauth_status`` and ``oauth_code`` where RFC 6749 says
otherwise. Imports nothing from Starlette: web.error_response renders both in one place.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400
    code = "invalid_request"
    default_detail = "Invalid request"
    oauth_status: int | None = None  # the RFC 6749 §5.2 answer on /oauth2/*, where it differs
    oauth_code: str | None = None

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ServiceError):
    status_code = 422
    code = "invalid_request"
    oauth_status, oauth_code = 400, "invalid_request"


class PasswordTooLong(InvalidRequest):
    code = "password_too_long"
    default_detail = "password must be at most 72 bytes of UTF-8 (bcrypt's limit); it is never truncated"


class WeakPassword(InvalidRequest):
    code = "weak_password"


class InvalidLink(ServiceError):
    status_code = 404  # a well-formed request naming no live token: nothing to act on
    code = "invalid_token"
    default_detail = "The link is invalid, expired or already used; ask for a new one"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class WrongPassword(Forbidden):
    code = "wrong_password"
    default_detail = "The current password is incorrect"


class EmailNotVerified(Forbidden):
    code = "email_not_verified"
    oauth_status, oauth_code = 400, "invalid_grant"  # RFC 6749 §5.2: the owner's credentials cannot be used
    default_detail = "Verify your email address first: follow the link in the mail we sent"
class UnsupportedGrantType(InvalidRequest):
    oauth_code = "unsupported_grant_type"
    default_detail = "grant_type must be `password` or `refresh_token`"


class InvalidScope(ServiceError):
    code = "invalid_scope"
    default_detail = "The requested scope is invalid, unknown, or not allowed for this client"


class InvalidTarget(ServiceError):
    code = "invalid_target"
    default_detail = "The requested resource is not an audience this client may address"


class UnauthorizedClient(ServiceError):
    code = "unauthorized_client"
    default_detail = "This client is not allowed to use this grant type"


class InvalidCursor(ServiceError):
    code = "invalid_cursor"
    default_detail = "cursor is not one this list gave out for this query; start again without it"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"
    oauth_status, oauth_code = 400, "invalid_request"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"
    default_detail = "request body too large"


class RequestTimeout(ServiceError):
    status_code = 408
    code = "request_timeout"
    default_detail = "request body not received in time"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # the rest of the body may still be on its way: no reuse


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"
    default_detail = "Not Found"


class MethodNotAllowed(ServiceError):
    status_code = 405
    code = "method_not_allowed"
    default_detail = "Method Not Allowed"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class UsernameTaken(Conflict):
    code = "username_taken"

    def __init__(self, username: str) -> None:
        super().__init__(f"Username {username} already exists")


class EmailTaken(Conflict):
    code = "email_taken"

    def __init__(self, email: str) -> None:
        super().__init__(f"Email {email} already registered")


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"
    default_detail = "Not authenticated"
    challenge = "Bearer"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    default_detail = "Incorrect username or password"
    oauth_status, oauth_code = 400, "invalid_grant"


class InvalidToken(Unauthorized):
    code = "invalid_token"
    default_detail = "Could not validate credentials"
    challenge = 'Bearer error="invalid_token"'


class InvalidGrant(Unauthorized):
    code = "invalid_grant"
    default_detail = "Invalid or expired refresh token"
    oauth_status = 400


class InvalidClient(Unauthorized):
    code = "invalid_client"
    default_detail = "Client authentication failed"
    challenge = 'Basic realm="authsvc"'


class InsufficientScope(ServiceError):
    """RFC 6750 §3.1: authenticated, but the token does not carry what this needs."""

    status_code = 403
    code = "insufficient_scope"
    default_detail = "The access token does not allow this"


class _TryLater(ServiceError):
    """An answer that says when to come back (Retry-After, whole seconds, at least 1)."""

    def __init__(self, retry_after: int = 1, detail: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(detail)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(_TryLater):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(retry_after, detail or f"Too many requests; try again in {max(1, retry_after)}s")


class Unavailable(_TryLater):
    status_code = 503
    code = "unavailable"
    default_detail = "Service temporarily unavailable"


class Overloaded(Unavailable):
    code = "overloaded"
    default_detail = "Too many password checks in progress; try again shortly"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    default_detail = "The database is unavailable; try again shortly"


class InternalError(ServiceError):
    status_code = 500
    code = "internal_error"
    default_detail = "Internal server error"
