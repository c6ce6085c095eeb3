"""GET /api/docs: Swagger UI over /api/openapi.json, served from this package (static/swagger-ui, swagger-ui-dist
5.35.0 from npm: swagger-ui-bundle.js and swagger-ui.css as published, the CSS's source-map pointer removed), so
the page loads no script from a CDN and its CSP allows scripts from this origin only. Open, like the schema: the
routes it lists need the bearer token anyway (Swagger UI's Authorize button, never persisted).

To update: `npm pack swagger-ui-dist@<version>`, copy those two files and the licences, set VERSIONS.json.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from machine_api.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static" / "swagger-ui"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "init.js": "text/javascript; charset=utf-8",
}
# Swagger UI sets style attributes from its scripts and shows inline SVG/data: images; it fetches the schema from
# this origin. Nothing else: no other origin, no inline script, no form posts, never framed.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <title>Agent machine API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
"""


@router.get("/api/docs", response_class=HTMLResponse)
def docs_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"content-security-policy": DOCS_CSP, "cache-control": "no-cache"})


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/api/docs/{name}")
def docs_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:  # only the listed files: the path never reaches the filesystem
        raise ApiError(404, "not_found", f"no docs asset named '{name[:64]}'")
    return Response(_asset(name), media_type=media_type, headers={"cache-control": "public, max-age=3600"})
