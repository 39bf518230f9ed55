"""Account lifecycle routes: parse → ``service.lifecycle`` → respond. And the two built-in link pages."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from service import errors, lifecycle, schemas, web
from service.resources import Resources, resources

PREFIX = "/api/v1/auth"


def _ip(res: Resources, request: Request) -> str | None:
    return web.client_ip(request, res.settings.trusted_proxies)


async def change_password(request: Request) -> Response:
    res = resources(request)
    ip = _ip(res, request)
    await res.limiter.hit("ip", ip or "-")
    claims = res.verifier.verify(web.bearer(request), lifecycle.utcnow())
    data = schemas.parse_password_change(await web.json_body(request))
    await lifecycle.change_password(res, claims, data.current_password, data.new_password, ip)
    return Response(status_code=204)


async def request_password_reset(request: Request) -> JSONResponse:
    res = resources(request)
    ip = _ip(res, request)
    await res.limiter.hit("ip", ip or "-")
    data = schemas.parse_password_reset(await web.json_body(request))
    await lifecycle.request_reset(res, data.email, ip)
    return JSONResponse(lifecycle.ACCEPTED, status_code=202)


async def confirm_password_reset(request: Request) -> Response:
    res = resources(request)
    await res.limiter.hit("ip", _ip(res, request) or "-")
    data = schemas.parse_password_reset_confirm(await web.json_body(request))
    await lifecycle.confirm_reset(res, data.token, data.new_password)
    return Response(status_code=204)


async def verify_email(request: Request) -> Response:
    res = resources(request)
    await res.limiter.hit("ip", _ip(res, request) or "-")
    data = schemas.parse_verify_email(await web.json_body(request))
    await lifecycle.verify_email(res, data.token)
    return Response(status_code=204)


async def resend_verification(request: Request) -> JSONResponse:
    res = resources(request)
    ip = _ip(res, request)
    await res.limiter.hit("ip", ip or "-")
    claims = res.verifier.verify(web.bearer(request), lifecycle.utcnow())
    await lifecycle.resend_verification(res, claims, ip)
    return JSONResponse(lifecycle.ACCEPTED, status_code=202)


async def list_sessions(request: Request) -> JSONResponse:
    res = resources(request)
    await res.limiter.hit("ip", _ip(res, request) or "-")
    claims = res.verifier.verify(web.bearer(request), lifecycle.utcnow())
    return JSONResponse({"sessions": await lifecycle.list_sessions(res, claims)})


async def end_session(request: Request) -> Response:
    res = resources(request)
    await res.limiter.hit("ip", _ip(res, request) or "-")
    claims = res.verifier.verify(web.bearer(request), lifecycle.utcnow())
    try:
        session_id = uuid.UUID(request.path_params["session_id"])
    except ValueError:
        raise errors.NotFound("No such session") from None
    await lifecycle.end_session(res, claims, session_id)
    return Response(status_code=204)


# -- the pages the default link templates open (AUTH_PASSWORD_RESET_URL, AUTH_EMAIL_VERIFICATION_URL) --------
# The token travels in the URL's fragment, which browsers never send: it reaches no access log. Each page
# reads it with a few lines of script and posts it to the API. Apps with their own pages set the templates.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>{title}</title>
<style>body{{font:16px system-ui;max-width:28rem;margin:3rem auto;padding:0 1rem}}input,button{{font:inherit;
padding:.4rem;margin:.3rem 0;width:100%;box-sizing:border-box}}</style></head>
<body><h1>{title}</h1>{form}<p id="result" role="status"></p>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
history.replaceState(null, "", location.pathname);  // the link is spent: keep it out of the history
async function post(path, body) {{
  const r = await fetch(path, {{method: "POST", headers: {{"content-type": "application/json"}},
                               body: JSON.stringify(Object.assign({{token}}, body))}});
  const out = document.getElementById("result");
  out.textContent = r.ok ? "{done}" : ((await r.json()).detail || "Something went wrong");
}}
{script}
</script></body></html>
"""
RESET_PAGE = _PAGE.format(
    title="Choose a new password",
    form='<form id="f"><label>New password <input id="p" type="password" autocomplete="new-password" '
    'minlength="8" required></label><button>Set password</button></form>',
    done="Your password is set, and every session has been logged out. Log in with the new password.",
    script='document.getElementById("f").addEventListener("submit", (e) => { e.preventDefault(); '
    f'post("{PREFIX}/password-reset/confirm", {{new_password: document.getElementById("p").value}}); }});',
)
VERIFY_PAGE = _PAGE.format(
    title="Confirm your email address",
    form="",
    done="Thank you: your address is confirmed.",
    script=f'post("{PREFIX}/verify-email", {{}});',
)
# the pages need only their own inline script and a same-origin fetch
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def reset_page(request: Request) -> HTMLResponse:
    return HTMLResponse(RESET_PAGE, headers=PAGE_HEADERS)


async def verify_page(request: Request) -> HTMLResponse:
    return HTMLResponse(VERIFY_PAGE, headers=PAGE_HEADERS)


ROUTES = [
    Route(f"{PREFIX}/password", change_password, methods=["POST"]),
    Route(f"{PREFIX}/password-reset", request_password_reset, methods=["POST"]),
    Route(f"{PREFIX}/password-reset/confirm", confirm_password_reset, methods=["POST"]),
    Route(f"{PREFIX}/verify-email", verify_email, methods=["POST"]),
    Route(f"{PREFIX}/verify-email/resend", resend_verification, methods=["POST"]),
    Route(f"{PREFIX}/sessions", list_sessions, methods=["GET"]),
    Route(f"{PREFIX}/sessions/{{session_id}}", end_session, methods=["DELETE"]),
    Route("/account/reset-password", reset_page, methods=["GET"]),
    Route("/account/verify-email", verify_page, methods=["GET"]),
]
