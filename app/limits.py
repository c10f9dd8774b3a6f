"""Request body size limits, enforced while the body streams in: a client cannot make the server buffer more
than the limit, whether it declares a Content-Length or sends chunks."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes"


class BodySizeLimitMiddleware:
    """Refuses a body over ``limit_for_path(path)`` bytes with 413.

    A declared Content-Length over the limit is answered at once, before any body byte is read. Otherwise
    the bytes are counted as they arrive and the read that crosses the limit raises a 413 ``HTTPException``
    inside whatever is reading (a raw body read or the multipart parser), so nothing past the limit is held.
    """

    def __init__(self, app: ASGIApp, limit_for_path: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for_path = limit_for_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # The unread body makes the connection unusable for another request: tell the client to close it.
            response = JSONResponse({"detail": _too_large(limit)}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        if declared == -1:
            response = JSONResponse({"detail": "the Content-Length header is not a number"}, status_code=400)
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(status_code=413, detail=_too_large(limit), headers={"Connection": "close"})
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length, None when absent, -1 when malformed."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None
