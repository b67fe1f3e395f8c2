"""The model registry: versioned models in a folder, each with its card.

Layout::

    <MODEL_DIR>/<version>/model.keras   the Keras 3 model
    <MODEL_DIR>/<version>/card.json     version, architecture, preprocessing spec, bands,
                                        training data (synthetic or not), metrics
    <MODEL_DIR>/PROMOTED                the version serving loads by default

Saving and loading go through this module only, for the bootstrap model and trained ones
alike. TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xraylab.imaging import PreprocessSpec

__all__ = ["ModelCard", "ModelNotFoundError", "publish", "list_cards", "promote", "promoted_version",
           "resolve_version", "load_model", "read_card"]

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SYNTHETIC_NOTICE = (
    "Trained on generated (synthetic) images, not real chest X-rays: "
    "scores are not clinically meaningful."
)


class ModelNotFoundError(LookupError):
    """No such model version in the registry (or no model at all)."""


@dataclass
class ModelCard:
    version: str
    architecture: str
    preprocess: dict[str, Any]
    bands: dict[str, float]
    trained_on: str = "synthetic"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    notes: str = ""
    # Platt scaling of the raw model output (xraylab.calibration); identity for uncalibrated models.
    calibration: dict[str, float] = field(default_factory=lambda: {"a": 1.0, "b": 0.0})

    @property
    def synthetic(self) -> bool:
        return self.trained_on == "synthetic"

    @property
    def notice(self) -> str:
        return SYNTHETIC_NOTICE if self.synthetic else ""

    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise ValueError(f"bad model version {version!r}: letters, digits, '.', '_' and '-' only")
    return version


def read_card(model_dir: Path, version: str) -> ModelCard:
    path = Path(model_dir) / _check_version(version) / "card.json"
    if not path.exists():
        raise ModelNotFoundError(f"model version {version!r} not found in {model_dir}")
    data = json.loads(path.read_text())
    known = {k: v for k, v in data.items() if k in ModelCard.__dataclass_fields__}
    return ModelCard(**known)


def list_cards(model_dir: Path) -> list[ModelCard]:
    root = Path(model_dir)
    if not root.exists():
        return []
    cards = [read_card(root, p.name) for p in root.iterdir() if (p / "card.json").exists()]
    return sorted(cards, key=lambda c: (c.created_at, c.version))


def promoted_version(model_dir: Path) -> str | None:
    path = Path(model_dir) / "PROMOTED"
    return path.read_text().strip() or None if path.exists() else None


def promote(model_dir: Path, version: str) -> ModelCard:
    card = read_card(model_dir, version)
    _atomic_write(Path(model_dir) / "PROMOTED", version + "\n")
    return card


def resolve_version(model_dir: Path, version: str = "") -> str:
    """``version`` if given, else the promoted one, else the newest."""
    if version:
        read_card(model_dir, version)
        return version
    promoted = promoted_version(model_dir)
    if promoted:
        return promoted
    cards = list_cards(model_dir)
    if not cards:
        raise ModelNotFoundError(f"no model in {model_dir}: run `xraylab train bootstrap` first")
    return cards[-1].version


def publish(model: Any, model_dir: Path, card: ModelCard, *, promote_it: bool = False,
            extra_files: dict[str, bytes] | None = None) -> Path:
    """Save ``model``, its card and any extra files (metrics, plots, reference statistics) as a new
    version (never overwrites one)."""
    target = Path(model_dir) / _check_version(card.version)
    if target.exists():
        raise FileExistsError(f"model version {card.version!r} already exists")
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{card.version}-", dir=model_dir))
    model.save(staging / "model.keras")
    (staging / "card.json").write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True))
    for name, data in (extra_files or {}).items():
        (staging / Path(name).name).write_bytes(data)
    os.replace(staging, target)
    if promote_it:
        promote(model_dir, card.version)
    return target


def load_model(model_dir: Path, version: str = "") -> tuple[Any, ModelCard]:
    """(Keras model, card) for ``version`` (default: promoted, else newest)."""
    import keras

    resolved = resolve_version(model_dir, version)
    card = read_card(model_dir, resolved)
    model = keras.models.load_model(Path(model_dir) / resolved / "model.keras", compile=False)
    return model, card


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
