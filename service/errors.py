"""What can go wrong, classified by what the caller should do about it.

ServiceError (400 invalid_request)
├── InvalidRequest (422)             the body is malformed or a field fails validation
│   └── PasswordTooLong (422)        more than 72 UTF-8 bytes: refused, never truncated
├── UnsupportedMediaType (415)
├── PayloadTooLarge (413)
├── RequestTimeout (408)             the body did not arrive in time (slow client); closes the connection
├── NotFound (404) · MethodNotAllowed (405)
├── Conflict (409)
│   ├── UsernameTaken
│   └── EmailTaken
├── Unauthorized (401, WWW-Authenticate: Bearer)
│   ├── InvalidCredentials          one answer for unknown user, wrong password, inactive user
│   ├── InvalidToken                 bad, expired or revoked access token
│   ├── InvalidGrant                 unknown, expired, reused or revoked refresh token
│   └── InvalidClient (Basic)        introspection caller without the configured secret
├── RateLimited (429, Retry-After)
├── Unavailable (503, Retry-After)
│   ├── Overloaded                   the hash queue is full
│   └── DatabaseUnavailable          no connection in time, or the connection broke
└── InternalError (500)              a bug: logged with its traceback, never details to the client

Imports nothing from Starlette: app.py maps these to HTTP in one place.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400
    code = "invalid_request"
    default_detail = "Invalid request"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ServiceError):
    status_code = 422
    code = "invalid_request"


class PasswordTooLong(InvalidRequest):
    code = "password_too_long"
    default_detail = "password must be at most 72 bytes of UTF-8 (bcrypt's limit); it is never truncated"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


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


class InvalidToken(Unauthorized):
    code = "invalid_token"
    default_detail = "Could not validate credentials"
    challenge = 'Bearer error="invalid_token"'


class InvalidGrant(Unauthorized):
    code = "invalid_grant"
    default_detail = "Invalid or expired refresh token"


class InvalidClient(Unauthorized):
    code = "invalid_client"
    default_detail = "Client authentication failed"
    challenge = 'Basic realm="introspection"'


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
