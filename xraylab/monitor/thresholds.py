"""The monitor's limits: a JSON file in the reference model monitor's shape, with an explicit direction.

Each entry names a metric and gives a ``type`` (``drift``, ``performance`` or ``health``), a ``soft`` limit
(crossing it is a *warning*) and a ``hard`` one (*critical*)::

    {"image":    {"type": "drift",       "soft": 0.42, "hard": 0.55},
     "accuracy": {"type": "performance", "soft": 0.8,  "hard": 0.7},
     "error_rate": {"type": "health", "soft": 0.01, "hard": 0.05, "direction": "above", "breaches": 2}}

The reference file does not say which way a limit points (one of its own examples inverts soft and hard), so
``direction`` says it: ``above`` (higher is worse; the default for drift and health) or ``below`` (lower is
worse; the default for performance). A limit on the wrong side of the other (a soft limit beyond the hard
one) is an error, not a guess. ``breaches`` is how many consecutive runs must cross a limit before an alert
fires (default 1). The defaults ship as ``default_thresholds.json`` beside this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Limit", "Thresholds", "ThresholdsError", "Status", "METRICS", "SEVERITY", "ESTIMATED_PREFIX",
           "DEFAULT_THRESHOLDS_FILE", "default_thresholds", "worst"]

Status = Literal["ok", "warning", "critical"]
Kind = Literal["drift", "performance", "health"]
Direction = Literal["above", "below"]

# Every metric the monitor computes, with its kind; a thresholds file may only name these.
METRICS: dict[str, Kind] = {
    "image": "drift", "prediction": "drift",
    "accuracy": "performance", "precision": "performance", "recall": "performance",
    "specificity": "performance", "f1_score": "performance", "auc": "performance",
    "request_rate": "health", "error_rate": "health", "latency_p50_ms": "health", "latency_p99_ms": "health",
    "consumer_lag": "health", "dead_letters_per_min": "health", "replicas_alive": "health",
}
_UNIT_INTERVAL = {"drift", "performance"}
DEFAULT_THRESHOLDS_FILE = Path(__file__).with_name("default_thresholds.json")
SEVERITY: dict[str, int] = {"ok": 0, "warning": 1, "critical": 2}
ESTIMATED_PREFIX = "estimated_"  # an estimated figure's name: estimated_<performance metric>


class ThresholdsError(ValueError):
    """A thresholds file that cannot be used; the message says which entry and why."""


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Kind
    soft: float
    hard: float
    direction: Direction | None = None
    breaches: int = Field(1, ge=1, le=100)

    @model_validator(mode="after")
    def _check(self) -> Limit:
        if self.direction is None:
            object.__setattr__(self, "direction", "below" if self.type == "performance" else "above")
        for name in ("soft", "hard"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
            if self.type in _UNIT_INTERVAL and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} is outside [0, 1], where {self.type} scores lie")
        if self.direction == "above" and self.soft > self.hard:
            raise ValueError(f"soft {self.soft} is above hard {self.hard}, but higher is worse (direction 'above')")
        if self.direction == "below" and self.soft < self.hard:
            raise ValueError(f"soft {self.soft} is below hard {self.hard}, but lower is worse (direction 'below')")
        return self

    def status(self, value: float | None) -> Status:
        """``critical`` past the hard limit, ``warning`` past the soft one, else ``ok`` (also for no value)."""
        if value is None or not math.isfinite(value):
            return "ok"
        if self.direction == "above":
            return "critical" if value > self.hard else "warning" if value > self.soft else "ok"
        return "critical" if value < self.hard else "warning" if value < self.soft else "ok"


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True)

    limits: dict[str, Limit]

    @classmethod
    def parse(cls, data: Any, *, source: str = "thresholds") -> Thresholds:
        """Validate a decoded JSON object; every problem is named with its entry."""
        if not isinstance(data, dict) or not data:
            raise ThresholdsError(f"{source}: expected a JSON object of metric name -> limit, "
                                  f"got {type(data).__name__}")
        limits: dict[str, Limit] = {}
        for name, entry in data.items():
            if name not in METRICS:
                raise ThresholdsError(f"{source}: unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
            if not isinstance(entry, dict):
                raise ThresholdsError(f"{source}: {name}: expected an object with type, soft and hard")
            try:
                limit = Limit.model_validate(entry)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'limit'}: {e['msg']}" for e in exc.errors())
                raise ThresholdsError(f"{source}: {name}: {problems}") from None
            if limit.type != METRICS[name]:
                raise ThresholdsError(f"{source}: {name}: type must be {METRICS[name]!r}, not {limit.type!r}")
            limits[name] = limit
        return cls(limits=limits)

    @classmethod
    def from_json(cls, text: str, *, source: str = "thresholds") -> Thresholds:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ThresholdsError(f"{source}: not JSON: {exc}") from None
        return cls.parse(data, source=source)

    @classmethod
    def load(cls, path: Path) -> Thresholds:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ThresholdsError(f"{path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ThresholdsError(f"{path}: not a UTF-8 text file") from None
        return cls.from_json(text, source=str(path))

    def to_json(self) -> str:
        return json.dumps({name: limit.model_dump(exclude_none=True) for name, limit in self.limits.items()},
                          indent=2)

    def status(self, metric: str, value: float | None) -> Status:
        limit = self.limits.get(metric)
        return limit.status(value) if limit else "ok"


def default_thresholds() -> Thresholds:
    return Thresholds.load(DEFAULT_THRESHOLDS_FILE)


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=SEVERITY.__getitem__, default="ok")
