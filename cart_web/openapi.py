"""OpenAPI pieces both APIs' documents use: references, JSON responses, the error shape."""

from __future__ import annotations

from typing import Any

# The one error shape of both APIs (cart_web.errors), as a schema.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string", "examples": ["INVALID_PARAMETER"]},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"},
                                "description": "Seconds to wait before retrying."}}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: dict[str, Any], description: str,
                  headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response with a JSON body of `schema`."""
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def error(description: str, retry_after: bool = False) -> dict[str, Any]:
    """An error response (the `Error` component), with a Retry-After header if it has one."""
    return json_response(ref("Error"), description, _RETRY_AFTER if retry_after else None)
