"""Thin endpoints: parse → call → respond. ``ALL`` is the route table ``app.py`` mounts."""

from __future__ import annotations

from starlette.routing import Route

from service.routes import account, admin, auth, health, meta, oauth

ALL: list[Route] = [*meta.ROUTES, *oauth.ROUTES, *auth.ROUTES, *account.ROUTES, *admin.ROUTES, *health.ROUTES]
