"""HTTP plumbing shared by the routes: body limits, content types, bearer tokens, auth headers."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable

import anyio
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
OAUTH_PREFIX = "/oauth2/"  # the standard endpoints: RFC 6749 §5.2 status codes and error codes
# RFC 6749 §5.2: error_description is limited to these characters
_DESCRIPTION_UNSAFE = re.compile(r'[^\x20-\x21\x23-\x5B\x5D-\x7E]')


def error_response(exc: errors.ServiceError, *, oauth: bool = False) -> JSONResponse:
    """The one place a ServiceError becomes HTTP: ``{"error", "error_description", "detail"}``.

    ``error_description`` is what OAuth libraries show (RFC 6749 §5.2); ``detail`` is what the old
    app's clients read. ``oauth`` picks the RFC's status and code (the `/oauth2/*` endpoints) over
    the old app's; a challenge header goes only with a 401.
    """
    status = (exc.oauth_status or exc.status_code) if oauth else exc.status_code
    code = (exc.oauth_code or exc.code) if oauth else exc.code
    headers = {k: v for k, v in exc.headers().items() if status == 401 or k != "WWW-Authenticate"}
    return JSONResponse(
        {"error": code, "error_description": _DESCRIPTION_UNSAFE.sub("?", exc.detail), "detail": exc.detail},
        status_code=status,
        headers=headers,
    )


def cors(origins: tuple[str, ...]) -> list[Middleware]:
    """Browser apps on these origins may call the API (AUTH_CORS_ORIGINS; none: no CORS headers at all).

    Tokens travel in the Authorization header and the body, never in cookies, so credentials stay off.
    """
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["WWW-Authenticate", "Retry-After"],
            allow_credentials=False,
            max_age=600,
        )
    ]


class BodyLimit:
    """Refuse bodies over ``limit`` bytes, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                # outside Starlette's exception middleware: answer here
                response = error_response(errors.PayloadTooLarge(f"request body over {self.limit} bytes"))
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.PayloadTooLarge(f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class BodyTimeout:
    """Refuse (408) a body not received in full within ``timeout`` seconds of the request's headers.

    uvicorn waits for a body as long as bytes trickle in; a few slow clients would hold connections,
    and the memory of their half-read requests, for ever.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:  # later receives wait for a disconnect, which may take as long as it takes
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                raise errors.RequestTimeout(f"request body not received within {self.timeout:g}s") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)


class LastResort:
    """Answers an exception that no exception handler took with ``handler``'s response, and ends there.

    Starlette's outermost error middleware re-raises after its 500, so uvicorn logged the traceback a
    second time and closed the keep-alive connection under the client. Once a response has started,
    the exception still propagates: half an answer is out, and only closing the connection is honest.
    """

    def __init__(self, app: ASGIApp, handler: Callable[[Request, Exception], Awaitable[Response]]) -> None:
        self.app, self.handler = app, handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            response = await self.handler(Request(scope, receive), exc)
            await response(scope, receive, send)


class NoStore:
    """RFC 6749 §5.1: responses carrying tokens or credentials (or, on /admin/, personal data) must not be cached."""

    def __init__(self, app: ASGIApp, prefix: tuple[str, ...] = ("/api/", OAUTH_PREFIX, "/admin/")) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"cache-control", b"no-store"),
                    (b"pragma", b"no-cache"),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def json_body(request: Request) -> bytes:
    if media_type(request) != "application/json":
        raise errors.UnsupportedMediaType("expected Content-Type: application/json")
    return await request.body()


async def form_body(request: Request) -> FormData:
    if not media_type(request) and not await request.body():
        return FormData()  # no body at all: let the field checks say what is missing
    if media_type(request) not in FORM_TYPES:
        raise errors.UnsupportedMediaType("expected Content-Type: application/x-www-form-urlencoded")
    try:
        return await request.form(max_files=0, max_fields=32, max_part_size=16384)
    except HTTPException as exc:  # malformed multipart
        raise errors.InvalidRequest(f"malformed form body: {exc.detail}") from None
    except UnicodeDecodeError:
        raise errors.InvalidRequest("form body is not valid UTF-8") from None


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized()
    return token.strip()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(request: Request, trusted: tuple[Network, ...]) -> str | None:
    """The socket peer; behind trusted proxies, the right-most X-Forwarded-For hop not among them.

    Proxies append the address that connected to them, so walking from the right past our own proxies
    reaches the first address no trusted party vouches for beyond: the client. Anything further left
    was written by the client itself and is ignored, as is the header from an untrusted peer.
    """
    peer = request.client.host if request.client else None
    if not trusted or peer is None or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for line in request.headers.getlist("x-forwarded-for") for hop in line.split(",")]
    nearest = peer
    for hop in reversed(hops):
        if not _is_ip(hop):
            return nearest  # a malformed hop: trust stops at the last proxy we know
        if not _trusted(hop, trusted):
            return hop
        nearest = hop
    return nearest


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
