"""Bearer tokens for the API, the same token in a cookie for the dashboard, and roles.

A token is the store's (``iotbaseline token create``; only its hash is stored). The dashboard's
login form puts it in an HttpOnly, SameSite=Strict cookie (Secure under TLS); the cookie is
honoured for reading only, so a forged cross-site request can never start a scan: changes need
the ``Authorization: Bearer`` header (or a same-origin dashboard form, checked by Origin).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from scanner.store import ApiToken, ScanStore

COOKIE = "iotbaseline_token"
MAX_SECRET = 200
TOKEN_KEY = web.RequestKey("token", ApiToken)
READ_METHODS = frozenset({"GET", "HEAD"})
PUBLIC_PATHS = frozenset({"/login", "/static/style.css"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _refuse(request: web.Request, status: int, reason: str) -> web.StreamResponse:
    if _is_api(request):
        response = web.json_response({"error": reason}, status=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="iotbaseline"'
        return response
    if status == 401:
        raise web.HTTPSeeOther("/login")
    return web.Response(status=status, text=reason)


def token_middleware(store: ScanStore) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        secret = _bearer(request)
        if secret is None and (request.method in READ_METHODS or _same_origin_form(request)):
            secret = request.cookies.get(COOKIE)
        if not secret or len(secret) > MAX_SECRET:
            return _refuse(request, 401, "a bearer token is required")
        token = await asyncio.to_thread(store.verify_token, secret)
        if token is None:
            return _refuse(request, 401, "unknown or revoked token")
        request[TOKEN_KEY] = token
        return await handler(request)

    return authenticate


def own_origin(request: web.Request) -> str:
    """This service's origin as a browser names it in the Origin header."""
    return f"{request.scheme}://{request.host}"


def _same_origin_form(request: web.Request) -> bool:
    """A dashboard form posted from this very site (the browser sends Origin on POST)."""
    return not _is_api(request) and request.headers.get("Origin") == own_origin(request)


def current_token(request: web.Request) -> ApiToken:
    return request[TOKEN_KEY]


def require_operator(request: web.Request) -> ApiToken:
    token = current_token(request)
    if token.role != "operator":
        raise web.HTTPForbidden(text='{"error": "this needs an operator token"}',
                                content_type="application/json")
    return token
