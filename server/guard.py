"""ASGI middleware in front of the generation routes: malformed bodies get a 400 that names the
problem (before the framework's parser can answer 500), and a client that leaves is noticed.

The body is read whole (bounded), checked (content type, UTF-8, JSON, an object, not too deep),
then replayed to the application. While the request runs, the next ``receive()`` is watched: an
``http.disconnect`` sets the request's ``CLIENT_GONE`` event, which the serving core checks while
queued and between denoising steps.
"""

from __future__ import annotations

import contextvars
import json
import threading

import anyio
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 256 * 1024
MAX_DEPTH = 4  # a request body is a flat object; a little room for future nested fields

CLIENT_GONE: contextvars.ContextVar[threading.Event] = contextvars.ContextVar("ecad_client_gone")


class BodyError(ValueError):
    pass


def _depth(value, limit: int, level: int = 1) -> None:
    if level > limit:
        raise BodyError(f"the body nests deeper than {limit} levels")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _depth(child, limit, level + 1)


def check_body(content_type: str, body: bytes) -> None:
    """Raise ``BodyError`` naming what is wrong with a generation request's body."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise BodyError(f"content-type must be application/json, got {content_type or 'none'!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyError(f"the body is not valid UTF-8 (byte {err.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BodyError(f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        kind = {type(None): "null", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")
        raise BodyError(f"the body must be a JSON object with at least a 'prompt', got {kind}")
    _depth(value, MAX_DEPTH)


class RequestGuard:
    def __init__(self, app, paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await self._refuse(scope, receive, send, f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            check_body(headers.get("content-type", ""), body)
        except BodyError as err:
            await self._refuse(scope, receive, send, str(err), 400)
            return

        gone = threading.Event()
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await anyio.sleep_forever()  # the watcher below owns the rest of the stream

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        token = CLIENT_GONE.set(gone)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                await self.app(scope, replay, send)
                group.cancel_scope.cancel()
        finally:
            CLIENT_GONE.reset(token)

    @staticmethod
    async def _refuse(scope, receive, send, message: str, status: int) -> None:
        await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


def route_template(path: str, routes: tuple[str, ...]) -> str:
    """The route a path belongs to (``/ui/*`` for anything under /ui/), else ``other``: a bounded
    label set, whatever paths clients send."""
    for route in routes:
        if path == route or (route.endswith("/*") and path.startswith(route[:-1])):
            return route
    return "other"


class RouteMetrics:
    """Counts every HTTP answer by route template and status (500s included: an exception that
    escapes the application is counted as 500 and re-raised)."""

    def __init__(self, app, counter, routes: tuple[str, ...]) -> None:
        self.app, self.counter, self.routes = app, counter, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.counter.labels(route=route_template(scope["path"], self.routes), status=str(status)).inc()
