"""Accounts: argon2 hashes, the login throttle, sessions that expire, API keys stored hashed (SQLite)."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from xraylab.accounts import (
    AccessPolicy,
    AccountError,
    authenticate,
    create_api_key,
    create_user,
    end_session,
    resolve_api_key,
    resolve_session,
    set_disabled,
    start_session,
)
from xraylab.db.models import ApiKey, User, UserSession, utcnow
from xraylab.db.session import Database, upgrade_schema

PASSWORD = "correct horse battery"
POLICY = AccessPolicy(session_idle=timedelta(minutes=30), session_max=timedelta(hours=12), max_failures=3,
                      lockout_s=60)


@pytest.fixture()
def db(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade_schema(db.engine)
    with db.session() as session:
        create_user(session, "doc", PASSWORD, "doctor")
    yield db
    db.dispose()


def login(db, name: str, password: str, now=None):
    with db.session() as session:
        return authenticate(session, name, password, POLICY, now=now)


def test_password_is_stored_as_an_argon2_hash(db) -> None:
    with db.session() as session:
        user = session.scalar(select(User).where(User.name == "doc"))
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert login(db, "doc", PASSWORD).principal.name == "doc"
    assert login(db, "doc", "wrong password!").reason == "bad_credentials"
    unknown = login(db, "nobody", PASSWORD)
    assert unknown.reason == "bad_credentials" and unknown.known is False


def test_bad_accounts_are_refused(db) -> None:
    with db.session() as session:
        for name, password, role, message in [("doc", PASSWORD, "doctor", "exists"),
                                              ("Bad Name", PASSWORD, "doctor", "bad user name"),
                                              ("nurse", PASSWORD, "nurse", "unknown role"),
                                              ("short", "abc", "doctor", "at least 12"),
                                              ("same", "a" * 20, "doctor", "different characters")]:
            with pytest.raises(AccountError, match=message):
                create_user(session, name, password, role)


def test_repeated_failures_lock_the_account_even_for_the_right_password(db) -> None:
    now = utcnow()
    assert [login(db, "doc", f"wrong {i}", now).reason for i in range(3)] == [
        "bad_credentials", "bad_credentials", "throttled"]
    locked = login(db, "doc", PASSWORD, now + timedelta(seconds=10))
    assert locked.principal is None and locked.reason == "throttled" and 49 <= locked.retry_after_s <= 51
    assert login(db, "doc", "wrong again", now + timedelta(seconds=61)).reason == "throttled"  # lock doubles
    assert login(db, "doc", PASSWORD, now + timedelta(seconds=100)).reason == "throttled"
    assert login(db, "doc", PASSWORD, now + timedelta(seconds=190)).principal is not None
    assert login(db, "doc", "wrong", now + timedelta(seconds=191)).reason == "bad_credentials"  # count reset


def test_disabled_users_cannot_log_in_and_their_sessions_end(db) -> None:
    principal = login(db, "doc", PASSWORD).principal
    with db.session() as session:
        token = start_session(session, principal, POLICY)
        key = create_api_key(session, "doc", "pacs")
    with db.session() as session:
        assert resolve_session(session, token, POLICY).name == "doc"
        assert resolve_api_key(session, key).via == "api_key"
        set_disabled(session, "doc")
    with db.session() as session:
        assert resolve_session(session, token, POLICY) is None
        assert resolve_api_key(session, key) is None
    assert login(db, "doc", PASSWORD).reason == "bad_credentials"
    with db.session() as session:
        set_disabled(session, "doc", False)
    assert login(db, "doc", PASSWORD).principal is not None


def test_sessions_expire_when_idle_at_their_end_and_on_logout(db) -> None:
    principal = login(db, "doc", PASSWORD).principal
    now = utcnow()
    with db.session() as session:
        token = start_session(session, principal, POLICY, now=now)
        stored = session.scalars(select(UserSession.token_hash)).all()
    assert token not in stored and len(stored) == 1
    with db.session() as session:
        assert resolve_session(session, token, POLICY, now + timedelta(minutes=20)) is not None  # kept alive
        assert resolve_session(session, token, POLICY, now + timedelta(minutes=45)) is not None
        assert resolve_session(session, token, POLICY, now + timedelta(minutes=80)) is None  # idle 35 min
        assert resolve_session(session, "made-up-token", POLICY) is None
    with db.session() as session:
        late = start_session(session, principal, POLICY, now=now)
        for minutes in range(20, 12 * 60, 20):  # used all day long, still ends after 12 hours
            assert resolve_session(session, late, POLICY, now + timedelta(minutes=minutes)) is not None
        assert resolve_session(session, late, POLICY, now + timedelta(hours=12, minutes=1)) is None
        fresh = start_session(session, principal, POLICY)
        end_session(session, fresh)
        assert resolve_session(session, fresh, POLICY) is None


def test_api_keys_are_stored_hashed_and_checked_whole(db) -> None:
    with db.session() as session:
        key = create_api_key(session, "doc", "pacs gateway")
        row = session.scalar(select(ApiKey))
        with pytest.raises(AccountError, match="no user"):
            create_api_key(session, "ghost")
    secret = key.split("_", 2)[2]
    assert key.startswith("xrk_") and secret not in row.secret_hash and row.label == "pacs gateway"
    with db.session() as session:
        assert resolve_api_key(session, key).name == "doc"
        assert resolve_api_key(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert resolve_api_key(session, "xrk_nope") is None and resolve_api_key(session, "") is None
        row = session.scalar(select(ApiKey))
        row.revoked = True
    with db.session() as session:
        assert resolve_api_key(session, key) is None


def test_known_and_unknown_names_follow_one_lock_rule_and_spend_one_hash_each(db, monkeypatch) -> None:
    """The answers to a real name and to a made-up one are the same, attempt after attempt and after the lock
    has doubled past 5 minutes; each attempt (throttled or not) costs one argon2 verification, whatever the name."""
    import xraylab.accounts as accounts

    hasher = accounts._hasher()
    verified = []
    original = type(hasher).verify

    def counting(self, password, hash):  # noqa: A002 - pwdlib's name
        verified.append(1)
        return original(self, password, hash)

    monkeypatch.setattr(type(hasher), "verify", counting)
    monkeypatch.setattr(type(hasher), "verify_and_update", lambda self, p, h: (counting(self, p, h), None))
    now = utcnow()
    offsets = [0, 1, 2, 10, 61, 100, 200, 330, 500, 1500]
    answers = {}
    for name in ("doc", "ghost-name"):
        answers[name] = []
        for seconds in offsets:
            verified.clear()
            result = login(db, name, "not it", now + timedelta(seconds=seconds))
            answers[name].append((result.reason, round(result.retry_after_s)))
            assert len(verified) == 1, (name, seconds)
    assert answers["doc"] == answers["ghost-name"]
    assert answers["doc"][2] == ("throttled", 60) and answers["doc"][4][0] == "throttled"


def test_a_known_browser_signs_in_through_a_lock_someone_else_caused(db) -> None:
    """Device cookies: a lock from guesses elsewhere does not hold back the browser where the doctor signed in
    before; another user's device, or a device that guessed wrong too often itself, does not open the lock."""
    from xraylab.accounts import new_device

    principal = login(db, "doc", PASSWORD).principal
    with db.session() as session:
        device = new_device(session, principal.user_id)
        create_user(session, "other", PASSWORD + "!", "doctor")
        other_id = session.scalar(select(User.id).where(User.name == "other"))
        other_device = new_device(session, other_id)
    now = utcnow()
    for i in range(4):
        login(db, "doc", f"attacker guess {i}", now)
    assert login(db, "doc", PASSWORD, now).reason == "throttled"

    def with_device(token, password):
        with db.session() as session:
            return authenticate(session, "doc", password, POLICY, now=now, device_token=token)

    assert with_device(other_device, PASSWORD).reason == "throttled"
    assert with_device(device, PASSWORD).principal.name == "doc"
    for i in range(3):
        assert with_device(device, f"my own typo {i}").reason == "bad_credentials"
    assert with_device(device, PASSWORD).reason == "throttled"  # the device spent its own tries: a plain login


def test_background_requests_do_not_keep_a_session_alive(db) -> None:
    from xraylab.accounts import touch_session

    principal = login(db, "doc", PASSWORD).principal
    now = utcnow()
    with db.session() as session:
        token = start_session(session, principal, POLICY, now=now)
    with db.session() as session:
        for minutes in range(2, 30, 2):  # a refresh timer, every few minutes
            assert resolve_session(session, token, POLICY, now + timedelta(minutes=minutes), touch=False) is not None
        assert resolve_session(session, token, POLICY, now + timedelta(minutes=31), touch=False) is None
    with db.session() as session:
        clicked = start_session(session, principal, POLICY, now=now)
    with db.session() as session:
        seen = resolve_session(session, clicked, POLICY, now + timedelta(minutes=20), touch=False)
        touch_session(session, seen.session_id, POLICY, now + timedelta(minutes=20))  # a click in the app
    with db.session() as session:
        assert resolve_session(session, clicked, POLICY, now + timedelta(minutes=45), touch=False) is not None


def test_migration_leaves_existing_users_reading_no_patient_until_told(tmp_path: Path) -> None:
    """Accounts from before hospitals existed are given none and no grant: explicitly nothing, never everything."""
    from sqlalchemy import text

    old = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_schema(old.engine, "0004")
    with old.engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, role, password_hash, disabled, failed_logins, created_at) "
                                "VALUES ('old-doc', 'doctor', 'x', 0, 2, '2026-11-01 00:00:00'),"
                                " ('old-admin', 'admin', 'x', 0, 0, '2026-11-01 00:00:00')"))
    upgrade_schema(old.engine)
    with old.session() as session:
        from xraylab.accounts import list_users

        users = {u["name"]: u for u in list_users(session)}
    assert users["old-doc"]["scope"].empty and users["old-admin"]["scope"].empty
    assert users["old-doc"]["source"] == "local"
    old.dispose()
