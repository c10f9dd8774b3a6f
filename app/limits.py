"""Request body limits, enforced while the body streams in: a client cannot make the server buffer more than the
size limit, whether it declares a Content-Length or sends chunks, nor hold a request open by never finishing
its body."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes"


# Not Starlette's RequestBodyLimitMiddleware (FastAPI's max_body_size): it answers a plain-text "Content Too Large"
# without the JSON detail of the HTTP contract or "Connection: close", and ignores a malformed Content-Length.
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


# Neither Starlette nor uvicorn bounds the time a request body takes (uvicorn's timeouts: keep-alive, shutdown).
class BodyTimeoutMiddleware:
    """Answers 408 and closes the connection when a request body is not complete ``timeout_s`` after the request
    started: a client that stalls mid-upload (or trickles bytes, slowloris-style) does not hold a request, its
    memory and its connection for ever. Once the body is complete, reads pass straight through (a later read
    only waits for the client to disconnect, which is not a body)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_complete = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                message = await _receive_before(receive, deadline, loop)
            except asyncio.TimeoutError:
                raise HTTPException(
                    status_code=408,
                    detail=f"the request body was not complete after {self.timeout_s:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, timed_receive, send)


async def _receive_before(receive: Receive, deadline: float, loop: asyncio.AbstractEventLoop) -> Message:
    if sys.version_info >= (3, 11):
        # A timer on the current task, no extra task per read: this wraps every request's body reads.
        async with asyncio.timeout_at(deadline):
            return await receive()
    return await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
