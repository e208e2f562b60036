"""Driving an ASGI app's request directly on the running event loop: what it sends, and the
client's disconnect on demand (an endless response such as an event stream included)."""

from __future__ import annotations

import asyncio
from typing import Any


def scope(path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
          ) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": query,
            "headers": [(b"host", b"localhost"), *(headers or [])],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 7000), "state": {}}


class Stream:
    """One request to the app: what it sends, and a switch to disconnect the client."""

    def __init__(self, app: Any, sc: dict[str, Any]) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await self.sent.put(message)

        self.task = asyncio.create_task(app(sc, receive, send))

    async def start(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.sent.get(), 5)
        assert message["type"] == "http.response.start"
        return message

    async def chunk(self, timeout: float = 5) -> bytes:
        message = await asyncio.wait_for(self.sent.get(), timeout)
        assert message["type"] == "http.response.body"
        return message["body"]

    async def close(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 5)
