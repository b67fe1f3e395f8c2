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
    assert "dr-house\tdoctor\tlocal\tactive\treads=no hospital: reads no patient\tkeys=1" in listed.output
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


def test_hospitals_and_the_network_grant_are_given_explicitly_and_audited(db) -> None:
    """A new account reads nothing unless told; hospitals are added and taken away by name; the network-wide
    grant is its own command; every change is in the audit trail under the operating system's user."""
    runner = CliRunner()
    assert runner.invoke(app, ["users", "add", "dr-north", "--hospital", "northgate", "--hospital", "st-mary"],
                         input="a long enough password\n").exit_code == 0
    assert runner.invoke(app, ["users", "add", "it-admin", "--role", "admin"],
                         input="another long password\n").exit_code == 0
    with db.session() as session:
        north = authenticate(session, "dr-north", "a long enough password", POLICY).principal
        admin = authenticate(session, "it-admin", "another long password", POLICY).principal
    assert north.scope.hospitals == {"northgate", "st-mary"} and not north.scope.network
    assert admin.scope.empty  # an admin manages accounts; it reads no patient without a grant
    changed = runner.invoke(app, ["users", "hospitals", "dr-north", "--add", "riverside", "--remove", "st-mary"])
    assert changed.exit_code == 0 and "northgate, riverside" in changed.output
    assert runner.invoke(app, ["users", "hospitals", "nobody", "--add", "x"]).exit_code == 2
    granted = runner.invoke(app, ["users", "grant-network", "it-admin"])
    assert granted.exit_code == 0
    with db.session() as session:
        admin = authenticate(session, "it-admin", "another long password", POLICY).principal
    assert admin.scope.network
    assert runner.invoke(app, ["users", "revoke-network", "it-admin"]).exit_code == 0
    listed = runner.invoke(app, ["users", "list"]).output
    assert "reads=northgate, riverside" in listed and "it-admin\tadmin\tlocal\tactive\treads=no hospital" in listed
    trail = runner.invoke(app, ["audit", "--user", "os:" + __import__("getpass").getuser()]).output
    assert "user_hospitals" in trail and "network_granted" in trail and "network_revoked" in trail
