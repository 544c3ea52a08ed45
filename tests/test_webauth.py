"""Basic authentication in front of an ASGI app, over real HTTP and websockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from pipeline.webauth import BasicAuthMiddleware, FailedAttempts, proxy_header_options

PASSWORD = "pw-5b9e1c7d"


async def _page(request):
    return PlainTextResponse(f"inner {request.url.path}")


async def _echo(websocket):
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def _serve(app) -> Iterator[str]:
    """Serve ``app`` on loopback the way ``pipeline web`` serves the UI (same proxy-header trust)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = proxy_header_options(app.behind_router)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def _app(**options):
    inner = Starlette(routes=[Route("/{path:path}", _page), WebSocketRoute("/graphql", _echo)])
    return BasicAuthMiddleware(inner, username="admin", password=PASSWORD, **options)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    yield from _serve(_app())


@pytest.fixture(scope="module")
def behind_router() -> Iterator[str]:
    yield from _serve(_app(behind_router=True))


def test_requests_without_or_with_wrong_credentials_get_401(address):
    for auth in (None, ("admin", "wrong"), ("someone", PASSWORD), ("admin", PASSWORD + "x")):
        response = httpx.get(f"http://{address}/runs", auth=auth)
        assert response.status_code == 401, auth
        assert response.headers["www-authenticate"].startswith("Basic realm=")
        assert "inner" not in response.text


def test_malformed_authorization_headers_get_401(address):
    for header in ("Basic !!!notbase64", "Bearer " + PASSWORD, "Basic", "basic YWRtaW4="):
        assert httpx.get(f"http://{address}/", headers={"Authorization": header}).status_code == 401, header


def test_right_credentials_reach_the_app(address):
    response = httpx.get(f"http://{address}/runs/abc?x=1", auth=("admin", PASSWORD))
    assert response.status_code == 200
    assert response.text == "inner /runs/abc"


def test_health_needs_no_credentials(address):
    response = httpx.get(f"http://{address}/health")
    assert (response.status_code, response.text) == (200, "ok\n")


def test_websocket_needs_credentials(address):
    async def exchange(headers):
        async with websockets.connect(f"ws://{address}/graphql", additional_headers=headers) as connection:
            await connection.send("ping")
            return await connection.recv()

    good = httpx.BasicAuth("admin", PASSWORD)._auth_header
    assert asyncio.run(exchange({"Authorization": good})) == "ping"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(exchange({}))
    # The handshake is refused before the app sees it (uvicorn answers 403 to a close before accept).
    assert refused.value.response.status_code == 403


def test_plain_http_behind_the_router_is_redirected_before_credentials_are_sent(behind_router):
    response = httpx.get(
        f"http://{behind_router}/assets?view=graph",
        headers={"X-Forwarded-Proto": "http", "Host": "my-app.herokuapp.com"},
    )
    assert response.status_code == 308
    assert response.headers["location"] == "https://my-app.herokuapp.com/assets?view=graph"
    https = httpx.get(
        f"http://{behind_router}/assets", headers={"X-Forwarded-Proto": "https"}, auth=("admin", PASSWORD)
    )
    assert https.status_code == 200


def test_an_empty_password_is_refused():
    with pytest.raises(ValueError, match="WEB_PASSWORD"):
        BasicAuthMiddleware(_page, username="admin", password="")


def test_repr_shows_no_credentials():
    assert PASSWORD not in repr(_app())


# --- failed attempts ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limited(clock: FakeClock, **options) -> Iterator[tuple[str, BasicAuthMiddleware]]:
    app = _app(failed_attempts=FailedAttempts(limit=3, window_seconds=300, clock=clock), **options)
    for address in _serve(app):
        yield address, app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock) -> Iterator[tuple[str, BasicAuthMiddleware]]:
    yield from _limited(clock)


@pytest.fixture
def limited_behind_router(clock) -> Iterator[tuple[str, BasicAuthMiddleware]]:
    yield from _limited(clock, behind_router=True)


def test_repeated_failures_from_one_address_get_429_with_retry_after(limited, clock):
    address, _ = limited
    assert httpx.get(f"http://{address}/runs").status_code == 401  # no credentials: not a guess
    statuses = [httpx.get(f"http://{address}/runs", auth=("admin", f"guess{n}")).status_code for n in range(3)]
    assert statuses == [401, 401, 401]

    clock.now += 10
    blocked = httpx.get(f"http://{address}/runs", auth=("admin", PASSWORD))
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "290"
    assert "inner" not in blocked.text
    assert httpx.get(f"http://{address}/health").status_code == 200

    clock.now += 290
    assert httpx.get(f"http://{address}/runs", auth=("admin", PASSWORD)).status_code == 200


def test_a_forged_forwarded_for_does_not_escape_the_limit_off_heroku(limited):
    address, _ = limited
    for n in range(3):
        headers = {"X-Forwarded-For": f"203.0.113.{n}"}
        assert httpx.get(f"http://{address}/", auth=("admin", "wrong"), headers=headers).status_code == 401
    fresh_claim = {"X-Forwarded-For": "198.51.100.7"}
    assert httpx.get(f"http://{address}/", auth=("admin", PASSWORD), headers=fresh_claim).status_code == 429


def test_behind_the_router_the_last_forwarded_for_hop_is_the_client(limited_behind_router):
    address, _ = limited_behind_router

    def get(forwarded_for: str, password: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"}
        return httpx.get(f"http://{address}/", auth=("admin", password), headers=headers).status_code

    # The client writes any first hops it likes; the router appends the address it saw.
    assert [get(f"10.0.0.{n}, 198.51.100.1", "wrong") for n in range(3)] == [401, 401, 401]
    assert get("10.9.9.9, 198.51.100.1", PASSWORD) == 429
    # Another client of the router is not held, and its success resets no one's count.
    assert get("198.51.100.2", PASSWORD) == 200
    assert get("198.51.100.1", PASSWORD) == 429


def test_a_websocket_from_a_blocked_address_is_refused(limited):
    address, _ = limited
    for _ in range(3):
        httpx.get(f"http://{address}/", auth=("admin", "wrong"))

    async def connect():
        good = httpx.BasicAuth("admin", PASSWORD)._auth_header
        async with websockets.connect(f"ws://{address}/graphql", additional_headers={"Authorization": good}):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus):
        asyncio.run(connect())


def test_tracked_addresses_are_capped_oldest_failure_first(clock):
    attempts = FailedAttempts(limit=2, window_seconds=300, max_addresses=3, clock=clock)
    for n in range(10):
        clock.now += 1
        attempts.record(f"192.0.2.{n}")
        attempts.record(f"192.0.2.{n}")
    assert len(attempts) == 3
    assert attempts.retry_after("192.0.2.9") == 300 and attempts.retry_after("192.0.2.0") is None
    clock.now += 300
    assert attempts.retry_after("192.0.2.9") is None and len(attempts) == 2
