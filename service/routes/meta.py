"""Discovery: the index, the JWKS and the OpenAPI document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import __version__, openapi
from service.resources import resources


async def index(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "name": "authsvc",
            "version": __version__,
            "links": [
                {"href": path, "rel": rel, "method": method} for path, rel, method in openapi.LINKS
            ],
        }
    )


async def jwks(request: Request) -> Response:
    return Response(
        resources(request).jwks,
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},  # apps refetch on an unknown kid
    )


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi.DOCUMENT)


ROUTES = [
    Route("/", index, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
