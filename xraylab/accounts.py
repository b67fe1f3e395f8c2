"""Accounts of the review app and the HTTP API: users with argon2 password hashes (pwdlib), browser
sessions, API keys, and the login throttle. Everything is in the database, so that every replica of the
ingress (and ``xraylab ui``) sees the same users, sessions and locks.

- Passwords: argon2id through pwdlib (its recommended parameters); never stored, logged or taken from argv.
- Login throttle: after ``LOGIN_MAX_FAILURES`` consecutive failures an account is locked for
  ``LOGIN_LOCKOUT_S``, doubling with each further failure (at most 15 minutes); while locked, a password
  is not checked (the same hash time is spent). A wrong name costs the same hash as a wrong password, and the
  review app throttles unknown names the same way (``ui/access.py``): no user enumeration by answer or time.
- Sessions: a random 256-bit token in an HttpOnly cookie; the table holds only its SHA-256. A session
  ends on logout, after ``SESSION_IDLE_MINUTES`` without a request, after ``SESSION_MAX_HOURS``, or when
  its user is disabled.
- API keys: ``xrk_<key id>_<secret>``, 256 random bits; the table holds the secret's SHA-256 (a fast hash is
  right for a random secret of that size, and keeps a per-request check cheap), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from xraylab.db.models import ApiKey, User, UserSession, utcnow

__all__ = ["ROLES", "Principal", "AccessPolicy", "AccountError", "LoginResult", "create_user", "set_disabled",
           "list_users", "authenticate", "start_session", "resolve_session", "end_session", "create_api_key",
           "revoke_api_key", "resolve_api_key", "MIN_PASSWORD_LENGTH", "check_password_strength"]

ROLES = ("doctor", "admin")
MIN_PASSWORD_LENGTH = 12
MAX_LOCKOUT_S = 900.0  # a lock never lasts longer: someone guessing can delay a doctor, not shut them out for long
TOUCH_EVERY_S = 60.0  # a session's last_seen_at is written at most this often (not on every request)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_KEY_RE = re.compile(r"^xrk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class AccountError(ValueError):
    """A refused account change: a bad name, role or password, an unknown or existing user."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through a browser session or through an API key."""

    user_id: int
    name: str
    role: str
    via: Literal["session", "api_key"]


@dataclass(frozen=True)
class AccessPolicy:
    """The session and throttle limits, from ``XRAYLAB_SESSION_*`` / ``XRAYLAB_LOGIN_*`` (``from_settings``)."""

    session_idle: timedelta
    session_max: timedelta
    max_failures: int
    lockout_s: float

    @classmethod
    def from_settings(cls, settings: Any) -> AccessPolicy:
        return cls(session_idle=timedelta(minutes=settings.SESSION_IDLE_MINUTES),
                   session_max=timedelta(hours=settings.SESSION_MAX_HOURS),
                   max_failures=settings.LOGIN_MAX_FAILURES, lockout_s=settings.LOGIN_LOCKOUT_S)


@dataclass(frozen=True)
class LoginResult:
    """``principal`` on success; else ``reason`` (``bad_credentials`` or ``throttled``, with
    ``retry_after_s``). A disabled account answers ``bad_credentials``, as a wrong password does."""

    principal: Principal | None = None
    reason: Literal["bad_credentials", "throttled"] | None = None
    retry_after_s: float = 0.0
    known: bool = True  # whether the name is an account's (for the audit trail; never told to the caller)


@lru_cache(maxsize=1)
def _hasher() -> Any:
    from pwdlib import PasswordHash

    return PasswordHash.recommended()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_hex(16))


def _aware(value: datetime | None) -> datetime | None:
    """SQLite and MariaDB give back naive datetimes; every time here is written in UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(set(password)) < 5:
        raise AccountError("the password needs more than a few different characters")


def create_user(session: Session, name: str, password: str, role: str = "doctor") -> int:
    if not _NAME_RE.match(name):
        raise AccountError(f"bad user name {name!r}: 2-64 lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    check_password_strength(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise AccountError(f"user {name!r} exists already")
    user = User(name=name, role=role, password_hash=_hasher().hash(password))
    session.add(user)
    session.flush()
    return user.id


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise AccountError(f"no user {name!r}")
    return user


def set_disabled(session: Session, name: str, disabled: bool = True) -> None:
    """Disable (or enable) a user; disabling ends every session at once (keys stop working too)."""
    user = _user(session, name)
    user.disabled = disabled
    if disabled:
        session.execute(update(UserSession).where(UserSession.user_id == user.id).values(ended=True))
    else:
        user.failed_logins, user.locked_until = 0, None


def list_users(session: Session) -> list[dict[str, Any]]:
    keys: dict[int, int] = {}
    for user_id in session.scalars(select(ApiKey.user_id).where(ApiKey.revoked.is_(False))):
        keys[user_id] = keys.get(user_id, 0) + 1
    return [{"name": u.name, "role": u.role, "disabled": u.disabled, "api_keys": keys.get(u.id, 0),
             "created_at": u.created_at, "last_login_at": u.last_login_at}
            for u in session.scalars(select(User).order_by(User.name))]


def authenticate(session: Session, name: str, password: str, policy: AccessPolicy,
                 now: datetime | None = None) -> LoginResult:
    """Check a login and count it: the caller commits the session whatever the answer."""
    now = now or utcnow()
    user = session.scalar(select(User).where(User.name == name).with_for_update())
    if user is None:
        _hasher().verify(password, _dummy_hash())  # the same time as a wrong password
        return LoginResult(reason="bad_credentials", known=False)
    locked_until = _aware(user.locked_until)
    if locked_until is not None and locked_until > now:
        _hasher().verify(password, _dummy_hash())  # as long as a checked password: the answer's time tells nothing
        return LoginResult(reason="throttled", retry_after_s=(locked_until - now).total_seconds())
    valid, new_hash = _hasher().verify_and_update(password, user.password_hash)
    if not valid:
        user.failed_logins += 1
        over = user.failed_logins - policy.max_failures
        if over >= 0:
            lock_s = min(policy.lockout_s * 2 ** min(over, 12), MAX_LOCKOUT_S)
            user.locked_until = now + timedelta(seconds=lock_s)
            return LoginResult(reason="throttled", retry_after_s=lock_s)
        return LoginResult(reason="bad_credentials")
    if user.disabled:
        return LoginResult(reason="bad_credentials")
    if new_hash:
        user.password_hash = new_hash
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    return LoginResult(principal=Principal(user.id, user.name, user.role, "session"))


def start_session(session: Session, principal: Principal, policy: AccessPolicy, now: datetime | None = None) -> str:
    """A new session for a user who just logged in; returns the cookie's token (shown once, never stored)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(UserSession(token_hash=_sha256(token), user_id=principal.user_id, created_at=now,
                            last_seen_at=now, expires_at=now + policy.session_max))
    return token


def resolve_session(session: Session, token: str, policy: AccessPolicy,
                    now: datetime | None = None) -> Principal | None:
    """The session's user, or None when the token is unknown, ended, idle too long, past its lifetime, or
    its user is disabled. A live session's last request time is kept (at most once a minute)."""
    if not token or len(token) > 128:
        return None
    now = now or utcnow()
    found = session.execute(select(UserSession, User).join(User, User.id == UserSession.user_id)
                            .where(UserSession.token_hash == _sha256(token))).first()
    if found is None:
        return None
    user_session, user = found
    last_seen = _aware(user_session.last_seen_at) or now
    if (user_session.ended or user.disabled or (_aware(user_session.expires_at) or now) <= now
            or now - last_seen > policy.session_idle):
        return None
    if (now - last_seen).total_seconds() > TOUCH_EVERY_S:
        user_session.last_seen_at = now
    return Principal(user.id, user.name, user.role, "session")


def end_session(session: Session, token: str) -> None:
    session.execute(update(UserSession).where(UserSession.token_hash == _sha256(token)).values(ended=True))


def create_api_key(session: Session, name: str, label: str | None = None) -> str:
    """A new key for user ``name``; returns it (shown once: only its hash is kept)."""
    user = _user(session, name)
    key_id = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    session.add(ApiKey(key_id=key_id, user_id=user.id, secret_hash=_sha256(secret), label=label))
    return f"xrk_{key_id}_{secret}"


def revoke_api_key(session: Session, key_id: str) -> str:
    """Revoke a key by its id (the part after ``xrk_``); returns its user's name."""
    key_id = key_id.removeprefix("xrk_").split("_", 1)[0]
    found = session.execute(select(ApiKey, User).join(User, User.id == ApiKey.user_id)
                            .where(ApiKey.key_id == key_id)).first()
    if found is None:
        raise AccountError(f"no API key {key_id!r}")
    found[0].revoked = True
    return found[1].name


def resolve_api_key(session: Session, token: str, now: datetime | None = None) -> Principal | None:
    match = _KEY_RE.match(token or "")
    if match is None:
        return None
    key_id, secret = match.groups()
    found = session.execute(select(ApiKey, User).join(User, User.id == ApiKey.user_id)
                            .where(ApiKey.key_id == key_id)).first()
    if found is None:
        return None
    key, user = found
    if key.revoked or user.disabled or not hmac.compare_digest(key.secret_hash, _sha256(secret)):
        return None
    now = now or utcnow()
    last_used = _aware(key.last_used_at)
    if last_used is None or (now - last_used).total_seconds() > TOUCH_EVERY_S:
        key.last_used_at = now
    return Principal(user.id, user.name, user.role, "api_key")
