"""Who may reach what, on every HTTP route of the app: the Serve ingress and ``xraylab ui`` install the same
middleware and login pages (``install_access``).

- ``/login``, ``/logout``, ``/healthz`` and ``/`` (a redirect) are public; they carry no patient data.
- ``/v1/...`` (the HTTP API) and its docs take a session or an API key (``Authorization: Bearer xrk_...``).
- Everything else (the Gradio app under ``/ui`` with its page, config, file, upload and queue routes; the
  study images under ``/review``; the API docs, which production does not serve at all) takes a session.
  Default deny: a route added later is behind login unless it is named public here.
- Refused: a page request (GET asking for HTML) is sent to ``/login?next=...``; anything else gets 401 JSON
  ``{"error": "login_required" | "session_expired", "detail": ...}``.
- Every response carries the security headers (frame, content type, CSP, referrer, no-store for data).

Accounts, sessions, keys, device cookies and the per-name throttle are in ``xraylab.accounts`` (database); a
per-address limit of failed logins is kept here, in memory. The client's address is the peer's, or, when the
peer is one of ``XRAYLAB_TRUSTED_PROXIES``, the nearest untrusted address of its ``X-Forwarded-For``: a header
from anyone else is ignored, so it can neither reset the limit nor pin it on another address. A browser with
the device cookie of the account it signs in to is not held back by the per-address limit, so that failures
from a shared address (a hospital's NAT, a proxy) cannot shut out doctors who signed in there before.

Sessions: only the user's own requests (page loads, the API, the review app's clicks: ``touch_session``) keep a
session alive; the app's own background traffic (Gradio's queue, heartbeat and refresh timer, pictures) does not.
One session's Gradio events are limited to ``EVENT_BURST`` at once, refilled at ``EVENT_RATE`` a second, so a
script flooding the queue is refused (429) before it fills the queue other doctors share.
"""

from __future__ import annotations

import collections
import html
import ipaddress
import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection, cookie_parser

from xraylab.accounts import (
    AccessPolicy,
    Principal,
    authenticate,
    device_user,
    end_session,
    new_device,
    resolve_api_key,
    resolve_session,
    start_session,
)
from xraylab.db.review import record_audit
from xraylab.db.session import Database
from xraylab.settings import Settings

__all__ = ["AccessControl", "install_access", "SESSION_COOKIE", "principal_of", "SECURITY_HEADERS", "UI_PATH"]

log = logging.getLogger("xraylab.access")

SESSION_COOKIE = "xraylab_session"
DEVICE_COOKIE = "xraylab_device"
DEVICE_COOKIE_DAYS = 180
EVENT_BURST = 40.0  # a session's Gradio events at once (a doctor's fastest clicking stays far below)
EVENT_RATE = 10.0  # and per second after that
DIRECTORY_DOWN_S = 60.0  # after the directory failed to answer, every refused login says it may be why
UI_PATH = "/ui"
PUBLIC_PATHS = frozenset({"/", "/login", "/logout", "/healthz", "/favicon.ico"})
API_PREFIX = "/v1/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_DOCS = frozenset({"/docs", "/openapi.json"})  # development only (production serves none)
GRADIO_API = "/ui/gradio_api/"  # every POST here is an event (queue/join, call/{api_name}, upload, ...)
IP_WINDOW_S = 600.0
# Gradio's page needs inline scripts and styles (its config and theme are inline) and blob: workers; nothing
# is loaded from another origin, and no page may frame this one.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self' data:; connect-src 'self'; "
       "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'")
SECURITY_HEADERS = {
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"content-security-policy": CSP.encode(),
    b"referrer-policy": b"no-referrer",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
    b"cross-origin-opener-policy": b"same-origin",
}
# Gradio's own scripts, styles and fonts: no patient data, so a browser may keep them (privately).
# (and the review app's viewer bundle, ui/viewer_assets.py)
STATIC_PREFIXES = (UI_PATH + "/", "/review/viewer/")
STATIC_SUFFIXES = (".js", ".css", ".woff", ".woff2", ".ttf", ".svg", ".map")


def principal_of(request: Any) -> Principal | None:
    """The caller the middleware let through, from a Starlette request or from Gradio's ``gr.Request`` (which
    wraps the request of the event's ``queue/join``; its ``__getattr__`` is not to be probed)."""
    if not isinstance(request, HTTPConnection):
        request = vars(request).get("request") if hasattr(request, "__dict__") else None
    if not isinstance(request, HTTPConnection):
        return None
    state = request.scope.get("state")
    return state.get("principal") if isinstance(state, dict) else None


class AccessControl:
    """Sessions and keys checked against the database, and the per-address limit of failed logins."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.policy = AccessPolicy.from_settings(settings)
        self.cookie_secure = bool(settings.COOKIE_SECURE)
        self.ip_max_failures = settings.LOGIN_IP_MAX_FAILURES
        self.trusted_proxies = [ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES]
        self.directory = _directory(settings)
        self.directory_down_at = -1e9
        self._ip_failures: dict[str, collections.deque[float]] = {}
        self._events: dict[int, tuple[float, float]] = {}  # session id -> (tokens, when)

    def session_user(self, token: str | None, touch: bool = True) -> Principal | None:
        if not token:
            return None
        with self.db.session() as session:
            return resolve_session(session, token, self.policy, touch=touch)

    def _trusted(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.trusted_proxies)

    def client_address(self, scope: dict[str, Any]) -> str:
        """The peer's address; behind a trusted proxy, the nearest address its ``X-Forwarded-For`` names that is
        not itself a trusted proxy (the right-most untrusted one: those to its left are the client's word)."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self._trusted(peer):
            return peer
        forwarded = [v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for"]
        hops = [h.strip() for value in forwarded for h in value.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                ip = _ip(hop)
                return str(ip) if ip is not None else hop
        return peer

    def event_allowed(self, session_id: int | None) -> bool:
        """A token bucket per session for the review app's events (``EVENT_BURST``, ``EVENT_RATE``)."""
        if session_id is None:
            return True
        now = time.monotonic()
        tokens, when = self._events.get(session_id, (EVENT_BURST, now))
        tokens = min(EVENT_BURST, tokens + (now - when) * EVENT_RATE)
        if tokens < 1.0:
            self._events[session_id] = (tokens, now)
            return False
        self._events[session_id] = (tokens - 1.0, now)
        if len(self._events) > 10_000:  # forget sessions quiet long enough for their bucket to be full again
            refill_s = EVENT_BURST / EVENT_RATE
            self._events = {k: v for k, v in self._events.items() if now - v[1] < refill_s}
        return True

    @property
    def directory_down(self) -> bool:
        return time.monotonic() - self.directory_down_at < DIRECTORY_DOWN_S

    def key_user(self, token: str) -> Principal | None:
        with self.db.session() as session:
            return resolve_api_key(session, token)

    @staticmethod
    def _recent(table: dict[str, collections.deque[float]], key: str, window_s: float) -> collections.deque[float]:
        failures = table.get(key) or collections.deque()
        now = time.monotonic()
        while failures and failures[0] < now - window_s:
            failures.popleft()
        if failures:
            table[key] = failures
        else:
            table.pop(key, None)  # no entry kept for a caller with nothing recent
        return failures

    def ip_retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now)."""
        failures = self._recent(self._ip_failures, address, IP_WINDOW_S)
        return failures[0] + IP_WINDOW_S - time.monotonic() if len(failures) >= self.ip_max_failures else 0.0

    def ip_failed(self, address: str) -> None:
        self._ip_failures.setdefault(address, collections.deque()).append(time.monotonic())


def _ip(address: str) -> Any:
    """An address as written by a peer or a proxy (``a.b.c.d``, ``a.b.c.d:port``, ``[v6]:port``, an IPv4-mapped
    IPv6 address), or None when it is none."""
    text = address.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def _directory(settings: Settings) -> Any:
    """The directory sign-in (``xraylab.directory``) when ``XRAYLAB_DIRECTORY_CONFIG`` names its file."""
    if settings.DIRECTORY_CONFIG is None:
        return None
    from xraylab.directory import Directory, DirectoryConfig

    password = settings.DIRECTORY_BIND_PASSWORD.get_secret_value() if settings.DIRECTORY_BIND_PASSWORD else ""
    return Directory(DirectoryConfig.load(settings.DIRECTORY_CONFIG), password)


def _cookie(headers: dict[bytes, bytes]) -> str | None:
    """The session cookie, parsed as Starlette does (``http.cookies`` gives up on the whole header when
    another site's cookie holds JSON or spaces)."""
    raw = headers.get(b"cookie")
    return cookie_parser(raw.decode("latin-1")).get(SESSION_COOKIE) if raw else None


def _users_own(scope: dict[str, Any], path: str, headers: dict[bytes, bytes]) -> bool:
    """Whether a request is the user's own doing, which keeps their session alive: a page they load (a
    navigation) or a call of the API. The app's own traffic (Gradio's queue and heartbeat, the refresh timer,
    pictures) is not; the review app's handlers count a doctor's clicks themselves (``touch_session``)."""
    if path.startswith(API_PREFIX):
        return True
    if scope.get("method") != "GET" or path.startswith(GRADIO_API):
        return False
    mode = headers.get(b"sec-fetch-mode")
    return mode == b"navigate" if mode is not None else b"text/html" in headers.get(b"accept", b"")


def _cross_site(headers: dict[bytes, bytes]) -> bool:
    """A browser request sent by another site (a form or script elsewhere posting here with the user's
    cookie): ``Sec-Fetch-Site``, else an ``Origin`` whose host is not this one. Clients that send neither
    (curl, a PACS gateway) are not browsers acting for someone else."""
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None:
        return False
    return origin == b"null" or urlsplit(origin.decode("latin-1")).netloc.encode("latin-1") != headers.get(b"host")


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = raw.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class AccessMiddleware:
    """Pure ASGI (Gradio streams its queue over server-sent events): the security headers on every response,
    and the caller's ``Principal`` in ``scope["state"]["principal"]`` or a refusal."""

    def __init__(self, app: Any, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        send = self._with_headers(send, path)
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and scope.get("method") not in SAFE_METHODS and _cross_site(headers):
            response = JSONResponse({"error": "cross_site", "detail": "refused: sent from another site"}, 403)
            await response(scope, _no_receive, send)
            return
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = _cookie(headers)
        principal = (await anyio.to_thread.run_sync(self.access.session_user, token, _users_own(scope, path, headers))
                     if token else None)
        if principal is None and (path.startswith(API_PREFIX) or path in API_DOCS) and (key := _bearer(headers)):
            principal = await anyio.to_thread.run_sync(self.access.key_user, key)
        if principal is not None:
            if (scope.get("method") == "POST" and path.startswith(GRADIO_API)
                    and not self.access.event_allowed(principal.session_id)):
                log.warning("user %s: review app events refused (more than %s at once)", principal.name, EVENT_BURST)
                response = JSONResponse({"error": "too_many_events",
                                         "detail": "too many requests from this page at once: wait a moment"}, 429,
                                        headers={"Retry-After": "2"})
                await response(scope, _no_receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401})
            return
        await self._refuse(scope, send, path, headers, expired=token is not None)

    @staticmethod
    def _with_headers(send: Any, path: str) -> Any:
        static = path.startswith(STATIC_PREFIXES) and path.endswith(STATIC_SUFFIXES)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cacheable = static and message.get("status") == 200
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in SECURITY_HEADERS and (cacheable or k.lower() != b"cache-control")]
                headers += list(SECURITY_HEADERS.items())
                if not cacheable:
                    headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers

    @staticmethod
    async def _refuse(scope: dict[str, Any], send: Any, path: str, headers: dict[bytes, bytes],
                      expired: bool) -> None:
        wants_page = scope.get("method") == "GET" and b"text/html" in headers.get(b"accept", b"")
        if wants_page:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            response: Response = RedirectResponse(f"/login?next={quote(target, safe='')}"
                                                  + ("&expired=1" if expired else ""), status_code=303)
        elif expired:
            response = JSONResponse({"error": "session_expired",
                                     "detail": "your session has expired: log in again"}, 401)
        elif path.startswith(API_PREFIX):
            response = JSONResponse({"error": "login_required",
                                     "detail": "send an API key: 'Authorization: Bearer ...' (xraylab users add-key)"},
                                    401, headers={"WWW-Authenticate": 'Bearer realm="xraylab"'})
        else:
            response = JSONResponse({"error": "login_required", "detail": "log in first, at /login"}, 401)
        await response(scope, _no_receive, send)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, host or protocol-relative ``//``) is followed after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return UI_PATH + "/"
    parts = urlsplit(target)  # the fragment is the browser's own
    return parts.path + (f"?{parts.query}" if parts.query else "")


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xraylab: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; display: flex; justify-content: center; }}
main {{ background: #fff; margin-top: 10vh; padding: 2rem 2.5rem; border-radius: 8px; width: 22rem;
        box-shadow: 0 1px 4px rgba(0,0,0,.15); }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input {{ width: 100%; padding: .5rem; margin-top: .3rem; box-sizing: border-box; font-size: 1rem; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; background: #1f5fbf; color: #fff;
          border: 0; border-radius: 4px; cursor: pointer; }}
.error {{ color: #a40000; background: #fdecec; padding: .6rem; border-radius: 4px; }}
.info {{ color: #333; background: #eef3fb; padding: .6rem; border-radius: 4px; }}
</style></head>
<body><main>
<h1>xraylab review</h1>
<p>Chest X-ray triage for doctors. Log in with your own account.</p>
{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required autofocus value="{username}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>
</main></body></html>
"""


def login_page(next_path: str, message: str = "", kind: str = "error", username: str = "",
               status_code: int = 200) -> HTMLResponse:
    block = f'<p class="{kind}" id="login-message" role="alert">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(LOGIN_PAGE.format(message=block, next=html.escape(next_path, quote=True),
                                          username=html.escape(username, quote=True)), status_code=status_code)


def login_router(access: AccessControl) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(UI_PATH + "/", status_code=303)

    @router.get("/login", include_in_schema=False)
    async def login_form(next: str = "", expired: int = 0) -> Response:  # noqa: A002 - the query's name
        message = "Your session has expired. Please log in again." if expired else ""
        return login_page(_safe_next(next), message, kind="info")

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("username") or "").strip().lower()[:64]
        password = str(form.get("password") or "")[:1024]
        target = _safe_next(str(form.get("next") or ""))
        address = access.client_address(request.scope)
        device_token = request.cookies.get(DEVICE_COOKIE)
        replaced = request.cookies.get(SESSION_COOKIE)

        def known_device() -> bool:
            with access.db.session() as session:
                return device_user(session, device_token, name, access.policy.max_failures) is not None

        trusted_device = bool(device_token) and await anyio.to_thread.run_sync(known_device)
        wait = 0.0 if trusted_device else access.ip_retry_after(address)
        if wait > 0:
            return login_page(target, f"Too many failed logins from this address. Try again in {wait:.0f} s.",
                              username=name, status_code=429)

        def check() -> tuple[Any, str | None, str | None]:
            with access.db.session() as session:
                if replaced:  # a new login ends the session it replaces in this browser
                    end_session(session, replaced)
                result = authenticate(session, name, password, access.policy, directory=access.directory,
                                      device_token=device_token if trusted_device else None)
                token = device = None
                if result.principal is not None:
                    token = start_session(session, result.principal, access.policy)
                    device = None if trusted_device else new_device(session, result.principal.user_id)
                    record_audit(session, result.principal.name, "login", detail=f"from {address}"[:512])
                else:
                    record_audit(session, name if result.known else None, "login_refused",
                                 detail=f"{result.reason} from {address}"[:512])
                return result, token, device

        result, token, device = await anyio.to_thread.run_sync(check)
        if result.directory_down:
            access.directory_down_at = time.monotonic()
        if token is None:
            if not trusted_device:
                access.ip_failed(address)
            down = (" The hospital directory does not answer just now: directory accounts cannot sign in until it "
                    "does.") if access.directory_down else ""
            if result.reason == "throttled":
                minutes = max(1, round(result.retry_after_s / 60))
                message = f"Too many failed attempts for this account. Try again in about {minutes} min."
                return login_page(target, message + down, username=name, status_code=429)
            return login_page(target, "Wrong username or password." + down, username=name, status_code=401)
        log.info("user %s logged in", result.principal.name)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=access.cookie_secure,
                            path="/", max_age=int(access.policy.session_max.total_seconds()))
        if device:
            response.set_cookie(DEVICE_COOKIE, device, httponly=True, samesite="strict", secure=access.cookie_secure,
                                path="/login", max_age=DEVICE_COOKIE_DAYS * 86400)
        return response

    async def logout(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            def end() -> None:
                with access.db.session() as session:
                    principal = resolve_session(session, token, access.policy)
                    end_session(session, token)
                    if principal is not None:
                        record_audit(session, principal.name, "logout")

            await anyio.to_thread.run_sync(end)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    router.add_api_route("/logout", logout, methods=["GET", "POST"], include_in_schema=False)
    return router


def install_access(app: FastAPI, db: Database, settings: Settings) -> AccessControl:
    """The login pages on ``app`` and the middleware in front of all of it (call before mounting Gradio)."""
    access = AccessControl(db, settings)
    app.include_router(login_router(access))
    app.add_middleware(AccessMiddleware, access=access)
    return access
