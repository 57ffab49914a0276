"""The web UI: the single-page app built from `ui/` (npm) into `dkron_nats/ui_dist/`, served at /ui/.

Litestar treats `/ui` and `/ui/` as one path, so the page refers to its files absolutely (`/ui/assets/...`).

Public, like any login page: the app holds no data, and every call it makes goes through the API's token
checks. Its Content-Security-Policy allows nothing but this server, so the UI makes no outside requests.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

import anyio
from litestar import Response, get

from dkron_nats.http.auth_api import PUBLIC
from dkron_nats.http.responses import text_response

UI_DIR = Path(__file__).resolve().parent.parent / "ui_dist"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
NOT_BUILT = (
    "the web UI is not built into this installation: `make run` builds it (npm, from ui/); "
    "the API under /v1 works without it"
)
IMMUTABLE = "public, max-age=31536000, immutable"
"""For files under assets/: their names carry a hash of their content."""


@get(["/ui", "/ui/{path:path}"], opt=PUBLIC, include_in_schema=False)
async def ui_file(path: str = "") -> Response[bytes]:
    """A built file, or the app's page for any other path under /ui/ (the app routes in the browser)."""
    wanted = _inside(path.lstrip("/"))
    if wanted is not None and await anyio.Path(wanted).is_file():
        cache = IMMUTABLE if wanted.parent.name == "assets" else "no-cache"
        return await _file(wanted, cache)
    index = UI_DIR / "index.html"
    if not await anyio.Path(index).is_file():
        return text_response(NOT_BUILT, 404)
    return await _file(index, "no-cache")


def _inside(relative: str) -> Path | None:
    """The file under UI_DIR that `relative` names; None for a name that leaves it (`..`, links)."""
    if not relative:
        return None
    candidate = (UI_DIR / relative).resolve()
    return candidate if candidate.is_relative_to(UI_DIR) else None


async def _file(path: Path, cache: str) -> Response[bytes]:
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Cache-Control": cache, "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    return Response(content=await anyio.Path(path).read_bytes(), media_type=media_type, headers=headers)


ROUTES = [ui_file]
