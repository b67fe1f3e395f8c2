"""The directory settings (xraylab/directory.py): what a settings file may say, and the group mapping; no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xraylab.directory import (
    DEFAULT_USER_FILTER,
    Directory,
    DirectoryConfig,
    DirectoryConfigError,
    DirectoryUnavailableError,
)

SAMPLE = Path(__file__).resolve().parents[3] / "cluster" / "local" / "directory.toml"
GROUPS = "ou=groups,dc=xraylab,dc=test"


def config(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "url": "ldap://ldap.example:389", "start_tls": True, "ca_file": "/etc/ssl/certs/ca-certificates.crt",
        "bind_dn": "cn=reader,dc=example", "user_base": "ou=people,dc=example", "group_base": "ou=groups,dc=example",
        "groups": [{"group": "cn=doctors,ou=groups,dc=example", "role": "doctor", "hospitals": ["northgate"]}],
    }
    values.update(changes)
    return values


def test_sample_file_maps_the_seeded_groups() -> None:
    sample = DirectoryConfig.load(SAMPLE)
    assert sample.url == "ldap://127.0.0.1:13389" and sample.start_tls
    assert sample.ca_file == SAMPLE.parent.parent.parent / ".xraylab" / "slapd" / "tls" / "ca.crt"  # from its folder
    assert sample.user_filter == DEFAULT_USER_FILTER and sample.group_member_attribute == "member"
    by_group = {m.group: m for m in sample.groups}
    assert by_group[f"cn=radiology-north,{GROUPS}"].hospitals == ("northgate",)
    assert by_group[f"cn=radiology-south,{GROUPS}"].hospitals == ("st-mary", "riverside")
    assert by_group[f"cn=radiology-network,{GROUPS}"].network
    assert by_group[f"cn=xraylab-admins,{GROUPS}"].role == "admin"


def test_sample_hospitals_are_the_demo_uploaders() -> None:
    from ingest.uploader import HOSPITALS  # the tests may read every layer

    hospitals = {h for m in DirectoryConfig.load(SAMPLE).groups for h in m.hospitals}
    assert hospitals == set(HOSPITALS)


def test_ldap_url_without_start_tls_is_refused() -> None:
    with pytest.raises(ValueError, match="in clear"):
        DirectoryConfig.model_validate(config(start_tls=False))
    with pytest.raises(ValueError, match="in clear"):
        DirectoryConfig.model_validate({k: v for k, v in config().items() if k != "start_tls"})


def test_ldaps_url_needs_no_start_tls() -> None:
    assert DirectoryConfig.model_validate(config(url="ldaps://ldap.example", start_tls=False)).port == 636
    with pytest.raises(ValueError, match="TLS already"):
        DirectoryConfig.model_validate(config(url="ldaps://ldap.example", start_tls=True))


@pytest.mark.parametrize("url", ["http://ldap.example", "ldap://", "ldap://ldap.example/dc=example",
                                 "ldap://ldap.example:99999", "ldap://user:pw@ldap.example"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        DirectoryConfig.model_validate(config(url=url))


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        DirectoryConfig.model_validate(config(groups=[{"group": "cn=g,dc=example", "role": "superuser"}]))


@pytest.mark.parametrize("changes", [
    {"user_filter": "(uid=alice)"},  # no {name}
    {"user_filter": "(uid={name}"},  # unbalanced
    {"user_filter": "uid={name}"},  # not parenthesised
    {"user_filter": "(uid={name})(objectClass=*)"},  # two filters
    {"disabled_filter": "(userAccountControl=2))("},
    {"bind_dn": "not a dn"},
    {"group_member_attribute": "member)(uid=*"},
    {"groups": []},  # nobody could get a role
    {"groups": [{"group": "cn=g,dc=example", "role": "doctor"}, {"group": "CN=G, DC=example", "role": "admin"}]},
    {"timeout_s": 0},
    {"password": "in the file"},  # unknown keys (and so a bind password in the file) are refused
])
def test_bad_values_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DirectoryConfig.model_validate(config(**changes))


def test_load_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text(SAMPLE.read_text().replace('role = "admin"', 'role = "root"'))
    with pytest.raises(DirectoryConfigError, match=r"directory\.toml: groups\.3\.role"):
        DirectoryConfig.load(path)
    path.write_text("url = [")
    with pytest.raises(DirectoryConfigError, match="directory.toml"):
        DirectoryConfig.load(path)
    with pytest.raises(DirectoryConfigError, match="missing.toml"):
        DirectoryConfig.load(tmp_path / "missing.toml")


def test_directory_needs_a_service_password_and_a_ca_file(tmp_path: Path) -> None:
    cfg = DirectoryConfig.model_validate(config())
    with pytest.raises(DirectoryConfigError, match="XRAYLAB_DIRECTORY_BIND_PASSWORD"):
        Directory(cfg, "")  # an empty password would be an unauthenticated bind
    with pytest.raises(DirectoryConfigError, match="ca_file"):
        Directory(DirectoryConfig.model_validate(config(ca_file=str(tmp_path / "none.pem"))), "pw")


def test_empty_password_is_refused_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = Directory(DirectoryConfig.model_validate(config()), "service-pw")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the directory was contacted")

    monkeypatch.setattr(directory, "_connect", no_network)
    assert directory.authenticate("dr.north", "") is None
    assert directory.authenticate("", "a password") is None
    assert directory.authenticate("x" * 1000, "a password") is None


def test_groups_map_to_one_role_and_the_union_of_hospitals() -> None:
    groups = [
        {"group": "cn=north,dc=example", "role": "doctor", "hospitals": ["northgate"]},
        {"group": "cn=south,dc=example", "role": "doctor", "hospitals": ["st-mary", "northgate"]},
        {"group": "cn=network,dc=example", "role": "doctor", "network": True},
        {"group": "cn=admins,dc=example", "role": "admin"},
    ]
    directory = Directory(DirectoryConfig.model_validate(config(groups=groups)), "service-pw")
    account = directory._account("a", "uid=a,dc=example", None, ["CN=North, DC=example", "cn=south,dc=example"])
    assert account is not None
    assert (account.role, account.hospitals, account.network) == ("doctor", ("northgate", "st-mary"), False)
    admin = directory._account("b", "uid=b,dc=example", "B", ["cn=admins,dc=example", "cn=other,dc=example"])
    assert admin is not None and (admin.role, admin.hospitals, admin.network) == ("admin", (), False)
    both = directory._account("c", "uid=c,dc=example", None, ["cn=admins,dc=example", "cn=network,dc=example"])
    assert both is not None and (both.role, both.network) == ("doctor", True)  # doctor and admin: a doctor
    assert directory._account("d", "uid=d,dc=example", None, ["cn=other,dc=example", "not a dn"]) is None


def test_ca_file_gone_after_start_is_unavailable(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read before a sign-in")
    directory = Directory(DirectoryConfig.model_validate(config(ca_file=str(ca))), "service-pw")
    ca.unlink()
    with pytest.raises(DirectoryUnavailableError):
        directory.authenticate("dr.north", "a password")
