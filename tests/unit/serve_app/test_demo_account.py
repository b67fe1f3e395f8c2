"""`make demo` on an empty database: one doctor account, its generated password in a 0600 file, not a log."""

import stat
from pathlib import Path

from serve_app.demo import DEMO_USER, ensure_demo_account
from xraylab.accounts import AccessPolicy, authenticate, list_users
from xraylab.db.session import Database, upgrade_schema
from xraylab.settings import load_settings

POLICY = AccessPolicy.from_settings(load_settings())  # the settings' limits


def test_demo_account_once_with_its_password_in_a_private_file(tmp_path: Path, caplog) -> None:
    settings = load_settings(STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    db = Database(settings.DATABASE_URL)
    upgrade_schema(db.engine)
    caplog.set_level("INFO")
    login_file = ensure_demo_account(db, settings)
    assert login_file == tmp_path / "demo-login.txt"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    password = login_file.read_text().split("password: ")[1].strip()
    assert password not in caplog.text
    with db.session() as session:
        assert authenticate(session, DEMO_USER, password, POLICY).principal is not None
    assert ensure_demo_account(db, settings) == login_file  # accounts exist: nothing new
    with db.session() as session:
        assert [u["name"] for u in list_users(session)] == [DEMO_USER]
