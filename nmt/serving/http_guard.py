"""The HTTP edge of `nmt serve`, before any model is asked: request bodies read within a size limit
and a deadline and parsed without a 500 (deep nesting, lone surrogates), Host and Origin checks (DNS
rebinding, cross-site POSTs), CORS, the declared-size limit, and a deadline for each request's head
(slow and idle clients)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect, Request

from nmt.serving.config import Access
from nmt.serving.errors import RequestError

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 32  # nesting of arrays and objects in a request body; the deepest input is 3
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest, counted without recursion (brackets in strings aside)."""
    codes = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8"), np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def parse_json_body(raw: bytes) -> Any:
    """A request body -> its JSON value, or a RequestError (400) for anything json.loads would
    fail on late or not at all: deep nesting (RecursionError) and lone UTF-16 surrogates such as
    "\\ud800", which are valid JSON escapes but not text (they cannot be encoded to UTF-8)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"JSON Parse error: {exc.msg} at offset {exc.pos}") from None
    except RecursionError:  # brackets the depth count could not see (an unterminated string)
        raise RequestError("JSON Parse error: nested too deeply") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            char = exc.object[exc.start]
            raise RequestError(f"request body has a lone UTF-16 surrogate \\u{ord(char):04x} in a string: "
                               "not valid Unicode text") from None
    return value


async def read_json_body(request: Request, max_bytes: int, timeout_s: float) -> Any:
    """The request's body as JSON, whatever its Content-Type (curl -d sends a form type, as clients
    of TF Serving are used to). A body over ``max_bytes`` is a 413, one that takes over
    ``timeout_s`` to arrive a 408; both close the connection, as the rest of the body is unread."""
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > max_bytes:
                    raise RequestError(f"request body is over the limit of {max_bytes} bytes", 413, close=True)
    except TimeoutError:
        raise RequestError(f"request body not received within {timeout_s:g} s ({len(raw)} bytes came)", 408,
                           close=True) from None
    except ClientDisconnect:
        # One line, not a traceback: a client that gives up is no server error.
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning("%s disconnected after %d bytes of the request body to %s", client, len(raw), request.url.path)
        raise RequestError("client disconnected", 400, close=True) from None
    return parse_json_body(bytes(raw))


def _host_name(host: str) -> str:
    """A Host header without its port: "[::1]:8501" -> "::1", "localhost:8501" -> "localhost"."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AccessGuard:
    """ASGI middleware, outermost: refuses (403) a Host header that names neither this machine nor
    an ``--allowed-host`` (DNS rebinding: a site whose name resolves to 127.0.0.1 would otherwise
    reach this server from a browser as its own origin), and a browser request whose Origin is
    neither the server's own nor a ``--cors`` origin (any page could otherwise POST text/plain
    bodies here, which browsers send without asking). ``--cors`` origins get CORS headers and
    their preflight OPTIONS answered. Bodies declared over the limit are refused (413) unread."""

    def __init__(self, app: Any, access: Access, max_body_bytes: int) -> None:
        self.app, self.access, self.max_body_bytes = app, access, max_body_bytes
        self.hosts = {h.lower().strip("[]") for h in (*LOCAL_HOSTS, access.bind_host, *access.allowed_hosts)}

    def host_allowed(self, host: str | None) -> bool:
        if host is None or "*" in self.access.allowed_hosts:
            return True  # HTTP/1.0 without Host: no browser sends that
        name = _host_name(host).lower()
        # Bound to every address, the machine's own IP addresses are its names; an IP literal
        # cannot be rebound (the browser's origin is then that address itself).
        return name in self.hosts or (self.access.bind_host in WILDCARD_HOSTS and _is_ip(name))

    def cross_origin_allowed(self, origin: str) -> bool:
        allowed = {o.rstrip("/") for o in self.access.cors_origins}
        return "*" in allowed or origin.rstrip("/") in allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host"), headers.get("origin")
        refusal = None
        if not self.host_allowed(host):
            refusal = (f"Host {host!r} is not this server's name; start nmt serve with --allowed-host "
                       f"{_host_name(host or '')} to accept it")
        same_origin = origin is not None and host is not None and origin.lower() in (f"http://{host}".lower(),
                                                                                       f"https://{host}".lower())
        cross = origin is not None and not same_origin
        if refusal is None and cross and not self.cross_origin_allowed(origin):
            refusal = f"cross-origin request from {origin!r} refused; start nmt serve with --cors {origin} to allow it"
        if refusal is not None:
            await JSONResponse({"error": refusal}, status_code=403)(scope, receive, send)
            return
        size = headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.max_body_bytes:
            await JSONResponse({"error": f"request body of {size} bytes is over the limit of {self.max_body_bytes}"},
                               status_code=413, headers={"connection": "close"})(scope, receive, send)
            return
        if not cross:
            await self.app(scope, receive, send)
            return
        cors = {"access-control-allow-origin": origin, "vary": "Origin"}
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            cors |= {"access-control-allow-methods": "GET, POST, OPTIONS", "access-control-max-age": "600",
                     "access-control-allow-headers": headers.get("access-control-request-headers", "content-type")}
            await Response(status_code=204, headers=cors)(scope, receive, send)
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in cors.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def request_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline for each request's headers: uvicorn has none, so a
    client that connects and sends nothing, or a header a byte at a time, held its connection
    forever. The body's deadline is the app's (read_json_body), which can still answer 408; here a
    connection that has not sent a whole request head within ``timeout_s`` (or, after an answer,
    the rest of a body nobody read) is closed."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestTimeoutProtocol(H11Protocol):
        request_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.request_timer is not None:
                self.request_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self.request_timer is not None:
                self.request_timer.cancel()
            self.request_timer = None if self.transport.is_closing() else self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            self.request_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return  # closed already, or a request is being answered
            started = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
            if started or self.conn.their_state is not h11.IDLE:
                client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
                log.warning("closed the connection of %s: no whole request within %g s (--body-timeout-s)",
                            client, timeout_s)
            if started:
                body = json.dumps({"error": f"request not received within {timeout_s:g} s"}).encode()
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            self.transport.close()

    return RequestTimeoutProtocol
