"""``xraylab ui``: the review app on its own (uvicorn), behind the same login as on the Serve ingress, reading
the same database and S3."""

from __future__ import annotations

import typer

from xraylab.cli import DatabaseOption, fail, setup_logging
from xraylab.settings import load_settings

__all__ = ["register", "build_standalone_app"]


def register(root: typer.Typer) -> None:
    root.command("ui")(ui)


def build_standalone_app(database: str = "default"):  # type: ignore[no-untyped-def]
    """The FastAPI app ``xraylab ui`` serves: the login pages, the review app and its pictures, no API."""
    from fastapi import FastAPI

    from ui.access import install_access
    from ui.review_app import mount_review_app
    from xraylab.accounts import list_users
    from xraylab.db.session import Database, schema_is_current

    settings = load_settings()
    db = Database(settings.database_url(database))
    if not schema_is_current(db.engine):
        raise fail("the database is not migrated: run `xraylab db upgrade` first")
    with db.session() as session:
        if not list_users(session):
            raise fail("no accounts yet: create one with `xraylab users add NAME --role doctor`")
    app = FastAPI(title="xraylab review", docs_url=None, redoc_url=None, openapi_url=None)
    install_access(app, db, settings)
    return mount_review_app(app, db, settings), settings


def ui(database: DatabaseOption = "default", port: int = 0, host: str = "127.0.0.1") -> None:
    """Run the review app on its own, behind login (accounts: `xraylab users add`)."""
    setup_logging()
    import uvicorn

    app, settings = build_standalone_app(database)
    # proxy_headers off: uvicorn would take X-Forwarded-For from any loopback peer as the client's address; the app
    # reads it itself, from XRAYLAB_TRUSTED_PROXIES only (ui/access.py).
    uvicorn.run(app, host=host, port=port or settings.UI_PORT, log_level="info", proxy_headers=False)
