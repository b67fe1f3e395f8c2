"""`xraylab users` and `xraylab audit`: passwords from stdin (never argv), clear errors, exit 2 on bad input."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xraylab.accounts import AccessPolicy, authenticate, resolve_api_key
from xraylab.db.session import Database, upgrade_schema
from xraylab.settings import load_settings
from xraylab_cli import app

POLICY = AccessPolicy.from_settings(load_settings())  # the settings' limits


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("XRAYLAB_DATABASE_URL", url)
    monkeypatch.setenv("XRAYLAB_ENV_FILE", str(tmp_path / "none.env"))
    database = Database(url)
    upgrade_schema(database.engine)
    return database


def test_add_disable_key_and_audit(db) -> None:
    runner = CliRunner()
    added = runner.invoke(app, ["users", "add", "dr-house", "--role", "doctor"], input="vicodin and puzzles\n")
    assert added.exit_code == 0, added.output
    with db.session() as session:
        assert authenticate(session, "dr-house", "vicodin and puzzles", POLICY).principal.role == "doctor"
    again = runner.invoke(app, ["users", "add", "dr-house"], input="another password here\n")
    assert again.exit_code == 2 and "exists already" in again.output
    weak = runner.invoke(app, ["users", "add", "dr-weak"], input="short\n")
    assert weak.exit_code == 2 and "at least 12" in weak.output
    role = runner.invoke(app, ["users", "add", "dr-x", "--role", "nurse"], input="long enough password\n")
    assert role.exit_code == 2 and "unknown role" in role.output

    key = runner.invoke(app, ["users", "add-key", "dr-house", "--label", "pacs"])
    assert key.exit_code == 0 and key.output.strip().startswith("xrk_")
    with db.session() as session:
        assert resolve_api_key(session, key.output.strip()).name == "dr-house"
    assert runner.invoke(app, ["users", "add-key", "nobody"]).exit_code == 2

    listed = runner.invoke(app, ["users", "list"])
    assert "dr-house\tdoctor\tactive\tkeys=1" in listed.output
    other = runner.invoke(app, ["users", "add-key", "dr-house"]).output.strip()
    assert runner.invoke(app, ["users", "revoke-key", other.split("_")[1]]).exit_code == 0
    assert runner.invoke(app, ["users", "revoke-key", "xrk_nosuchkey12"]).exit_code == 2
    with db.session() as session:
        assert resolve_api_key(session, other) is None
        assert resolve_api_key(session, key.output.strip()) is not None  # the other key still works
    assert runner.invoke(app, ["users", "disable", "dr-house"]).exit_code == 0
    with db.session() as session:
        assert resolve_api_key(session, key.output.strip()) is None
        assert authenticate(session, "dr-house", "vicodin and puzzles", POLICY).principal is None
    assert runner.invoke(app, ["users", "disable", "nobody"]).exit_code == 2

    trail = runner.invoke(app, ["audit", "--user", "dr-house"])
    assert trail.exit_code == 0
    assert runner.invoke(app, ["audit"]).exit_code == 2  # neither --study nor --user
    everything = runner.invoke(app, ["audit", "--study", "5"])
    assert everything.exit_code == 0 and "no audit events for study 5" in everything.output
