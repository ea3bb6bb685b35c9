"""The HTTP API in-process for tests: ``httpx.AsyncClient`` over ``httpx.ASGITransport``,
driven from synchronous tests through an anyio blocking portal (one event loop per client)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from mirror.app import App
from mirror.serve import create_app

# The write token of the ``write_api`` fixture (conftest.py), and the header carrying it.
WRITE_TOKEN = "write-secret"
AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}


class ApiClient:
    """Synchronous calls into the ASGI app of ``create_app(app)``."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(lambda: self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def json(self, url: str, **kwargs: Any) -> Any:
        """GET ``url``, assert 200, and return the parsed JSON body."""
        response = self.get(url, **kwargs)
        assert response.status_code == 200, (url, response.status_code, response.text)
        return response.json()


@contextmanager
def api_client(app: App) -> Iterator[ApiClient]:
    """A client of a fresh ASGI app serving ``app``."""
    transport = httpx.ASGITransport(app=create_app(app))
    with start_blocking_portal() as portal:
        client = httpx.AsyncClient(transport=transport, base_url="http://mirror.test")
        try:
            yield ApiClient(portal, client)
        finally:
            portal.call(client.aclose)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """(status, code, message) of an error answer, asserting the JSON error format."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]
