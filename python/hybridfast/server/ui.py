"""The dashboard at `/ui`: static assets shipped in the wheel, and the browser session.

The page is plain HTML, CSS and JavaScript (`hybridfast/ui/`), served from the package: no CDN,
no build step, works offline. It reads the same `/admin/*` API as any client, relative to where
it is served, so it works behind a path prefix.

Sign-in takes the master key once (`POST /ui/login`) and answers with a session cookie
(HttpOnly, SameSite=Strict, 12 hours); the key is never stored in the browser nor sent back.
Requests carrying a valid session cookie are admin requests; those that change something must
also carry the session's CSRF token in `x-hybridfast-csrf` (the page reads it from
`GET /ui/session`), so another site cannot make a signed-in browser change the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from importlib import resources

import orjson
from aiohttp import web

from hybridfast.server.state import gateway_key

SESSION_COOKIE = "hybridfast_session"
CSRF_HEADER = "x-hybridfast-csrf"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
# The files the page is made of; nothing else under /ui is served.
ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(slots=True)
class _Session:
    csrf: str
    expires: float
    # Which master key signed it in: a session ends when a reload changes the key.
    key_digest: bytes


def _digest(master_key: str) -> bytes:
    return hashlib.sha256(master_key.encode()).digest()


def _master_key(request: web.Request) -> str | None:
    """The running config's master key (a reload may change it)."""
    gateway = request.app.get(gateway_key)
    return gateway.config.server.master_key if gateway is not None else None


class Sessions:
    """The signed-in browsers of one process (a restart signs everyone out)."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def create(self, master_key: str) -> tuple[str, str]:
        now = time.monotonic()
        self._sessions = {t: s for t, s in self._sessions.items() if s.expires > now}
        if len(self._sessions) >= MAX_SESSIONS:  # drop the oldest
            oldest = min(self._sessions, key=lambda t: self._sessions[t].expires)
            del self._sessions[oldest]
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self._sessions[token] = _Session(csrf, now + SESSION_TTL_S, _digest(master_key))
        return token, csrf

    def get(self, token: str | None, master_key: str | None) -> _Session | None:
        session = self._sessions.get(token or "")
        if session is None or session.expires <= time.monotonic() or not master_key:
            return None
        if not hmac.compare_digest(session.key_digest, _digest(master_key)):
            return None
        return session

    def end(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)

    def admits(self, request: web.Request) -> bool:
        """Whether this request is an admin request by way of a dashboard session: a valid
        cookie, and for a change the session's CSRF token as well."""
        session = self.get(request.cookies.get(SESSION_COOKIE), _master_key(request))
        if session is None:
            return False
        if request.method in _SAFE_METHODS:
            return True
        sent = request.headers.get(CSRF_HEADER, "")
        return hmac.compare_digest(sent.encode(), session.csrf.encode())


sessions_key = web.AppKey("ui_sessions", Sessions)


def dashboard_session(request: web.Request) -> bool:
    """Whether the request is an admin request by way of a signed-in dashboard."""
    sessions = request.app.get(sessions_key)
    return sessions is not None and sessions.admits(request)


def setup(app: web.Application) -> None:
    """Serves the dashboard; sign-in is possible only while a master key is configured."""
    app[sessions_key] = Sessions()
    app.router.add_routes(routes)


def _asset(name: str) -> bytes:
    return (resources.files("hybridfast") / "ui" / name).read_bytes()


def _root(request: web.Request) -> str:
    """The cookie path: where the gateway is mounted (what precedes `/ui/...`), so the cookie
    reaches `/admin/*` behind a path prefix too. A proxy may say so with X-Forwarded-Prefix."""
    prefix = request.headers.get("X-Forwarded-Prefix", "").rstrip("/")
    return (prefix if prefix.startswith("/") else "") + "/"


routes = web.RouteTableDef()


@routes.get("/ui")
async def ui_redirect(_request: web.Request) -> web.StreamResponse:
    # Relative, so it resolves under a path prefix: /prefix/ui -> /prefix/ui/.
    raise web.HTTPFound("ui/")


@routes.get("/ui/")
async def index(_request: web.Request) -> web.Response:
    return _file("index.html")


@routes.get("/ui/{name}")
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _file(name)


def _file(name: str) -> web.Response:
    return web.Response(
        body=_asset(name),
        content_type=ASSETS[name],
        headers={
            "Cache-Control": "no-cache",
            # The page loads its own files and talks to its own origin, nothing else.
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; "
            "img-src 'self' blob: data:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/ui/session")
async def session(request: web.Request) -> web.Response:
    found = request.app[sessions_key].get(request.cookies.get(SESSION_COOKIE), _master_key(request))
    body = {"authenticated": found is not None, "csrf": found.csrf if found else None}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@routes.post("/ui/login")
async def login(request: web.Request) -> web.Response:
    expected = _master_key(request)
    try:
        sent = orjson.loads(await request.read()).get("key", "")
    except (orjson.JSONDecodeError, AttributeError):
        sent = ""
    if (
        not expected
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        return web.Response(
            status=401,
            body=orjson.dumps(
                {"error": {"code": "ERR_UNAUTHORIZED", "message": "not an admin key"}}
            ),
            content_type="application/json",
        )
    token, csrf = request.app[sessions_key].create(expected)
    resp = web.Response(
        body=orjson.dumps({"authenticated": True, "csrf": csrf}), content_type="application/json"
    )
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        path=_root(request),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="Strict",
        secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
    )
    return resp


@routes.post("/ui/logout")
async def logout(request: web.Request) -> web.Response:
    request.app[sessions_key].end(request.cookies.get(SESSION_COOKIE))
    resp = web.Response(body=b'{"authenticated":false}', content_type="application/json")
    resp.del_cookie(SESSION_COOKIE, path=_root(request))
    return resp
