"""The review app's own static files: the image viewer's script (``ui/viewer``: Cornerstone3D bundled by
``scripts/build-viewer.sh``), its licence notices, and the site's icon. Served by the app itself, so the page
loads nothing from another origin (the CSP in ``ui/access.py`` allows none).

``GET /review/viewer/xraylab-viewer.js`` takes a session like every route not named public; the browser may keep
it (``ui/access.py`` lets ``/review/viewer/`` be cached privately: it holds no patient data). Without a built
bundle it answers 404 with what to run, and the page says the viewer did not load.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

__all__ = ["VIEWER_PREFIX", "VIEWER_SCRIPT", "viewer_router", "viewer_bundle", "FAVICON_SVG"]

VIEWER_PREFIX = "/review/viewer"
VIEWER_SCRIPT = f"{VIEWER_PREFIX}/xraylab-viewer.js"
DIST = Path(__file__).resolve().parent / "viewer" / "dist"
# A lung-shaped mark in the app's blue: small enough to live here, so /favicon.ico is never a 404.
FAVICON_SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='6' fill='#1d4e89'/>"
    "<path d='M14 7c-5 1-9 9-9 16 0 2 2 3 4 2l5-3zM18 7c5 1 9 9 9 16 0 2-2 3-4 2l-5-3z' fill='#fff'/>"
    "<rect x='15' y='4' width='2' height='12' fill='#fff'/></svg>"
)


def viewer_bundle(dist: Path = DIST) -> Path | None:
    """The built viewer script, or None when ``scripts/build-viewer.sh`` has not run."""
    path = dist / "xraylab-viewer.js"
    return path if path.is_file() else None


def viewer_router(dist: Path = DIST) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(VIEWER_SCRIPT)
    def script() -> Response:
        path = viewer_bundle(dist)
        if path is None:
            return JSONResponse({"error": "viewer_not_built",
                                 "detail": "the image viewer is not built: run scripts/build-viewer.sh (make install)"},
                                404)
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "private, max-age=3600"})

    @router.get(f"{VIEWER_PREFIX}/LICENSES.txt")
    def licences() -> Response:
        path = dist / "xraylab-viewer.js.LEGAL.txt"
        if not path.is_file():
            return JSONResponse({"error": "viewer_not_built", "detail": "the image viewer is not built"}, 404)
        return FileResponse(path, media_type="text/plain; charset=utf-8")

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    return router
