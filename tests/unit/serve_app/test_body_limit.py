"""The proxy's request-body cap, driven as Serve's proxy drives it: ASGI messages in, messages out."""

import asyncio
import json

from serve_app.body_limit import BodyLimitMiddleware, proxy_middlewares


def run(headers: list[tuple[bytes, bytes]], chunks: list[bytes], max_bytes: int = 10):
    """(what the app received or None if it was not called, what was sent, how many chunks were read)"""
    read = {"n": 0}
    seen: dict = {}
    sent: list[dict] = []

    async def receive():
        if read["n"] < len(chunks):
            read["n"] += 1
            return {"type": "http.request", "body": chunks[read["n"] - 1], "more_body": read["n"] < len(chunks)}
        return {"type": "http.disconnect"}

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": headers}
    asyncio.run(BodyLimitMiddleware(app, max_bytes)(scope, receive, send))
    return seen.get("body"), sent, read["n"]


def test_a_chunked_body_over_the_limit_is_refused_as_soon_as_it_passes_it() -> None:
    body, sent, read = run([], [b"x" * 4] * 100)
    assert body is None, "the app never saw the request"
    assert read == 3, "read up to the first chunk past 10 bytes, not the other 97"
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "too_large"


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    body, sent, _ = run([], [b"abc", b"defg"])
    assert body == b"abcdefg" and sent[0]["status"] == 200
    body, sent, read = run([(b"content-length", b"7")], [b"abc", b"defg"])
    assert body == b"abcdefg" and sent[0]["status"] == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    body, sent, read = run([(b"content-length", b"11")], [b"x" * 11])
    assert (body, read, sent[0]["status"]) == (None, 0, 413)


def test_the_proxy_callback_gives_serve_a_starlette_middleware() -> None:
    from ray.serve._private.http_util import validate_http_proxy_callback_return

    [middleware] = validate_http_proxy_callback_return(proxy_middlewares())
    assert middleware.cls is BodyLimitMiddleware and middleware.kwargs["max_bytes"] > 0
