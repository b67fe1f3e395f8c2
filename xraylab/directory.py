"""Directory sign-in: a hospital's LDAP directory (OpenLDAP, Active Directory) checks a doctor's password, and
the directory groups the account is in give its role and the hospitals it reads.

The settings file (TOML, ``DirectoryConfig.load``; a sample in ``cluster/local/directory.toml``)::

    url = "ldap://ldap.hospital.example:389"      # or ldaps://...:636
    start_tls = true                              # required with ldap://, refused with ldaps://
    ca_file = "/etc/xraylab/directory-ca.pem"     # relative: from the file's folder; always verified
    bind_dn = "cn=xraylab-reader,ou=services,dc=hospital,dc=example"
    user_base = "ou=people,dc=hospital,dc=example"
    user_filter = "(&(objectClass=inetOrgPerson)(uid={name}))"   # the default; AD: (sAMAccountName={name})
    group_base = "ou=groups,dc=hospital,dc=example"
    group_member_attribute = "member"             # the default: groupOfNames / AD groups
    disabled_filter = "(userAccountControl:1.2.840.113556.1.4.803:=2)"   # optional (AD's disabled flag)
    timeout_s = 5

    [[groups]]
    group = "cn=radiology-north,ou=groups,dc=hospital,dc=example"
    role = "doctor"
    hospitals = ["northgate"]
    network = false

The service account's password is never in the file: the caller passes it (``XRAYLAB_DIRECTORY_BIND_PASSWORD``).

A sign-in (``Directory.authenticate``), each step on a connection of its own, TLS always (StartTLS or
ldaps://, the server's certificate checked against ``ca_file`` and its name against the URL's host):

1. The service account finds the user's entry under ``user_base`` with ``user_filter`` (the name escaped with
   ``escape_filter_chars``, so ``*`` or ``)(uid=*`` are matched literally) and, where ``disabled_filter`` is
   set, not matching it. Exactly one entry, or the sign-in is refused.
2. A fresh connection binds as that entry with the password. The server refuses a disabled account itself
   (OpenLDAP's ppolicy ``pwdAccountLockedTime``, AD's disabled flag). An empty password is refused before any
   of this: an LDAP simple bind with a DN and no password is an "unauthenticated bind", which many servers
   answer with success.
3. The service account lists the groups under ``group_base`` whose ``group_member_attribute`` holds the
   user's DN (direct membership; nested groups are not followed) and keeps those in ``[[groups]]``.

Mapping, when the user is in several mapped groups: the hospitals are the union of theirs, ``network`` is
granted if any group grants it, and the role is ``doctor`` if any of them is a doctor group, else ``admin``.
So an account in both a doctor and an admin group signs in as a doctor (the lesser role: an admin runs the
system, a doctor records verdicts, and one account never does both); the directory keeps separate accounts
for the two. A user in no mapped group is refused.

Every refusal (unknown name, wrong password, disabled, no mapped group) is ``None``, alike, logged at debug
only and never with the password; an unknown name still costs a bind (as a DN that does not exist, with a
random password), so that the time taken does not tell which names exist. ``DirectoryUnavailableError``
means the directory could not answer (unreachable, timeout, TLS failure, the service account refused): the
caller says so and keeps local accounts working.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["DirectoryConfig", "GroupMapping", "DirectoryAccount", "Directory", "DirectoryConfigError",
           "DirectoryUnavailableError", "DEFAULT_USER_FILTER"]

log = logging.getLogger("xraylab.directory")

DEFAULT_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={name}))"
MAX_NAME_LENGTH = 256
# Result codes that mean the server could not do the work, not that it refused the credentials.
_SERVER_TROUBLE = {3, 11, 51, 52, 80}  # timeLimitExceeded, adminLimitExceeded, busy, unavailable, other
_SUCCESS, _SIZE_LIMIT_EXCEEDED = 0, 4


class DirectoryConfigError(ValueError):
    """The directory settings cannot be used: a bad file, a value refused, no service password."""


class DirectoryUnavailableError(RuntimeError):
    """The directory did not answer: unreachable, timed out, TLS failed, or the service account was refused."""


def _normal_dn(dn: str) -> str:
    """A DN compared case-insensitively, spaces around its separators ignored (ValueError if it is none)."""
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    try:
        parts = parse_dn(dn, strip=True)
    except LDAPInvalidDnError as exc:
        raise ValueError(f"{dn!r} is not a DN: {exc}") from None
    if not parts:
        raise ValueError("empty DN")
    return "".join(f"{attr.lower()}={value.lower()}{sep}" for attr, value, sep in parts)


def _check_dn(value: str) -> str:
    _normal_dn(value)
    return value


def _check_filter(value: str, what: str) -> str:
    """``value`` if it is one parenthesised filter (parentheses in values are escaped: ``\\28``, ``\\29``)."""
    depth, closed_at = 0, -1
    for index, char in enumerate(value):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth <= 0:
            closed_at = index
            break
    if not value.startswith("(") or closed_at != len(value) - 1 or depth != 0:
        raise ValueError(f"{what} {value!r} is not one parenthesised LDAP filter")
    return value


class GroupMapping(BaseModel):
    """One directory group and what its members get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(description="the group's DN")
    role: Literal["doctor", "admin"]
    hospitals: tuple[str, ...] = ()
    network: bool = Field(False, description="every hospital's patients")

    @field_validator("group")
    @classmethod
    def _group_dn(cls, value: str) -> str:
        return _check_dn(value)

    @field_validator("hospitals")
    @classmethod
    def _hospital_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name.strip() or len(name) > 128 or any(ord(c) < 32 for c in name):
                raise ValueError(f"hospital {name!r}: 1-128 characters, no control characters")
        return value


class DirectoryConfig(BaseModel):
    """Where the directory is, how to find a user and their groups, and what the groups give."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="ldap://host[:port] with start_tls, or ldaps://host[:port]")
    start_tls: bool = False
    ca_file: Path = Field(description="the CA certificate(s) the server's certificate must chain to")
    bind_dn: str = Field(description="the read-only service account that finds users and groups")
    user_base: str
    user_filter: str = DEFAULT_USER_FILTER
    group_base: str
    group_member_attribute: str = Field("member", pattern=r"^([A-Za-z][A-Za-z0-9-]*|[0-9]+(\.[0-9]+)+)$")
    disabled_filter: str | None = None
    timeout_s: int = Field(5, ge=1, le=60, description="seconds for a connection, and for each answer (ldap3: whole)")
    groups: tuple[GroupMapping, ...] = Field(min_length=1)

    @field_validator("bind_dn", "user_base", "group_base")
    @classmethod
    def _dns(cls, value: str) -> str:
        return _check_dn(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(f"url {value!r}: ldap://host[:port] or ldaps://host[:port]")
        if parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"url {value!r}: only scheme, host and port (the bases and filters have fields)")
        _ = parts.port  # ValueError for a bad port
        return value

    @field_validator("user_filter")
    @classmethod
    def _user_filter(cls, value: str) -> str:
        if "{name}" not in value:
            raise ValueError(f"user_filter {value!r} must hold {{name}}, where the escaped user name goes")
        return _check_filter(value, "user_filter")

    @field_validator("disabled_filter")
    @classmethod
    def _disabled_filter(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else _check_filter(value.strip(), "disabled_filter")

    @model_validator(mode="after")
    def _tls_and_groups(self) -> DirectoryConfig:
        if self.scheme == "ldap" and not self.start_tls:
            raise ValueError("url is ldap:// without start_tls = true: passwords would cross the network in "
                             "clear; set start_tls = true or use ldaps://")
        if self.scheme == "ldaps" and self.start_tls:
            raise ValueError("start_tls = true with ldaps://: the connection is TLS already; set start_tls = false")
        seen: set[str] = set()
        for mapping in self.groups:
            dn = _normal_dn(mapping.group)
            if dn in seen:
                raise ValueError(f"group {mapping.group!r} is mapped twice")
            seen.add(dn)
        return self

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (636 if self.scheme == "ldaps" else 389)

    @classmethod
    def load(cls, path: str | Path) -> DirectoryConfig:
        """Read a settings file; a relative ``ca_file`` is taken from the file's folder."""
        path = Path(path)
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise DirectoryConfigError(f"{path}: {exc}") from None
        if isinstance(data.get("ca_file"), str) and not Path(data["ca_file"]).is_absolute():
            data["ca_file"] = str((path.resolve().parent / data["ca_file"]).resolve())
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
            raise DirectoryConfigError(f"{path}: {problems}") from None


@dataclass(frozen=True)
class DirectoryAccount:
    """A directory user who signed in: who, and what their groups give them."""

    name: str
    dn: str
    role: str
    hospitals: tuple[str, ...]
    network: bool
    display_name: str | None = None


class Directory:
    """Signs users in against one directory. Holds no connection: each sign-in opens its own (thread-safe)."""

    def __init__(self, config: DirectoryConfig, bind_password: str) -> None:
        if not bind_password:
            # A simple bind with a DN and no password is an unauthenticated (anonymous) bind.
            raise DirectoryConfigError("no password for the directory's service account: set "
                                       "XRAYLAB_DIRECTORY_BIND_PASSWORD")
        if not config.ca_file.is_file():
            raise DirectoryConfigError(f"ca_file {config.ca_file} does not exist")
        self.config = config
        self._bind_password = bind_password
        self._mappings = {_normal_dn(m.group): m for m in config.groups}

    def __repr__(self) -> str:
        return f"Directory({self.config.url!r}, bind_dn={self.config.bind_dn!r})"

    def authenticate(self, name: str, password: str) -> DirectoryAccount | None:
        """The account if ``password`` is ``name``'s and a mapped group gives it a role; ``None`` for any refusal.

        Raises ``DirectoryUnavailableError`` when the directory cannot be asked."""
        if not password or not name or len(name) > MAX_NAME_LENGTH:
            log.debug("directory sign-in refused before asking: empty password or name, or name too long")
            return None
        service = self._connect(self.config.bind_dn, self._bind_password, service=True)
        try:
            entry = self._find_user(service, name)
        finally:
            _close(service)
        if entry is None:
            # The same round trips as a wrong password, so that the time does not tell which names exist.
            self._bind_as(f"cn=xraylab-no-such-user-{secrets.token_hex(8)},{self.config.user_base}",
                          secrets.token_urlsafe(24))
            log.debug("directory sign-in refused for %r: no single (enabled) entry matches", name)
            return None
        dn, display_name = entry
        if not self._bind_as(dn, password):
            log.debug("directory sign-in refused for %r: the directory refused the bind", name)
            return None
        service = self._connect(self.config.bind_dn, self._bind_password, service=True)
        try:
            groups = self._groups_of(service, dn)
        finally:
            _close(service)
        return self._account(name, dn, display_name, groups)

    # --- LDAP ---

    def _connect(self, dn: str, password: str, *, service: bool) -> Any:
        """A connection over TLS, bound as ``dn``; for a user (``service=False``) a refused bind gives ``None``."""
        import ldap3
        from ldap3.core.exceptions import LDAPException

        config = self.config
        conn = None
        try:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(config.ca_file), sni=config.host)
            server = ldap3.Server(config.host, port=config.port, use_ssl=config.scheme == "ldaps", tls=tls,
                                  get_info=ldap3.NONE, connect_timeout=config.timeout_s)
            conn = ldap3.Connection(server, user=dn, password=password, authentication=ldap3.SIMPLE,
                                    client_strategy=ldap3.SYNC, read_only=True, auto_referrals=False,
                                    raise_exceptions=False, receive_timeout=config.timeout_s)
            conn.open(read_server_info=False)
            if config.start_tls and not conn.start_tls(read_server_info=False):
                raise DirectoryUnavailableError(f"StartTLS with {config.url} did not start")
            if not (conn.tls_started or server.ssl):  # never a password without TLS
                raise DirectoryUnavailableError(f"no TLS with {config.url}")
            bound = conn.bind(read_server_info=False)
        except (LDAPException, OSError) as exc:  # OSError: a socket's or TLS's error that ldap3 let through
            _close(conn)
            raise DirectoryUnavailableError(f"{config.url}: {type(exc).__name__}: {exc}") from exc
        except DirectoryUnavailableError:
            _close(conn)
            raise
        if bound:
            return conn
        code = conn.result.get("result") if conn.result else None
        _close(conn)
        if service or code in _SERVER_TROUBLE:
            raise DirectoryUnavailableError(f"{config.url} refused the bind as {dn} (result {code})")
        return None

    def _bind_as(self, dn: str, password: str) -> bool:
        conn = self._connect(dn, password, service=False)
        if conn is None:
            return False
        _close(conn)
        return True

    def _search(self, conn: Any, base: str, search_filter: str, attributes: Any, size_limit: int = 0
                ) -> list[dict[str, Any]]:
        """The entries found (as many as the server gives: a size limit it hits is no error)."""
        from ldap3.core.exceptions import LDAPException

        try:
            conn.search(base, search_filter, attributes=attributes, size_limit=size_limit)
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailableError(f"{self.config.url}: search failed: {type(exc).__name__}") from exc
        code = conn.result.get("result") if conn.result else None
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise DirectoryUnavailableError(f"{self.config.url}: search under {base} failed (result {code})")
        return [r for r in conn.response or [] if r.get("type") == "searchResEntry"]

    def _find_user(self, conn: Any, name: str) -> tuple[str, str | None] | None:
        from ldap3.utils.conv import escape_filter_chars

        user_filter = self.config.user_filter.replace("{name}", escape_filter_chars(name))
        if self.config.disabled_filter:
            user_filter = f"(&{user_filter}(!{self.config.disabled_filter}))"
        entries = self._search(conn, self.config.user_base, user_filter, ["displayName", "cn"], size_limit=2)
        if len(entries) != 1:
            return None
        attributes = entries[0].get("attributes") or {}
        display = attributes.get("displayName") or attributes.get("cn") or None
        if isinstance(display, list):
            display = display[0] if display else None
        return entries[0]["dn"], (str(display) if display else None)

    def _groups_of(self, conn: Any, dn: str) -> list[str]:
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        group_filter = f"({self.config.group_member_attribute}={escape_filter_chars(dn)})"
        return [e["dn"] for e in self._search(conn, self.config.group_base, group_filter, ldap3.NO_ATTRIBUTES)]

    # --- mapping ---

    def _account(self, name: str, dn: str, display_name: str | None, groups: list[str]) -> DirectoryAccount | None:
        mapped = []
        for group in groups:
            try:
                mapping = self._mappings.get(_normal_dn(group))
            except ValueError:
                continue
            if mapping is not None:
                mapped.append(mapping)
        if not mapped:
            log.debug("directory sign-in refused for %r: in no mapped group", name)
            return None
        roles = {m.role for m in mapped}
        role = "doctor" if "doctor" in roles else "admin"
        if len(roles) > 1:
            log.warning("directory account %r is in doctor and admin groups: signed in as a doctor", name)
        hospitals = tuple(sorted({h for m in mapped for h in m.hospitals}))
        return DirectoryAccount(name=name, dn=dn, role=role, hospitals=hospitals,
                                network=any(m.network for m in mapped), display_name=display_name)


def _close(conn: Any) -> None:
    from ldap3.core.exceptions import LDAPException

    if conn is not None:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()
