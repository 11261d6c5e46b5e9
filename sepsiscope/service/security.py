"""Bearer tokens, body-size limits, security headers and request logs without patient values.

- :func:`load_token`: the token from an environment variable or a file (first line); at least
  16 characters. :func:`bearer_dependency` checks ``Authorization: Bearer <token>`` on every
  ``/v1`` route by comparing sha256 digests with :func:`hmac.compare_digest` (constant time, and
  the length of the token does not leak either); 401 with ``WWW-Authenticate`` otherwise.
- :class:`GuardMiddleware` (pure ASGI, outermost): answers 413 when ``Content-Length`` exceeds the
  limit before reading anything, and reads bodies without a length (chunked) only up to the limit;
  adds security headers (a CSP that allows only this origin's scripts, ``nosniff``, no referrer,
  ``no-store`` on the API); turns any unhandled exception into a plain 500 and logs its type only;
  logs one line per request with the method, the route *template* (``/v1/stays/{stay_id}/trace``,
  never the id), the status and the time. Nothing a request carries is ever logged.

Examples
--------
>>> import os
>>> os.environ["DOCTEST_TOKEN"] = "0123456789abcdef-token"
>>> load_token(env="DOCTEST_TOKEN")
'0123456789abcdef-token'
>>> load_token(env="DOCTEST_NO_SUCH_VARIABLE")
Traceback (most recent call last):
...
ValueError: no API token: set DOCTEST_NO_SUCH_VARIABLE or pass --token-file
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from pathlib import Path

from fastapi import HTTPException, Request

__all__ = ["load_token", "bearer_dependency", "GuardMiddleware", "MIN_TOKEN_LENGTH", "TOKEN_ENV"]

log = logging.getLogger("sepsiscope.service")

TOKEN_ENV = "SEPSISCOPE_TOKEN"
MIN_TOKEN_LENGTH = 16
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]


def load_token(*, env: str = TOKEN_ENV, token_file=None) -> str:
    """The API token: the first line of ``token_file`` if given, else the environment variable ``env``."""
    if token_file is not None:
        lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        token, where = (lines[0].strip() if lines else ""), str(token_file)
    else:
        token, where = os.environ.get(env, "").strip(), env
        if not token:
            raise ValueError(f"no API token: set {env} or pass --token-file")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the API token from {where} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH}")
    return token


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def bearer_dependency(token: str):
    """A FastAPI dependency that admits only ``Authorization: Bearer <token>``."""
    expected = _digest(token)
    challenge = {"WWW-Authenticate": 'Bearer realm="sepsiscope"'}

    async def require_token(request: Request) -> None:
        header = request.headers.get("authorization")
        if header is None:
            raise HTTPException(401, "missing Authorization header: send 'Authorization: Bearer <token>'",
                                headers=challenge)
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(given.strip()), expected):
            raise HTTPException(401, "invalid bearer token", headers=challenge)

    return require_token


def _json_response(status: int, detail: str):
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return headers, body


class GuardMiddleware:
    """Size limit, security headers, 500s without details, and value-free request logs (see module doc)."""

    def __init__(self, app, *, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _reject(self, send, status: int, detail: str) -> None:
        headers, body = _json_response(status, detail)
        await send({"type": "http.response.start", "status": status, "headers": headers + _HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def _bounded_receive(self, receive):
        """Read the whole body, up to the limit; None when it is larger."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return [message]
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500, "started": False}
        limit = f"the request body is larger than the limit of {self.max_body_bytes:,} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            status["code"] = 413
            await self._reject(send, 413, limit)
            return self._log(scope, 413, t0)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            messages = await self._bounded_receive(receive)
            if messages is None:
                await self._reject(send, 413, limit)
                return self._log(scope, 413, t0)

            async def receive():  # noqa: F811 - replay the body that was read
                return messages.pop(0) if messages else {"type": "http.disconnect"}

        api = scope["path"].startswith("/v1")

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                extra = _HEADERS + ([(b"cache-control", b"no-store")] if api else [])
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception as exc:  # a traceback could carry values; log the type only
            log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], _route(scope))
            status["code"] = 500
            if not status["started"]:
                await self._reject(send, 500, "internal error")
        self._log(scope, status["code"], t0)

    @staticmethod
    def _log(scope, status: int, t0: float) -> None:
        log.info("%s %s %d %.1f ms", scope["method"], _route(scope), status, round((time.perf_counter() - t0) * 1e3, 1))


def _route(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or ("/static/..." if scope["path"].startswith("/static/") else "(unmatched)")
