"""Building Dkron-style responses: JSON (optionally indented), plain-text errors, common headers."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response

JSON = "application/json; charset=utf-8"
TEXT = "text/plain"
"""Litestar appends `; charset=utf-8` to text types itself."""


def json_response(
    request: Request[Any, Any, Any], data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    body = msgspec.json.encode(data)
    if "pretty" in request.query_params:
        body = msgspec.json.format(body, indent=4)
    return Response(content=body, status_code=status, media_type=JSON, headers=headers or {})


def list_response(request: Request[Any, Any, Any], items: list[Any], total: int) -> Response[bytes]:
    return json_response(request, items, headers={"X-Total-Count": str(total)})


def text_response(message: str, status: int) -> Response[bytes]:
    return Response(content=message.encode(), status_code=status, media_type=TEXT)
