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

from pipeline.webauth import BasicAuthMiddleware

PASSWORD = "pw-5b9e1c7d"


async def _page(request):
    return PlainTextResponse(f"inner {request.url.path}")


async def _echo(websocket):
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def _serve(app) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
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
    yield from _serve(_app(redirect_plain_http=True))


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
    https = httpx.get(f"http://{behind_router}/assets", headers={"X-Forwarded-Proto": "https"}, auth=("admin", PASSWORD))
    assert https.status_code == 200


def test_an_empty_password_is_refused():
    with pytest.raises(ValueError, match="WEB_PASSWORD"):
        BasicAuthMiddleware(_page, username="admin", password="")


def test_repr_shows_no_credentials():
    assert PASSWORD not in repr(_app())
