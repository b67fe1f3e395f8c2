"""Accounts for tests: each test makes its own, with a random name and password, in the database it uses."""

from __future__ import annotations

import secrets
import uuid

from xraylab.accounts import create_api_key, create_user
from xraylab.db.session import Database


def new_account(db: Database, role: str = "doctor", prefix: str = "doc") -> tuple[str, str]:
    """(name, password) of a new account."""
    name, password = f"{prefix}-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    with db.session() as session:
        create_user(session, name, password, role)
    return name, password


def new_api_key(db: Database, name: str | None = None) -> str:
    """A key of ``name`` (default: a new machine account)."""
    name = name or new_account(db, prefix="client")[0]
    with db.session() as session:
        return create_api_key(session, name, "tests")
