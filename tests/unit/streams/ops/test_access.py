"""The worker's web access rules: tokens, served host names, open pages (streams/ops/access.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from touchpoint.settings import load_settings
from touchpoint.streams.ops.access import CLIENT_KEY, Access, install

OPS = "ops-token-0123456789abcdef"
BI = "bi-token-0123456789abcdef"


def _access() -> Access:
    return Access({"ops": OPS, "bi": BI}, hosts=["worker-1.internal"])


def _ask(access: Access, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"client": request.get(CLIENT_KEY)})

    async def run() -> tuple[int, Any]:
        app = web.Application(middlewares=[access.middleware])
        app.router.add_get("/{tail:.*}", handler)
        async with TestClient(TestServer(app)) as client:
            # the test client names 127.0.0.1:<port>; a test that names another Host says so
            response = await client.get(path, headers=headers)
            return response.status, await response.json()

    return asyncio.run(run())


def test_a_named_token_is_known_by_its_name() -> None:
    access = _access()
    assert access.client(f"Bearer {OPS}") == "ops"
    assert access.client(f"bearer {BI}") == "bi"
    for refused in (None, "", "Bearer", f"Basic {OPS}", f"Bearer {OPS}x", f"Bearer {OPS[:-1]}",
                    OPS):
        assert access.client(refused) is None, refused


@pytest.mark.parametrize("path", ["/status", "/warehouse/query", "/customers/13800138000",
                                  "/profiles/c-1", "/signals", "/dashboard/data",
                                  "/table/touchpoint-profiles/c-1/", "/some/view/added/later"])
def test_everything_but_the_open_pages_needs_a_token(path: str) -> None:
    status, body = _ask(_access(), path, {})
    assert status == 401 and "API token is required" in body["error"]
    assert _ask(_access(), path, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
    assert _ask(_access(), path, {"Authorization": f"Bearer {BI}"}) == (200, {"client": "bi"})


@pytest.mark.parametrize("path", ["/health", "/metrics", "/", "/dashboard/static/dashboard.js"])
def test_pages_that_say_nothing_about_customers_are_open(path: str) -> None:
    assert _ask(_access(), path, {}) == (200, {"client": None})


@pytest.mark.parametrize("host", ["evil.example", "evil.example:6066", "127.0.0.1.nip.io:6066",
                                  "localhost.evil.example", "[::2]:6066", ""])
def test_a_host_the_worker_does_not_serve_is_refused_even_with_a_token(host: str) -> None:
    status, body = _ask(_access(), "/status", {"Host": host, "Authorization": f"Bearer {OPS}"})
    assert status == 421 and "does not serve that host name" in body["error"]
    assert _ask(_access(), "/health", {"Host": host})[0] == 421


@pytest.mark.parametrize("host", ["127.0.0.1:6066", "localhost", "LOCALHOST:1", "[::1]:6066",
                                  "worker-1.internal:6066"])
def test_served_host_names_are_answered(host: str) -> None:
    assert _ask(_access(), "/status", {"Host": host, "Authorization": f"Bearer {OPS}"}) == (
        200, {"client": "ops"})


def test_the_rules_come_from_settings_and_faust_s_own_views_are_off(tmp_path: Any) -> None:
    settings = load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123",
                              "TOUCHPOINT_WEB_HOST": "10.1.2.3",
                              "TOUCHPOINT_WEB_ALLOWED_HOSTS": "tp.example.com",
                              "TOUCHPOINT_API_TOKENS": f"ops={OPS}"})
    access = Access.of(settings)
    assert {"10.1.2.3", "tp.example.com", "localhost"} <= access.hosts
    assert access.client(f"Bearer {OPS}") == "ops"
    options: dict[str, Any] = {}
    install(options, access)
    assert options["web_application_options"]["middlewares"] == [access.middleware]
    assert not any(options[f"web_{name}_enabled"]
                   for name in ("tables", "router", "graph", "stats", "metrics"))
