"""A request-body cap in Ray Serve's HTTP proxy, before a body reaches any replica.

Serve's proxy reads a request's body into an unbounded queue as fast as the client sends it
(``ray.serve._private.proxy``: ``proxy_asgi_receive``), so a limit checked in the Ingress alone still lets
the proxy hold a 500 MB chunked body. ``BodyLimitMiddleware`` runs in the proxy (Serve's documented hook:
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names ``proxy_middlewares``, set in ``serve_app.SERVE_ENV``):
a declared ``Content-Length`` over the limit is answered 413 at once; a body without one (chunked) is
read here up to the limit and answered 413 the moment it passes it, so the proxy never holds more than
``XRAYLAB_MAX_IMAGE_BYTES`` of one request (``XRAYLAB_MAX_BATCH_BYTES`` of a ``POST /v1/predict/batch``).
The Ingress's FastAPI app runs the same middleware, for a deployment whose proxy was started without the hook.
"""

from __future__ import annotations

import json
from typing import Any

from xraylab.errors import RejectReason

__all__ = ["BodyLimitMiddleware", "BATCH_PATH", "body_limits", "proxy_middlewares"]

Message = dict[str, Any]


BATCH_PATH = "/v1/predict/batch"


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 for a request body over ``max_bytes`` (``by_path``: another limit for a path,
    such as the batch route's), decided without holding more."""

    def __init__(self, app: Any, max_bytes: int, by_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.by_path = dict(by_path or {})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.by_path.get(str(scope.get("path", "")).rstrip("/"), self.default_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server itself holds the client to it
            if not declared.isdigit() or int(declared) <= max_bytes:
                await self.app(scope, receive, send)
            else:
                await self._refuse(send, max_bytes)
            return
        held: list[Message] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > max_bytes:
                await self._refuse(send, max_bytes)
                return
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Any, max_bytes: int) -> None:
        body = json.dumps({"error": RejectReason.TOO_LARGE, "detail": f"more than {max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Any]:
    """What Serve's HTTP proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``) for its middlewares."""
    from starlette.middleware import Middleware

    from xraylab.settings import get_settings

    return [Middleware(BodyLimitMiddleware, **body_limits(get_settings()))]


def body_limits(settings: Any) -> dict[str, Any]:
    """The middleware's arguments from settings: ``XRAYLAB_MAX_IMAGE_BYTES`` per request, and
    ``XRAYLAB_MAX_BATCH_BYTES`` for the batch route."""
    return {"max_bytes": settings.MAX_IMAGE_BYTES, "by_path": {BATCH_PATH: settings.MAX_BATCH_BYTES}}
