"""Accounts of the review app and the HTTP API: users with argon2 password hashes (pwdlib) or a directory's
password (``xraylab.directory``, LDAP), the hospitals each may read, browser sessions, API keys, and the login
throttle. Everything is in the database, so that every replica of the ingress (and ``xraylab ui``) sees the same
users, sessions and locks.

- Passwords: argon2id through pwdlib (its recommended parameters); never stored, logged or taken from argv.
  A directory account's password is checked by binding to the directory; its role and hospitals come from its
  directory groups at each sign-in.
- What a user reads: ``Principal.scope`` (``xraylab.db.scope.ReadScope``): its hospitals, or every hospital with
  the network-wide reading grant. No role reads anything by itself.
- Login throttle (``login_throttle``): after ``LOGIN_MAX_FAILURES`` consecutive failures a *name* is locked for
  ``LOGIN_LOCKOUT_S``, doubling with each further failure (at most 15 minutes), whether the name is an
  account's or not: the same rule, the same table, one password hash per attempt (a dummy one when there is
  nothing to check), so that neither the answer nor its time tells which names exist.
- Device cookies (OWASP): a browser where the user signed in before carries a random token (``login_devices``
  holds its SHA-256). Its logins are not held back by a lock that someone else's guesses put on the account,
  nor by the per-address limit (``ui/access.py``); its own wrong passwords count on it and, at the limit,
  revoke it. So a flood of bad logins cannot shut the doctors out.
- Sessions: a random 256-bit token in an HttpOnly cookie; the table holds only its SHA-256. A session
  ends on logout, after ``SESSION_IDLE_MINUTES`` without a request *of the user's* (the review app's background
  refreshes do not count: ``resolve_session(touch=False)``), after ``SESSION_MAX_HOURS``, or when its user is
  disabled.
- API keys: ``xrk_<key id>_<secret>``, 256 random bits; the table holds the secret's SHA-256 (a fast hash is
  right for a random secret of that size, and keeps a per-request check cheap), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from xraylab.db.models import ApiKey, LoginDevice, LoginThrottle, User, UserHospital, UserSession, as_utc, utcnow
from xraylab.db.scope import NO_PATIENTS, ReadScope

__all__ = ["ROLES", "Principal", "AccessPolicy", "AccountError", "LoginResult", "create_user", "set_disabled",
           "set_hospitals", "set_network_reader", "user_scope", "list_users", "authenticate", "start_session",
           "resolve_session", "touch_session", "end_session", "create_api_key", "revoke_api_key", "resolve_api_key",
           "new_device", "device_user", "MIN_PASSWORD_LENGTH", "check_password_strength", "scope_of"]

log = logging.getLogger("xraylab.accounts")

ROLES = ("doctor", "admin")
MIN_PASSWORD_LENGTH = 12
MAX_LOCKOUT_S = 900.0  # a lock never lasts longer: someone guessing can delay a doctor, not shut them out for long
TOUCH_EVERY_S = 60.0  # a session's last_seen_at is written at most this often (not on every request)
NO_PASSWORD = "!directory"  # a directory account's password_hash: no argon2 hash, so no password matches it
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_HOSPITAL_RE = re.compile(r"^[^\x00-\x1f]{1,128}$")
_KEY_RE = re.compile(r"^xrk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class AccountError(ValueError):
    """A refused account change: a bad name, role or password, an unknown or existing user."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through a browser session or through an API key, with what it may read."""

    user_id: int
    name: str
    role: str
    via: Literal["session", "api_key"]
    scope: ReadScope = NO_PATIENTS
    session_id: int | None = field(default=None, compare=False)


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

    @property
    def touch_every_s(self) -> float:
        return min(TOUCH_EVERY_S, self.session_idle.total_seconds() / 4)


@dataclass(frozen=True)
class LoginResult:
    """``principal`` on success; else ``reason`` (``bad_credentials`` or ``throttled``, with
    ``retry_after_s``). A disabled account answers ``bad_credentials``, as a wrong password does.
    ``directory_down``: the directory did not answer (said to every refused login while it lasts)."""

    principal: Principal | None = None
    reason: Literal["bad_credentials", "throttled"] | None = None
    retry_after_s: float = 0.0
    known: bool = True  # whether the name is an account's (for the audit trail; never told to the caller)
    directory_down: bool = False


@lru_cache(maxsize=1)
def _hasher() -> Any:
    from pwdlib import PasswordHash

    return PasswordHash.recommended()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_hex(16))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(set(password)) < 5:
        raise AccountError("the password needs more than a few different characters")


def _check_hospitals(hospitals: Iterable[str]) -> list[str]:
    cleaned = sorted({h.strip() for h in hospitals if h and h.strip()})
    for hospital in cleaned:
        if not _HOSPITAL_RE.match(hospital):
            raise AccountError(f"bad hospital name {hospital[:40]!r}: 1-128 printable characters")
    return cleaned


def scope_of(user: User) -> ReadScope:
    return ReadScope.of((h.hospital for h in user.hospitals), user.network_reader)


def create_user(session: Session, name: str, password: str, role: str = "doctor", *,
                hospitals: Iterable[str] = (), network: bool = False) -> int:
    """A local account; it reads the patients of ``hospitals`` (or every hospital with ``network``), else none."""
    if not _NAME_RE.match(name):
        raise AccountError(f"bad user name {name!r}: 2-64 lower-case letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    check_password_strength(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise AccountError(f"user {name!r} exists already")
    user = User(name=name, role=role, password_hash=_hasher().hash(password), network_reader=network,
                hospitals=[UserHospital(hospital=h) for h in _check_hospitals(hospitals)])
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
        session.execute(delete(LoginThrottle).where(LoginThrottle.name == name))


def _local_user(session: Session, name: str, what: str) -> User:
    """A local account, for a change of ``what`` a directory account's groups decide (``AccountError``)."""
    user = _user(session, name)
    if user.source != "local":
        raise AccountError(f"{name} is a directory account: its {what} come from its directory groups")
    return user


def user_scope(session: Session, name: str) -> ReadScope:
    """What user ``name`` reads (``AccountError`` for no such user)."""
    return scope_of(_user(session, name))


def set_hospitals(session: Session, name: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> ReadScope:
    """Change which hospitals a local user reads; returns the new scope. A directory account's hospitals come
    from its groups (``AccountError``)."""
    user = _local_user(session, name, "hospitals")
    wanted = ({h.hospital for h in user.hospitals} | set(_check_hospitals(add))) - set(_check_hospitals(remove))
    user.hospitals = [UserHospital(hospital=h) for h in sorted(wanted)]
    session.flush()
    return scope_of(user)


def set_network_reader(session: Session, name: str, granted: bool) -> None:
    """Give (or take back) the network-wide reading grant: every hospital's patients."""
    _local_user(session, name, "reading grant and hospitals").network_reader = granted


def list_users(session: Session) -> list[dict[str, Any]]:
    keys: dict[int, int] = {}
    for user_id in session.scalars(select(ApiKey.user_id).where(ApiKey.revoked.is_(False))):
        keys[user_id] = keys.get(user_id, 0) + 1
    return [{"name": u.name, "role": u.role, "disabled": u.disabled, "api_keys": keys.get(u.id, 0),
             "created_at": u.created_at, "last_login_at": u.last_login_at, "source": u.source,
             "scope": scope_of(u)}
            for u in session.scalars(select(User).order_by(User.name))]


def device_user(session: Session, token: str | None, name: str, max_failures: int) -> LoginDevice | None:
    """The device record when ``token`` (the device cookie) is one where ``name`` signed in before."""
    if not token or len(token) > 128:
        return None
    device = session.scalar(select(LoginDevice).join(User, User.id == LoginDevice.user_id)
                            .where((LoginDevice.token_hash == _sha256(token)) & (User.name == name)))
    return device if device is not None and device.failures < max_failures else None


def new_device(session: Session, user_id: int) -> str:
    """A device cookie's token for a browser where ``user_id`` just signed in (only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    session.add(LoginDevice(token_hash=_sha256(token), user_id=user_id, created_at=utcnow()))
    return token


def _lock_for(policy: AccessPolicy, failures: int) -> float | None:
    """Seconds of lock after ``failures`` consecutive failures (None: not locked): one rule for every name."""
    over = failures - policy.max_failures
    return None if over < 0 else min(policy.lockout_s * 2 ** min(over, 12), MAX_LOCKOUT_S)


def _throttle(session: Session, name: str, now: datetime) -> LoginThrottle:
    """The name's throttle row, locked. Made by an upsert first: on MariaDB a locking read of a missing row
    would lock the gap where it goes, and two first logins at once would deadlock there. A row is kept after a
    success (its count reset), so that a name's next login finds it."""
    values = {"name": name, "failures": 0, "updated_at": now}
    if session.get_bind().dialect.name == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        upsert: Any = mysql_insert(LoginThrottle).values(**values).on_duplicate_key_update(name=name)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert = sqlite_insert(LoginThrottle).values(**values).on_conflict_do_nothing()
    session.execute(upsert)
    return session.scalars(select(LoginThrottle).where(LoginThrottle.name == name).with_for_update()).one()


def authenticate(session: Session, name: str, password: str, policy: AccessPolicy, now: datetime | None = None,
                 *, directory: Any = None, device_token: str | None = None) -> LoginResult:
    """Check a login and count it: the caller commits the session whatever the answer.

    Local accounts check their argon2 hash; any other name, when a ``directory`` (``xraylab.directory``) is
    configured, binds to it, and a directory account is created or brought up to date (role, hospitals) from its
    groups. Every attempt spends one argon2 verification, whatever the name. ``device_token``: the browser's
    device cookie; valid for this name, a lock on the name does not hold it back."""
    now = now or utcnow()
    user = session.scalar(select(User).where(User.name == name))
    device = device_user(session, device_token, name, policy.max_failures) if user is not None else None
    throttle = _throttle(session, name, now)
    locked_until = as_utc(throttle.locked_until)
    if device is None and locked_until is not None and locked_until > now:
        _hasher().verify(password, _dummy_hash())  # as long as a checked password: the answer's time tells nothing
        return LoginResult(reason="throttled", retry_after_s=(locked_until - now).total_seconds(),
                           known=user is not None)
    local = user is not None and user.source == "local"
    if local:
        valid, new_hash = _hasher().verify_and_update(password, user.password_hash)  # type: ignore[union-attr]
    else:
        _hasher().verify(password, _dummy_hash())
        valid, new_hash = False, None
    directory_down = False
    if directory is not None and password:
        from xraylab.directory import DirectoryUnavailableError

        try:
            # A local name makes the same round trip with a password of nobody's (its own is never sent to the
            # directory): the directory's time does not tell local names from others.
            account = directory.authenticate(name, secrets.token_urlsafe(24) if local else password)
        except DirectoryUnavailableError as exc:
            log.warning("the directory did not answer a sign-in: %s", type(exc).__name__)
            account, directory_down = None, True
        if account is not None and not local:
            user = _directory_user(session, user, account, now)
            valid = True
    if valid and user is not None and not user.disabled:
        if new_hash:
            user.password_hash = new_hash
        user.last_login_at = now
        if device is None:
            throttle.failures, throttle.locked_until, throttle.updated_at = 0, None, now
        else:  # the lock others' guesses caused stays on for them
            device.failures = 0
        return LoginResult(principal=Principal(user.id, user.name, user.role, "session", scope_of(user)))
    known = user is not None
    if valid:  # a disabled account with its right password: refused as a wrong one, and not counted
        return LoginResult(reason="bad_credentials", known=known, directory_down=directory_down)
    if device is not None:  # a known browser's own failures count on it, never lock the name for others
        device.failures += 1
        return LoginResult(reason="bad_credentials", known=known, directory_down=directory_down)
    throttle.failures += 1
    throttle.updated_at = now
    lock_s = _lock_for(policy, throttle.failures)
    if lock_s is not None:
        throttle.locked_until = now + timedelta(seconds=lock_s)
        return LoginResult(reason="throttled", retry_after_s=lock_s, known=known, directory_down=directory_down)
    return LoginResult(reason="bad_credentials", known=known, directory_down=directory_down)


def _directory_user(session: Session, user: User | None, account: Any, now: datetime) -> User:
    """The local row of a directory account, created at its first sign-in and brought up to date at each."""
    if user is None:
        user = User(name=account.name, role=account.role, password_hash=NO_PASSWORD, source="directory",
                    created_at=now)
        session.add(user)
    user.role = account.role
    user.network_reader = bool(account.network)
    wanted = _check_hospitals(account.hospitals)
    if sorted(h.hospital for h in user.hospitals) != wanted:
        user.hospitals = [UserHospital(hospital=h) for h in wanted]
    session.flush()
    return user


def start_session(session: Session, principal: Principal, policy: AccessPolicy, now: datetime | None = None) -> str:
    """A new session for a user who just logged in; returns the cookie's token (shown once, never stored)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(UserSession(token_hash=_sha256(token), user_id=principal.user_id, created_at=now,
                            last_seen_at=now, expires_at=now + policy.session_max))
    return token


def resolve_session(session: Session, token: str, policy: AccessPolicy, now: datetime | None = None, *,
                    touch: bool = True) -> Principal | None:
    """The session's user, or None when the token is unknown, ended, idle too long, past its lifetime, or
    its user is disabled. ``touch``: this request is the user's own (not a page's background refresh), so the
    session's last activity moves (written at most every ``policy.touch_every_s``)."""
    if not token or len(token) > 128:
        return None
    now = now or utcnow()
    found = session.execute(select(UserSession, User).join(User, User.id == UserSession.user_id)
                            .where(UserSession.token_hash == _sha256(token))).first()
    if found is None:
        return None
    user_session, user = found
    last_seen = as_utc(user_session.last_seen_at) or now
    if (user_session.ended or user.disabled or (as_utc(user_session.expires_at) or now) <= now
            or now - last_seen > policy.session_idle):
        return None
    if touch:
        _touch(user_session, last_seen, now, policy)
    return Principal(user.id, user.name, user.role, "session", scope_of(user), user_session.id)


def touch_session(session: Session, session_id: int | None, policy: AccessPolicy, now: datetime | None = None) -> None:
    """The user acted (a click in the review app): their session's idle time starts again."""
    if session_id is None:
        return
    now = now or utcnow()
    row = session.get(UserSession, session_id)
    if row is None or row.ended:
        return
    last_seen = as_utc(row.last_seen_at) or now
    if now - last_seen <= policy.session_idle:  # an idle session stays ended
        _touch(row, last_seen, now, policy)


def _touch(row: UserSession, last_seen: datetime, now: datetime, policy: AccessPolicy) -> None:
    """The session's last activity is now: written at most every ``policy.touch_every_s``."""
    if (now - last_seen).total_seconds() > policy.touch_every_s:
        row.last_seen_at = now


def end_session(session: Session, token: str) -> None:
    session.execute(update(UserSession).where(UserSession.token_hash == _sha256(token)).values(ended=True))


def create_api_key(session: Session, name: str, label: str | None = None) -> str:
    """A new key for user ``name``; returns it (shown once: only its hash is kept). Not for a directory account:
    a key would outlive its disabling in the directory."""
    user = _user(session, name)
    if user.source != "local":
        raise AccountError(f"{name} is a directory account: API keys are for local accounts (machine clients)")
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
    last_used = as_utc(key.last_used_at)
    if last_used is None or (now - last_used).total_seconds() > TOUCH_EVERY_S:
        key.last_used_at = now
    return Principal(user.id, user.name, user.role, "api_key", scope_of(user))
