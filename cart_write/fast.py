"""POST /api/v1/<command> served without Flask: the same function, without its per-request cost.

Flask's request context, routing and response wrapping cost about as much CPU as validating and
encoding the command itself. This WSGI layer hands exactly the command requests to
`command_response` (which the Flask routes call too, so both answer the same) and every other
request (other methods and paths, 404/405) to the Flask app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug import Response

from cart_web.server import WsgiApp
from cart_write.validation import COMMANDS

CommandResponse = Callable[[str, dict[str, Any]], Response]


def with_fast_commands(app: WsgiApp, command_response: CommandResponse) -> WsgiApp:
    """Wrap the Flask WSGI app so command POSTs skip it."""
    paths = {f"/api/v1/{name}": name for name in COMMANDS}

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            name = paths.get(environ.get("PATH_INFO") or "")
            if name is not None:
                return command_response(name, environ)(environ, start_response)
        return app(environ, start_response)

    return wsgi
