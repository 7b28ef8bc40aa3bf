"""The ASGI admission layer: decides whether a request may be read at all, before any routing or parsing.

In order: the ``Host`` header (on loopback binds, against DNS rebinding), the ``Origin`` header
(cross-site form posts), the bearer token (constant-time compare), then the body: its declared
``Content-Length`` and the bytes actually streamed (chunked bodies included) are held to the
endpoint's limit, and a body that stalls longer than ``read_timeout`` is answered 408. A refused body
is never passed on: the app sees the client disconnect, and whatever it answers to that is dropped.
One log line per request.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers

log = logging.getLogger("vsr.serve")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """``'[::1]:8000'`` -> ``'::1'``, ``'Localhost:80'`` -> ``'localhost'``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``Origin`` names the very host and port the request was sent to (the server's own page, on
    whatever address it was opened). The ``Host`` check comes first, so on loopback binds a rebound DNS
    name never gets here."""
    host = host_header.strip().lower()
    return bool(host) and origin.strip().lower() in (f"http://{host}", f"https://{host}")


class Guard:
    """Pure ASGI middleware; ``body_limit(method, path, content_type)`` gives each endpoint's byte limit."""

    def __init__(self, app: Any, *, token: str | None, body_limit: Callable[[str, str, str], int],
                 allowed_hosts: set[str] | None, allowed_origins: set[str], public_paths: set[str],
                 read_timeout: float) -> None:
        self.app = app
        self.token = f"Bearer {token}".encode() if token else None
        self.body_limit = body_limit
        self.allowed_hosts = allowed_hosts  # None: any (the server was bound to a public address on purpose)
        self.allowed_origins = allowed_origins
        self.public_paths = public_paths
        self.read_timeout = read_timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status = [0]
        refused = [False]
        response_started = [False]

        async def logged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                response_started[0] = True
            await send(message)

        async def refuse(code: int, detail: str, extra: dict[str, str] | None = None) -> None:
            refused[0] = True
            if response_started[0]:
                return
            body = json.dumps({"detail": detail}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close"), *((k.encode(), v.encode()) for k, v in (extra or {}).items())]
            await logged_send({"type": "http.response.start", "status": code, "headers": headers})
            await logged_send({"type": "http.response.body", "body": body})

        try:
            problem = self.admit(scope)
            if problem:
                await refuse(*problem)
                return
            headers = Headers(scope=scope)
            limit = self.body_limit(method, path, headers.get("content-type", ""))
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or len(length) > 18):
                await refuse(400, "malformed Content-Length")
                return
            if length is not None and int(length) > limit:
                await refuse(413, f"request body of {int(length)} bytes is over this endpoint's limit of {limit}")
                return
            received = [0]
            body_done = [False]

            async def guarded_receive() -> dict:
                if refused[0]:
                    return {"type": "http.disconnect"}
                if body_done[0]:  # after the body: only a disconnect can come, wait for it as long as it takes
                    return await receive()
                try:
                    message = await asyncio.wait_for(receive(), self.read_timeout)
                except asyncio.TimeoutError:
                    await refuse(408, f"no request body bytes for {self.read_timeout:g} s")
                    return {"type": "http.disconnect"}
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > limit:
                        await refuse(413, f"request body over this endpoint's limit of {limit} bytes")
                        return {"type": "http.disconnect"}
                    body_done[0] = not message.get("more_body", False)
                return message

            async def guarded_send(message: dict) -> None:
                if not refused[0]:  # once refused, what the app answers to the 'disconnect' is dropped
                    await logged_send(message)

            try:
                await self.app(scope, guarded_receive, guarded_send)
            except Exception:
                if not refused[0]:
                    raise
        finally:
            log.info("%s %s %d %.1f ms", method, path, status[0], (time.perf_counter() - started) * 1000)

    def admit(self, scope: dict) -> tuple[int, str, dict[str, str]] | None:
        """Why the request must be refused before its body is read (status, message, headers), or None."""
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            return 400, "invalid Host header (this server answers only to its loopback names)", {}
        origin = headers.get("origin")
        if origin is not None and origin not in self.allowed_origins and not same_origin(origin, headers.get("host", "")):
            return 403, "cross-origin requests are refused (start the server with --cors-origin to allow one)", {}
        if self.token and scope["path"] not in self.public_paths:
            got = headers.get("authorization", "").encode()
            if not hmac.compare_digest(got, self.token):
                return 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"}
        return None
