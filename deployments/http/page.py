"""The web studio: `GET /` serves the page, `GET /static/...` its files, all from the package.

The page is plain HTML, CSS and one ES module (deployments/http/static/), no build step, and it
only calls the public API, from the same origin. Everything it loads comes from here (no CDN: it
works offline and behind strict proxies), so the page is sent with a Content-Security-Policy that
allows nothing else: no inline script or style, no other origin, except the S3 server's when
downloads are redirected there (presigned URLs).

Mounted under a route prefix (Serve's `route_prefix`, e.g. `/keyed`), the page finds its files and
the API below that prefix: index.html's `%ROOT%` becomes the prefix, and studio.js resolves API
paths relative to its own URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from pathlib import Path, PurePosixPath

from fastapi import Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.http.routes import app
from deployments.http.service import VideoService
from kiss_core.settings import StorageSettings

STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"
ROOT_MARK = b"%ROOT%"

# Explicit types for what the page ships; anything else falls back to mimetypes, then octet-stream.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".woff2": "font/woff2",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
# Code and markup revalidate on every load (cheap with the ETag: a 304), so a redeploy shows at once;
# the style clips change only with a release.
CACHE_CODE = "no-cache"
CACHE_MEDIA = "public, max-age=86400"
MEDIA_SUFFIXES = frozenset({".mp4", ".webp", ".png", ".svg", ".woff2"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def content_security_policy(storage: StorageSettings) -> str:
    """The page's CSP. Downloads of a store with presigned URLs are redirected to the S3 server (its
    public endpoint when set), which the page fetches, shows and plays: that origin is allowed too."""
    extra = ""
    if storage.backend == "s3":
        scheme = "https" if storage.secure else "http"
        extra = f" {scheme}://{storage.public_endpoint or storage.endpoint}"
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": f"'self' blob: data:{extra}",
        "media-src": f"'self' blob:{extra}",
        "connect-src": f"'self'{extra}",
        "font-src": "'self'",
        "object-src": "'none'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def static_file(path: str) -> Path:
    """The file under STATIC_DIR that `path` names; 404 for anything else (traversal, dot files, dirs,
    and index.html, which is only served as `/` with its CSP)."""
    parts = PurePosixPath(path).parts
    if not parts or parts == (INDEX,) or "\\" in path or any(p.startswith(".") for p in parts):
        raise StarletteHTTPException(404, "Not Found")
    root = STATIC_DIR.resolve()
    candidate = (root / Path(*parts)).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        raise StarletteHTTPException(404, "Not Found")
    return candidate


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _cached(request: Request, data: bytes, headers: dict[str, str], media_type: str) -> Response:
    """`data` with a strong ETag, or 304 when the client already has it."""
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {**headers, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


class PageRoutes:
    """`/` and `/static/...`: the web studio, served by the ingress from the package's files."""

    service: VideoService

    @app.get("/", include_in_schema=False)
    async def studio_page(self, request: Request) -> Response:
        data = await asyncio.to_thread((STATIC_DIR / INDEX).read_bytes)
        root = str(request.scope.get("root_path", "")).rstrip("/")
        data = data.replace(ROOT_MARK, root.encode())
        headers = {
            "Content-Security-Policy": content_security_policy(self.service.settings.storage),
            "Cache-Control": CACHE_CODE,
            **SECURITY_HEADERS,
        }
        return _cached(request, data, headers, CONTENT_TYPES[".html"])

    @app.get("/static/{path:path}", include_in_schema=False)
    async def studio_static(self, path: str, request: Request) -> Response:
        file = static_file(path)
        data = await asyncio.to_thread(file.read_bytes)
        cache = CACHE_MEDIA if file.suffix.lower() in MEDIA_SUFFIXES else CACHE_CODE
        return _cached(request, data, {"Cache-Control": cache, **SECURITY_HEADERS}, content_type(file))
