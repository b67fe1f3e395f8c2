"""Accounts for tests: each test makes its own, with a random name and password, in the database it uses."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from xraylab.accounts import Principal, create_api_key, create_user
from xraylab.db.scope import EVERY_HOSPITAL, ReadScope
from xraylab.db.session import Database


def new_account(db: Database, role: str = "doctor", prefix: str = "doc", *, hospitals: Iterable[str] = (),
                network: bool = False) -> tuple[str, str]:
    """(name, password) of a new account reading the patients of ``hospitals`` (or all, ``network``)."""
    name, password = f"{prefix}-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    with db.session() as session:
        create_user(session, name, password, role, hospitals=hospitals, network=network)
    return name, password


def new_api_key(db: Database, name: str | None = None) -> str:
    """A key of ``name`` (default: a new machine account)."""
    name = name or new_account(db, prefix="client")[0]
    with db.session() as session:
        return create_api_key(session, name, "tests")


def reading_as(app: Any, scope: ReadScope = EVERY_HOSPITAL, name: str = "reader") -> Any:
    """``app`` as the access middleware hands it a signed-in user reading ``scope`` (for routes tested alone)."""
    principal = Principal(1, name, "doctor", "session", scope)

    async def signed_in(asgi_scope: dict[str, Any], receive: Any, send: Any) -> None:
        if asgi_scope["type"] in ("http", "websocket"):
            asgi_scope.setdefault("state", {})["principal"] = principal
        await app(asgi_scope, receive, send)

    return signed_in


def directory_demo_password() -> str:
    """The password of the demo directory's users (cluster/local/slapd.sh writes it into the env file)."""
    import os
    from pathlib import Path

    from xraylab.settings import load_settings

    path = Path(os.environ.get("XRAYLAB_ENV_FILE") or load_settings().STATE_DIR / "local.env")
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    assert values.get("XRAYLAB_LDAP_DEMO_PASSWORD"), f"no directory in {path}: cluster/local/slapd.sh start"
    return values["XRAYLAB_LDAP_DEMO_PASSWORD"]
