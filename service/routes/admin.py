"""``/admin/v1/*``: thin endpoints over service/admin.py, for clients whose token has the ``admin`` scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import admin, audit, schemas, web
from service.resources import Resources, resources

PREFIX = "/admin/v1"


async def _caller(request: Request) -> tuple[Resources, audit.Actor]:
    """Every admin route starts here: the resources, and the admin client as the actor of what follows."""
    res = resources(request)
    client_id = await admin.authorize(
        res.settings, res.keys, res.sessions, request.headers.get("authorization", ""), admin.utcnow()
    )
    return res, audit.Actor.client(client_id)


# -- users ----------------------------------------------------------------------------------------------


async def list_users(request: Request) -> JSONResponse:
    res, _ = await _caller(request)
    return JSONResponse(await admin.find_users(res.sessions, res.audit.cursor_key, request.query_params))


async def get_user(request: Request) -> JSONResponse:
    res, _ = await _caller(request)
    user = await admin.get_user(res.sessions, admin.parse_id(request.path_params["user_id"]))
    return JSONResponse(admin.shape_user(user))


async def update_user(request: Request) -> JSONResponse:
    res, actor = await _caller(request)
    user_id = admin.parse_id(request.path_params["user_id"])
    patch: admin.UserPatch = schemas.decode(await web.json_body(request), admin.UserPatch)
    user = await admin.update_user(
        res.sessions, res.cache, user_id, patch, actor=actor, request=request, now=admin.utcnow()
    )
    return JSONResponse(admin.shape_user(user))


async def delete_user(request: Request) -> Response:
    res, actor = await _caller(request)
    user_id = admin.parse_id(request.path_params["user_id"])
    await admin.delete_user(res.sessions, res.cache, user_id, actor=actor, request=request, now=admin.utcnow())
    return Response(status_code=204)


async def password_reset(request: Request) -> Response:
    """202 and no body: whether and how the user hears of it is not the caller's to know."""
    res, actor = await _caller(request)
    user_id = admin.parse_id(request.path_params["user_id"])
    await admin.request_password_reset(res.sessions, user_id, actor=actor, request=request, now=admin.utcnow())
    return Response(status_code=202)


async def list_sessions(request: Request) -> JSONResponse:
    res, _ = await _caller(request)
    user_id = admin.parse_id(request.path_params["user_id"])
    return JSONResponse(
        await admin.find_sessions(res.sessions, res.audit.cursor_key, user_id, request.query_params, admin.utcnow())
    )


async def end_sessions(request: Request) -> Response:
    res, actor = await _caller(request)
    user_id = admin.parse_id(request.path_params["user_id"])
    await admin.end_sessions(res.sessions, res.cache, user_id, actor=actor, request=request, now=admin.utcnow())
    return Response(status_code=204)


async def end_session(request: Request) -> Response:
    res, actor = await _caller(request)
    user_id = admin.parse_id(request.path_params["user_id"])
    session_id = admin.parse_id(request.path_params["session_id"], "session of this user")
    await admin.end_session(
        res.sessions, res.cache, user_id, session_id, actor=actor, request=request, now=admin.utcnow()
    )
    return Response(status_code=204)


# -- clients --------------------------------------------------------------------------------------------


async def list_clients(request: Request) -> JSONResponse:
    res, _ = await _caller(request)
    return JSONResponse(await admin.find_clients(res.sessions, res.audit.cursor_key, request.query_params))


async def create_client(request: Request) -> JSONResponse:
    res, actor = await _caller(request)
    new: admin.NewClient = schemas.decode(await web.json_body(request), admin.NewClient)
    body = await admin.create_client(res.sessions, new, actor=actor, request=request, now=admin.utcnow())
    return JSONResponse(body, status_code=201)


async def get_client(request: Request) -> JSONResponse:
    res, _ = await _caller(request)
    client = await admin.get_client(res.sessions, request.path_params["client_id"])
    return JSONResponse(admin.shape_client(client))


async def update_client(request: Request) -> JSONResponse:
    res, actor = await _caller(request)
    patch: admin.ClientPatch = schemas.decode(await web.json_body(request), admin.ClientPatch)
    body = await admin.update_client(
        res.sessions, request.path_params["client_id"], patch, actor=actor, request=request, now=admin.utcnow()
    )
    return JSONResponse(body)


async def disable_client(request: Request) -> Response:
    res, actor = await _caller(request)
    await admin.disable_client(
        res.sessions, request.path_params["client_id"], actor=actor, request=request, now=admin.utcnow()
    )
    return Response(status_code=204)


# -- audit ----------------------------------------------------------------------------------------------


async def list_events(request: Request) -> JSONResponse:
    res, _ = await _caller(request)
    return JSONResponse(await admin.find_events(res.sessions, res.audit.cursor_key, request.query_params))


def _path(path: str, **handlers: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route per path, whatever its methods: a wrong method's 405 then lists every method the path has
    in `Allow` (a route per method would list only its own)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers), name=path)


USER = f"{PREFIX}/users/{{user_id}}"
CLIENT = f"{PREFIX}/clients/{{client_id}}"
ROUTES = [
    _path(f"{PREFIX}/users", GET=list_users),
    _path(USER, GET=get_user, PATCH=update_user, DELETE=delete_user),
    _path(f"{USER}/password-reset", POST=password_reset),
    _path(f"{USER}/sessions", GET=list_sessions, DELETE=end_sessions),
    _path(f"{USER}/sessions/{{session_id}}", DELETE=end_session),
    _path(f"{PREFIX}/clients", GET=list_clients, POST=create_client),
    _path(CLIENT, GET=get_client, PATCH=update_client, DELETE=disable_client),
    _path(f"{PREFIX}/audit", GET=list_events),
]
