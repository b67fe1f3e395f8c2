"""``xraylab ui``: the review app on its own (Gradio's server), reading the same database and S3."""

from __future__ import annotations

import typer

from xraylab.cli import DatabaseOption, fail, setup_logging
from xraylab.settings import load_settings

__all__ = ["register"]


def register(root: typer.Typer) -> None:
    root.command("ui")(ui)


def ui(database: DatabaseOption = "default", port: int = 0) -> None:
    """Run the review app on its own (Gradio server), reading the same database and S3."""
    setup_logging()
    from ui.review_app import S3ImageLoader, build_review_app
    from xraylab.db.session import Database

    settings = load_settings()
    users = settings.ui_users()
    if not users:
        raise fail("set XRAYLAB_UI_USERS (name:password,...): the app shows patient data")
    demo = build_review_app(Database(settings.database_url(database)), S3ImageLoader(settings),
                            model_dir=settings.model_dir)
    demo.launch(server_name="127.0.0.1", server_port=port or settings.UI_PORT, auth=users)
