"""OpenAPI docs (Swagger UI and ReDoc) served from assets vendored in the package: no CDN.

FastAPI's built-in /docs loads its JavaScript and CSS from a public CDN and a favicon from
fastapi.tiangolo.com; on an air-gapped site that page would be blank and would leak requests.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from controlplane.api.headers import docs_policy

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
ASSETS_PATH = "/docs-assets"
TITLE = "Sparkplane control plane API"

router = APIRouter(include_in_schema=False)


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """The page with its own CSP: it needs its inline start-up script (by hash) and styles."""
    page.headers["Content-Security-Policy"] = docs_policy(bytes(page.body).decode())
    return page


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
        # validatorUrl null: Swagger UI would otherwise send the spec to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )
    return _with_policy(page)


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title=TITLE,
        redoc_js_url=f"{ASSETS_PATH}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
    return _with_policy(page)


def install_docs(app: FastAPI) -> None:
    """Mount the vendored assets and the two docs pages (create the app with docs_url=None)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="docs-assets")
    app.include_router(router)
