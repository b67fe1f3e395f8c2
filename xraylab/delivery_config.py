"""Where each hospital's results go: its PACS (DICOM C-STORE) and its RIS (HL7 v2 over MLLP).

The settings file (TOML, ``DeliveryConfig.load``; the local stack's is written by ``cluster/local/ris.sh``)::

    [pacs.main]                        # a PACS, by a name of your choice
    ae_title = "PACS1"                 # its AE title (the called AE)
    host = "pacs.hospital.example"
    port = 104
    # calling_ae_title = "XRAYLAB_RES" # default: XRAYLAB_DELIVERY_AET; register it on the PACS, from this host

    [ris.north]                        # a RIS: its MLLP listener
    host = "ris.hospital.example"
    port = 2575
    receiving_application = "RIS"      # MSH-5 and MSH-6
    receiving_facility = "NORTHGATE"
    # sending_application = "XRAYLAB"  # MSH-3 and MSH-4 (these defaults)
    # sending_facility = "XRAYLAB"

    [hospitals.northgate]              # a hospital by its name in the studies table
    pacs = "main"                      # results of its studies that came from the PACS are stored back there
    ris = "north"                      # an ORU^R01 per scored study

    [default]                          # studies of a hospital not listed above, and studies with no hospital
    pacs = "main"

A hospital with neither (and no ``[default]``) gets no delivery, and that is no error. Only studies that came
from the PACS (``XRAYLAB_ORTHANC_ENDPOINT_ID``) are stored back into a PACS; every scored study goes to the RIS.
A destination's id is ``pacs/<name>`` or ``ris/<name>``: the outbox names it so, and the deliverer looks its
address up when it sends, so that queued messages follow an address corrected in the file once the deliverer is
started again (``xraylab outbox stop`` / ``start``, or the pipeline's restart).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["PacsDestination", "RisDestination", "DeliveryConfig", "DeliveryConfigError", "Destination"]


class DeliveryConfigError(ValueError):
    """The delivery settings file is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class PacsDestination:
    name: str
    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "XRAYLAB_RES"
    timeout_s: float = 30.0

    @property
    def id(self) -> str:
        return f"pacs/{self.name}"


@dataclass(frozen=True)
class RisDestination:
    name: str
    host: str
    port: int
    receiving_application: str = "RIS"
    receiving_facility: str = ""
    sending_application: str = "XRAYLAB"
    sending_facility: str = "XRAYLAB"
    timeout_s: float = 10.0

    @property
    def id(self) -> str:
        return f"ris/{self.name}"


Destination = PacsDestination | RisDestination


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None, max_len: int = 64) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise DeliveryConfigError(f"{where}: {key} must be a text of 1 to {max_len} characters")
    return value.strip()


def _port(table: dict[str, Any], where: str) -> int:
    value = table.get("port")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise DeliveryConfigError(f"{where}: port must be a number from 1 to 65535")
    return value


def _name(name: str, where: str) -> None:
    if not 0 < len(name) <= 64 or "/" in name or not name.isprintable():
        raise DeliveryConfigError(f"{where}: a destination's name has 1 to 64 printable characters, no /")


def _timeout(table: dict[str, Any], where: str, default: float) -> float:
    value = table.get("timeout_s", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 600:
        raise DeliveryConfigError(f"{where}: timeout_s must be a number of seconds from 0 to 600")
    return float(value)


def _ae_title(value: str, where: str) -> str:
    if len(value) > 16 or "\\" in value or not value.isprintable():
        raise DeliveryConfigError(f"{where}: an AE title has at most 16 printable characters, no backslash")
    return value


def _hl7_field(value: str, where: str) -> str:
    if any(c in value for c in "|^~\\&\r\n"):
        raise DeliveryConfigError(f"{where}: HL7 names cannot hold | ^ ~ \\ & or line breaks")
    return value


@dataclass(frozen=True)
class DeliveryConfig:
    pacs: dict[str, PacsDestination] = field(default_factory=dict)
    ris: dict[str, RisDestination] = field(default_factory=dict)
    hospitals: dict[str, dict[str, str]] = field(default_factory=dict)  # hospital -> {"pacs": name, "ris": name}
    default: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the file's contents, as read

    @classmethod
    def load(cls, path: Path | None, *, calling_ae_title: str = "XRAYLAB_RES") -> DeliveryConfig:
        """The file's settings; no file configured: no delivery at all."""
        if path is None:
            return cls()
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeliveryConfigError(f"the delivery settings {path} cannot be read: {exc}") from exc
        return cls.loads(text, calling_ae_title=calling_ae_title, where=str(path))

    @classmethod
    def loads(cls, text: str, *, calling_ae_title: str = "XRAYLAB_RES", where: str = "delivery settings"
              ) -> DeliveryConfig:
        """The settings in ``text`` (the file's contents: the deliverer is handed them, so that it follows the
        file its starter read, on whichever node it runs)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DeliveryConfigError(f"the delivery settings {where} cannot be read: {exc}") from exc
        config = cls.from_dict(data, calling_ae_title=calling_ae_title, where=where)
        return replace(config, text=text)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, calling_ae_title: str = "XRAYLAB_RES",
                  where: str = "delivery settings") -> DeliveryConfig:
        unknown = set(data) - {"pacs", "ris", "hospitals", "default"}
        if unknown:
            raise DeliveryConfigError(f"{where}: unknown sections {sorted(unknown)}")
        pacs: dict[str, PacsDestination] = {}
        for name, table in _tables(data, "pacs", where).items():
            at = f"{where} [pacs.{name}]"
            _name(name, at)
            pacs[name] = PacsDestination(
                name=name, ae_title=_ae_title(_text(table, "ae_title", at), at),
                host=_text(table, "host", at, None, 253), port=_port(table, at),
                calling_ae_title=_ae_title(_text(table, "calling_ae_title", at, calling_ae_title), at),
                timeout_s=_timeout(table, at, 30.0))
        ris: dict[str, RisDestination] = {}
        for name, table in _tables(data, "ris", where).items():
            at = f"{where} [ris.{name}]"
            _name(name, at)
            ris[name] = RisDestination(
                name=name, host=_text(table, "host", at, None, 253), port=_port(table, at),
                receiving_application=_hl7_field(_text(table, "receiving_application", at, "RIS"), at),
                receiving_facility=_hl7_field(str(table.get("receiving_facility", "")).strip(), at),
                sending_application=_hl7_field(_text(table, "sending_application", at, "XRAYLAB"), at),
                sending_facility=_hl7_field(_text(table, "sending_facility", at, "XRAYLAB"), at),
                timeout_s=_timeout(table, at, 10.0))
        routes = {hospital: _route(table, f"{where} [hospitals.{hospital}]", pacs, ris)
                  for hospital, table in _tables(data, "hospitals", where).items()}
        default = _route(data.get("default") or {}, f"{where} [default]", pacs, ris)
        return cls(pacs=pacs, ris=ris, hospitals=routes, default=default)

    def destinations(self, hospital: str | None, *, from_pacs: bool) -> list[Destination]:
        """Where one study's result goes: its hospital's RIS, and its PACS when the study came from the PACS."""
        route = self.hospitals.get(hospital, self.default) if hospital else self.default
        out: list[Destination] = []
        if from_pacs and "pacs" in route:
            out.append(self.pacs[route["pacs"]])
        if "ris" in route:
            out.append(self.ris[route["ris"]])
        return out

    def destination(self, destination_id: str) -> Destination | None:
        """The destination an outbox row names (``pacs/<name>``, ``ris/<name>``), None when no longer configured."""
        kind, _, name = destination_id.partition("/")
        table: dict[str, Any] = {"pacs": self.pacs, "ris": self.ris}.get(kind, {})
        return table.get(name)

    @property
    def empty(self) -> bool:
        return not self.hospitals and not self.default


def _tables(data: dict[str, Any], key: str, where: str) -> dict[str, dict[str, Any]]:
    section = data.get(key) or {}
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise DeliveryConfigError(f"{where}: [{key}.<name>] sections expected")
    return section


def _route(table: Any, at: str, pacs: dict[str, PacsDestination], ris: dict[str, RisDestination]) -> dict[str, str]:
    if not isinstance(table, dict) or set(table) - {"pacs", "ris"} or \
            not all(isinstance(v, str) for v in table.values()):
        raise DeliveryConfigError(f"{at}: only pacs = \"<name>\" and ris = \"<name>\"")
    for kind, known in (("pacs", pacs), ("ris", ris)):
        if kind in table and table[kind] not in known:
            raise DeliveryConfigError(f"{at}: {kind} {table[kind]!r} is not a [{kind}.<name>] section")
    return {k: str(v) for k, v in table.items()}
