"""Which patients a reader may see: the studies of some hospitals, or of every hospital with the network-wide
reading grant. Every read of patient data takes one (``xraylab.db.review``, the review app, its pictures, the
Monitor tab), so that a study outside it answers exactly as one that does not exist.

A study with no hospital is seen only with the network grant."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false

from xraylab.db.models import Study

__all__ = ["ReadScope", "NO_PATIENTS", "EVERY_HOSPITAL"]


@dataclass(frozen=True)
class ReadScope:
    hospitals: frozenset[str] = frozenset()
    network: bool = False

    @classmethod
    def of(cls, hospitals: Iterable[str] = (), network: bool = False) -> ReadScope:
        return cls(frozenset(h for h in hospitals if h), bool(network))

    @property
    def empty(self) -> bool:
        return not self.network and not self.hospitals

    def allows(self, hospital: str | None) -> bool:
        return self.network or (hospital is not None and hospital in self.hospitals)

    def where(self, query: Any, column: Any = Study.hospital) -> Any:
        """``query`` limited to the studies in scope (``column``: the hospital column it filters on)."""
        if self.network:
            return query
        if not self.hospitals:
            return query.where(false())
        return query.where(column.in_(sorted(self.hospitals)))

    def describe(self) -> str:
        if self.network:
            return "every hospital (network-wide reading grant)"
        return ", ".join(sorted(self.hospitals)) if self.hospitals else "no hospital: reads no patient"


NO_PATIENTS = ReadScope()
EVERY_HOSPITAL = ReadScope(network=True)  # the operator's own tools (CLI with database credentials), never a login
