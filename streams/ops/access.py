"""Who may ask the worker's web server what: API tokens, served host names, open pages.

Every request passes one aiohttp middleware: it refuses a ``Host`` the worker does not
serve (421, against DNS rebinding), then requires a named API token in the
``Authorization: Bearer`` header (401 otherwise) everywhere except the few pages that say
nothing about customers (``/health``, ``/metrics`` and the dashboard's page and static
files). Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest` against
every configured token. Why it denies by default and keeps tokens out of URLs is in
docs/design/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from aiohttp import web
from faust.app.router import Router as FaustRouter
from faust.web import Request as FaustRequest
from faust.web import Response as FaustResponse
from faust.web import Web
from yarl import URL

__all__ = ["CLIENT_KEY", "OPEN_PATHS", "Access", "Router", "bearer", "client_of", "install"]

log = logging.getLogger(__name__)

#: Pages anyone on the network may read: nothing on them is about a customer.
OPEN_PATHS: Final = frozenset({"/health", "/metrics", "/"})
OPEN_PREFIXES: Final = ("/dashboard/static/",)
#: Where a view finds the name of the token the request came with.
CLIENT_KEY: Final = web.RequestKey("touchpoint.client", str)
_LOOPBACK: Final = ("localhost", "127.0.0.1", "[::1]")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer(token: str) -> dict[str, str]:
    """The request header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Access:
    """The worker's API tokens (by name) and the host names it answers to."""

    def __init__(self, tokens: Mapping[str, str], *, hosts: Iterable[str]) -> None:
        if not tokens:
            raise ValueError("at least one API token is needed")
        self._tokens = [(name, _digest(token)) for name, token in tokens.items()]
        self.hosts = frozenset(h.lower() for h in (*hosts, *_LOOPBACK))

    @classmethod
    def of(cls, settings: Any) -> Access:
        """The access rules ``settings`` describe (tokens, ``web_host``, allowed hosts)."""
        host = settings.web_host.lower()
        # an address that binds every interface names no host of its own
        served = [] if host in {"0.0.0.0", "::", ""} else [
            f"[{host}]" if ":" in host else host]
        return cls(settings.api_tokens, hosts=[*served, *settings.web_allowed_hosts])

    def client(self, authorization: str | None) -> str | None:
        """The name of the token an ``Authorization`` header presents, or ``None``."""
        scheme, _, token = (authorization or "").partition(" ")
        presented = _digest(token.strip())
        found = None
        for name, digest in self._tokens:  # every one: the time says nothing
            if hmac.compare_digest(presented, digest) and scheme.lower() == "bearer":
                found = name
        return found

    def serves(self, host_header: str | None) -> bool:
        """Whether ``Host: host_header`` names this worker (any port)."""
        if not host_header:
            return False
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        else:
            host = host.rpartition(":")[0] if ":" in host else host
        return host in self.hosts

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The served-host check, then the token check (an aiohttp middleware)."""
        if not self.serves(request.headers.get("Host")):
            return web.json_response(
                {"error": "this worker does not serve that host name; add it to "
                          "TOUCHPOINT_WEB_ALLOWED_HOSTS if it is yours"}, status=421)
        path = request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await handler(request)
        client = self.client(request.headers.get("Authorization"))
        if client is None:
            return web.json_response(
                {"error": "an API token is required: send `Authorization: Bearer <token>` "
                          "(TOUCHPOINT_API_TOKENS names the tokens)"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="touchpoint"'})
        request[CLIENT_KEY] = client
        return await handler(request)


class Router(FaustRouter):
    """Faust's router, forwarding a request to the worker that holds a key without its Host.

    Faust passes every header on, ``Host`` too, so the other worker would see this
    worker's name and refuse it. The token (``Authorization``) is passed on as it came.
    """

    async def _route_req(self, dest_url: URL, web: Web, request: FaustRequest
                         ) -> FaustResponse:
        app = self.app
        host, port = self._urlident(dest_url)
        if (host, port) == self._urlident(app.conf.canonical_url):
            from faust.exceptions import SameNode

            raise SameNode()
        routed = request.url.with_host(host).with_port(int(port))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with app.http_client.request(method=request.method, headers=headers,
                                           url=routed) as response:
            return web.text(await response.text(), content_type=response.content_type,
                            status=response.status)


def install(options: dict[str, Any], access: Access) -> None:
    """Put ``access`` in front of every view of a Faust app built with ``options``.

    Faust's own views of table contents, partition assignments, the topology and its
    statistics are turned off: they answer anyone, and the worker has its own.
    """
    app_options = dict(options.get("web_application_options") or {})
    app_options["middlewares"] = [*app_options.get("middlewares", ()), access.middleware]
    # a SQL statement or a lookup is small; nothing posted to a worker needs more
    app_options.setdefault("client_max_size", 256 * 1024)
    options["web_application_options"] = app_options
    options.update(web_tables_enabled=False, web_router_enabled=False,
                   web_graph_enabled=False, web_stats_enabled=False,
                   web_metrics_enabled=False, Router=Router)


def client_of(request: FaustRequest) -> str:
    """The name of the token ``request`` came with (set by the middleware)."""
    return request.get(CLIENT_KEY, "?")  # type: ignore[attr-defined]

