"""A synchronous client for the read API's ASGI app in tests: Starlette's TestClient held open,
so the app's lifespan runs and every request of one client uses the same event loop (the
redis.asyncio and psycopg async handles are bound to it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.testclient import TestClient

T = TypeVar("T")


class ReadClient:
    """Requests (httpx responses: .status_code, .content, .json(), .headers) to one app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # A bug must come back as the app's JSON 500, as a real server answers it; the Host
        # is one the secure profile allows by default.
        self._tc = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
        self._tc.__enter__()

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._tc.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._tc.post(url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self._tc.delete(url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._tc.request(method, url, **kwargs)

    def stream(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._tc.stream(method, url, **kwargs)

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a coroutine function on the app's event loop (stores, waiters)."""
        return self._tc.portal.call(fn, *args)  # type: ignore[union-attr]

    def close(self) -> None:
        self._tc.__exit__(None, None, None)

    def __enter__(self) -> ReadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mimetype(resp: Any) -> str:
    """The media type of a response, without parameters."""
    return resp.headers.get("content-type", "").split(";")[0].strip()
