"""Directory sign-in (xraylab/directory.py) against the project's OpenLDAP (cluster/local/slapd.sh): the seeded
users and groups, refusals that all look alike, filter injection, TLS required by the server, and a directory
that cannot be reached."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from xraylab.directory import Directory, DirectoryConfig, DirectoryUnavailableError
from xraylab.settings import Settings

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "cluster" / "local" / "directory.toml"
SUFFIX = "dc=xraylab,dc=test"
PEOPLE, GROUPS = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}"
ADMIN_DN = f"cn=admin,{SUFFIX}"


@dataclass(frozen=True)
class LdapEnv:
    """What slapd.sh wrote into the generated env file."""

    ca_file: Path
    bind_password: str
    demo_password: str
    admin_password: str


def read_ldap_env(settings: Settings) -> LdapEnv:
    path = Path(os.environ.get("XRAYLAB_ENV_FILE") or settings.STATE_DIR / "local.env")
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    keys = ["XRAYLAB_LDAP_CA_FILE", "XRAYLAB_DIRECTORY_BIND_PASSWORD", "XRAYLAB_LDAP_DEMO_PASSWORD",
            "XRAYLAB_LDAP_ADMIN_PASSWORD"]
    missing = [k for k in keys if not values.get(k)]
    assert not missing, f"{missing} not in {path}: start the directory with cluster/local/slapd.sh start"
    return LdapEnv(Path(values[keys[0]]), values[keys[1]], values[keys[2]], values[keys[3]])


@pytest.fixture(scope="module")
def ldap_env(settings: Settings) -> LdapEnv:
    return read_ldap_env(settings)


def make_config(settings: Settings, env: LdapEnv, **changes: Any) -> DirectoryConfig:
    """The sample settings file, pointed at this stack's directory."""
    values = DirectoryConfig.load(SAMPLE).model_dump()
    values.update(url=f"ldap://127.0.0.1:{settings.LDAP_PORT}", ca_file=env.ca_file, timeout_s=2)
    values.update(changes)
    return DirectoryConfig.model_validate(values)


@pytest.fixture(scope="module")
def directory(settings: Settings, ldap_env: LdapEnv) -> Directory:
    return Directory(make_config(settings, ldap_env), ldap_env.bind_password)


def connect(settings: Settings, env: LdapEnv, dn: str, password: str, *, tls: bool = True) -> ldap3.Connection:
    server = ldap3.Server("127.0.0.1", port=settings.LDAP_PORT, get_info=ldap3.NONE, connect_timeout=3,
                          tls=ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(env.ca_file)))
    conn = ldap3.Connection(server, user=dn, password=password, receive_timeout=3)
    conn.open()
    if tls:
        assert conn.start_tls()
    return conn


@pytest.fixture()
def admin(settings: Settings, ldap_env: LdapEnv) -> Iterator[ldap3.Connection]:
    conn = connect(settings, ldap_env, ADMIN_DN, ldap_env.admin_password)
    assert conn.bind(), conn.result
    yield conn
    conn.unbind()


@pytest.fixture()
def temp_user(admin: ldap3.Connection) -> Iterator[tuple[str, str, str]]:
    """A user of the test's own, (name, DN, password), in an unmapped group of its own; removed afterwards from
    every group it was put in."""
    name, password = f"test.{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    dn, group = f"uid={name},{PEOPLE}", f"cn=test-unmapped-{name},{GROUPS}"
    assert admin.add(dn, ["inetOrgPerson"], {"uid": name, "cn": name, "sn": name, "userPassword": password}), \
        admin.result
    assert admin.add(group, ["groupOfNames"], {"member": [dn]}), admin.result
    try:
        yield name, dn, password
    finally:
        admin.search(GROUPS, f"(member={ldap3.utils.conv.escape_filter_chars(dn)})", attributes=ldap3.NO_ATTRIBUTES)
        for entry in list(admin.response or []):
            if entry["dn"] != group:
                admin.modify(entry["dn"], {"member": [(ldap3.MODIFY_DELETE, [dn])]})
        admin.delete(group)
        admin.delete(dn)


@pytest.mark.parametrize(("name", "role", "hospitals", "network"), [
    ("dr.north", "doctor", ("northgate",), False),
    ("dr.south", "doctor", ("riverside", "st-mary"), False),
    ("dr.network", "doctor", (), True),
    ("it.admin", "admin", (), False),
])
def test_seeded_users_get_their_groups_role_and_hospitals(directory: Directory, ldap_env: LdapEnv, name: str,
                                                          role: str, hospitals: tuple[str, ...],
                                                          network: bool) -> None:
    account = directory.authenticate(name, ldap_env.demo_password)
    assert account is not None
    assert (account.name, account.dn) == (name, f"uid={name},{PEOPLE}")
    assert (account.role, account.hospitals, account.network) == (role, hospitals, network)
    assert account.display_name == f"Demo user {name}"


def test_ldaps_url_works_too(settings: Settings, ldap_env: LdapEnv) -> None:
    config = make_config(settings, ldap_env, url=f"ldaps://127.0.0.1:{settings.LDAPS_PORT}", start_tls=False)
    account = Directory(config, ldap_env.bind_password).authenticate("dr.north", ldap_env.demo_password)
    assert account is not None and account.hospitals == ("northgate",)


def test_wrong_or_empty_password_is_refused(directory: Directory, ldap_env: LdapEnv) -> None:
    assert directory.authenticate("dr.north", ldap_env.demo_password + "x") is None
    assert directory.authenticate("dr.north", "") is None
    assert directory.authenticate("no.such.user", ldap_env.demo_password) is None


def test_disabled_account_is_refused_with_its_right_password(directory: Directory, settings: Settings,
                                                              ldap_env: LdapEnv) -> None:
    assert directory.authenticate("dr.disabled", ldap_env.demo_password) is None
    # The server refuses it (ppolicy's pwdAccountLockedTime), not the client.
    conn = connect(settings, ldap_env, f"uid=dr.disabled,{PEOPLE}", ldap_env.demo_password)
    assert not conn.bind() and conn.result["result"] == 49  # invalidCredentials, as for a wrong password
    conn.unbind()


def test_entry_matching_disabled_filter_is_refused(settings: Settings, ldap_env: LdapEnv) -> None:
    # As AD's (userAccountControl:1.2.840.113556.1.4.803:=2) would: here an attribute the seeded entries hold.
    directory = Directory(make_config(settings, ldap_env, disabled_filter="(uid=dr.south)"), ldap_env.bind_password)
    assert directory.authenticate("dr.south", ldap_env.demo_password) is None
    assert directory.authenticate("dr.north", ldap_env.demo_password) is not None


def test_user_in_no_mapped_group_is_refused(directory: Directory, settings: Settings, ldap_env: LdapEnv,
                                            temp_user: tuple[str, str, str]) -> None:
    name, dn, password = temp_user
    conn = connect(settings, ldap_env, dn, password)
    assert conn.bind(), "the test user's password is right"
    conn.unbind()
    assert directory.authenticate(name, password) is None


def test_several_groups_give_the_union_and_doctor_wins(directory: Directory, admin: ldap3.Connection,
                                                       temp_user: tuple[str, str, str]) -> None:
    name, dn, password = temp_user
    for group in ("radiology-north", "radiology-network", "xraylab-admins"):
        assert admin.modify(f"cn={group},{GROUPS}", {"member": [(ldap3.MODIFY_ADD, [dn])]}), admin.result
    account = directory.authenticate(name, password)
    assert account is not None
    assert (account.role, account.hospitals, account.network) == ("doctor", ("northgate",), True)


@pytest.mark.parametrize("name", ["*", "dr.*", "*north", ")(uid=*", "*)(objectClass=*", "dr.north)(uid=*",
                                  "dr.north)(|(uid=*", "\\2a", "dr.north\x00", "(uid=dr.north)"])
def test_filter_metacharacters_in_names_match_nobody(directory: Directory, ldap_env: LdapEnv, name: str) -> None:
    assert directory.authenticate(name, ldap_env.demo_password) is None


def test_server_refuses_a_password_without_tls(settings: Settings, ldap_env: LdapEnv) -> None:
    conn = connect(settings, ldap_env, f"uid=dr.north,{PEOPLE}", ldap_env.demo_password, tls=False)
    assert not conn.bind()
    assert conn.result["result"] == 13, conn.result  # confidentialityRequired: even the right password
    conn.unbind()


def test_nobody_anonymous_reads_the_directory(settings: Settings, ldap_env: LdapEnv) -> None:
    conn = connect(settings, ldap_env, "", "")  # over TLS, no bind
    conn.search(SUFFIX, "(objectClass=*)", attributes=["uid"])
    assert not conn.response and conn.result["result"] == 53, conn.result  # unwillingToPerform: authc required
    conn.unbind()
    user = connect(settings, ldap_env, f"uid=dr.north,{PEOPLE}", ldap_env.demo_password)
    assert user.bind()
    user.search(PEOPLE, "(uid=*)", attributes=["uid"])
    assert not [e for e in user.response or [] if e.get("type") == "searchResEntry"]  # users may bind, not read
    user.unbind()


def test_service_account_reads_no_password_hashes(settings: Settings, ldap_env: LdapEnv) -> None:
    conn = connect(settings, ldap_env, "cn=xraylab-reader,ou=services," + SUFFIX, ldap_env.bind_password)
    assert conn.bind()
    conn.search(PEOPLE, "(uid=dr.north)", attributes=["userPassword", "uid"])
    entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
    assert len(entries) == 1 and not entries[0]["attributes"].get("userPassword")
    assert not conn.modify(f"uid=dr.north,{PEOPLE}", {"sn": [(ldap3.MODIFY_REPLACE, ["x"])]})  # read-only
    conn.unbind()


def test_wrong_ca_file_is_unavailable(settings: Settings, ldap_env: LdapEnv) -> None:
    # A valid CA bundle that does not hold the directory's own CA.
    config = make_config(settings, ldap_env, ca_file="/etc/ssl/certs/ca-certificates.crt")
    with pytest.raises(DirectoryUnavailableError):
        Directory(config, ldap_env.bind_password).authenticate("dr.north", ldap_env.demo_password)


def test_wrong_service_password_is_unavailable(settings: Settings, ldap_env: LdapEnv) -> None:
    with pytest.raises(DirectoryUnavailableError):
        Directory(make_config(settings, ldap_env), "not-the-password").authenticate("dr.north", "x")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_not_listening_is_unavailable_at_once(settings: Settings, ldap_env: LdapEnv) -> None:
    config = make_config(settings, ldap_env, url=f"ldap://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailableError):
        Directory(config, ldap_env.bind_password).authenticate("dr.north", ldap_env.demo_password)
    assert time.monotonic() - started < 2


def test_server_that_never_answers_times_out(settings: Settings, ldap_env: LdapEnv) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        config = make_config(settings, ldap_env, url=f"ldap://127.0.0.1:{silent.getsockname()[1]}", timeout_s=1)
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailableError):
            Directory(config, ldap_env.bind_password).authenticate("dr.north", ldap_env.demo_password)
        assert time.monotonic() - started < 5


def test_refusals_log_no_password(directory: Directory, ldap_env: LdapEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("dr.north", "dr.disabled", "no.such.user", "*"):
        directory.authenticate(name, ldap_env.demo_password + "-wrong")
    directory.authenticate("dr.disabled", ldap_env.demo_password)
    assert "refused" in caplog.text
    assert ldap_env.demo_password not in caplog.text and ldap_env.bind_password not in caplog.text
