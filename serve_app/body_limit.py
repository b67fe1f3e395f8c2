"""A request-body cap in Ray Serve's HTTP proxy, before a body reaches any replica.

Serve's proxy reads a request's body into an unbounded queue as fast as the client sends it
(``ray.serve._private.proxy``: ``proxy_asgi_receive``), so a limit checked in the Ingress alone still lets
the proxy hold a 500 MB chunked body. ``BodyLimitMiddleware`` runs in the proxy (Serve's documented hook:
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names ``proxy_middlewares``, set in ``serve_app.SERVE_ENV``):
a declared ``Content-Length`` over the limit is answered 413 at once; a body without one (chunked) is
read here up to the limit and answered 413 the moment it passes it, so the proxy never holds more than
``XRAYLAB_MAX_IMAGE_BYTES`` of one request. The Ingress's FastAPI app runs the same middleware, for a
deployment whose proxy was started without the hook.
"""

from __future__ import annotations

import json
from typing import Any

from xraylab.errors import RejectReason

__all__ = ["BodyLimitMiddleware", "proxy_middlewares"]

Message = dict[str, Any]


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 for a request body over ``max_bytes``, decided without holding more."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server itself holds the client to it
            if not declared.isdigit() or int(declared) <= self.max_bytes:
                await self.app(scope, receive, send)
            else:
                await self._refuse(send)
            return
        held: list[Message] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": RejectReason.TOO_LARGE, "detail": f"more than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Any]:
    """What Serve's HTTP proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``) for its middlewares."""
    from starlette.middleware import Middleware

    from xraylab.settings import get_settings

    return [Middleware(BodyLimitMiddleware, max_bytes=get_settings().MAX_IMAGE_BYTES)]
