"""ASGI middleware in front of the generation routes: a malformed or invalid body gets a 400
that names the problem and the field, and a client that leaves is noticed.

The body is read whole (bounded), checked (content type, UTF-8, JSON, an object, not too deep,
valid Unicode in every string: a JSON escape can spell a lone UTF-16 surrogate), validated by the
route's request model (the model BentoML then parses it with, so BentoML's own
error shape never reaches a client), then replayed to the application. While the request runs,
the next ``receive()`` is watched: an ``http.disconnect`` sets the request's ``CLIENT_GONE``
event, which the serving core checks while queued and between denoising steps.
"""

from __future__ import annotations

import contextvars
import json
import threading
from typing import Mapping

import anyio
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from ecad.serving.request import valid_unicode

MAX_BODY_BYTES = 256 * 1024
MAX_DEPTH = 4  # a request body is a flat object; a little room for future nested fields

CLIENT_GONE: contextvars.ContextVar[threading.Event] = contextvars.ContextVar("ecad_client_gone")


class BodyError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
    for key, item in value.items():
        _check_text(key, item)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _check_text(key: str, value) -> None:
    """Every string under ``key`` (and the key) is valid Unicode, else a BodyError naming the field."""
    field = key.encode("utf-8", "backslashreplace").decode("utf-8")  # a bad key is named escaped
    for text in (key, *_strings(value)):
        try:
            valid_unicode(text)
        except ValueError as err:
            raise BodyError(f"{field}: {err}", field) from None


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    """Every refusal's shape: ``{"error": message, "field": name}`` (``field`` when one is to blame)."""
    body = {"error": message} if field is None else {"error": message, "field": field}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error_response(err: ValidationError) -> JSONResponse:
    """A pydantic error as a 400: every field with its problem, the first one as ``field``."""
    details = [
        {"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]}
        for e in err.errors(include_context=False, include_input=False)
    ]
    message = "; ".join(f"{d['field']}: {d['error']}" for d in details)
    return JSONResponse({"error": message, "field": details[0]["field"], "detail": details}, status_code=400)


class RequestGuard:
    def __init__(self, app, models: Mapping[str, type[BaseModel]]) -> None:
        self.app = app
        self.models = dict(models)  # route path -> the request model of its body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.models:
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
            self.models[scope["path"]].model_validate_json(body)
        except BodyError as err:
            await self._refuse(scope, receive, send, str(err), 400, err.field)
            return
        except ValidationError as err:
            await validation_error_response(err)(scope, receive, send)
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
    async def _refuse(scope, receive, send, message: str, status: int, field: str | None = None) -> None:
        await error_response(status, message, field)(scope, receive, send)


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
