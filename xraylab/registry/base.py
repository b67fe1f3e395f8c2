"""What every registry does: versions with their cards and files, a promoted pointer, publish and load.

A version is immutable once published: publishing never overwrites one, and a reader sees a version
whole or not at all. Loading reads the version's files from ``local_dir(version)`` (the folder itself,
or a node's cache of the S3 registry). TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from xraylab.registry.card import CARD_FILE, MODEL_FILE, ModelCard, ModelNotFoundError, check_version

__all__ = ["Registry"]

log = logging.getLogger("xraylab.registry")


class Registry(ABC):
    """A model registry. ``location`` names it for people (a folder, ``s3://bucket/prefix``)."""

    location: str

    @abstractmethod
    def versions(self) -> list[str]:
        """The published versions (complete ones only)."""

    @abstractmethod
    def read_card(self, version: str) -> ModelCard:
        """The card of ``version``; ``ModelNotFoundError`` when there is no such version."""

    @abstractmethod
    def promoted_version(self) -> str | None:
        """The version serving loads by default, if one was promoted."""

    @abstractmethod
    def _write_promoted(self, version: str) -> None:
        """Point PROMOTED at ``version`` in one write a reader sees whole."""

    @abstractmethod
    def publish_dir(self, source: Path, version: str) -> None:
        """Publish the files of ``source`` (a folder holding ``card.json`` and ``model.keras``) as
        ``version``; ``FileExistsError`` when it exists. Readers never see it half there."""

    @abstractmethod
    def local_dir(self, version: str) -> Path:
        """A local folder with the files of ``version`` (``ModelNotFoundError`` when there is none)."""

    # -- built on the above -----------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.location

    def list_cards(self) -> list[ModelCard]:
        """The cards of the versions, oldest first; a version whose card or manifest cannot be read is left
        out with a warning, so that one damaged version does not hide the others."""
        cards = []
        for version in self.versions():
            try:
                cards.append(self.read_card(version))
            except (ModelNotFoundError, ValueError) as exc:
                log.warning("model version %s left out: %s", version, exc)
        return sorted(cards, key=lambda c: (c.created_at, c.version))

    def promote(self, version: str) -> ModelCard:
        card = self.read_card(check_version(version))
        self._write_promoted(version)
        return card

    def resolve_version(self, version: str = "") -> str:
        """``version`` if given (and there), else the promoted one, else the newest."""
        if version:
            self.read_card(version)
            return version
        promoted = self.promoted_version()
        if promoted:
            return promoted
        cards = self.list_cards()
        if not cards:
            raise ModelNotFoundError(f"no model in {self.location}: run `xraylab train bootstrap` first")
        return cards[-1].version

    def publish(self, model: Any, card: ModelCard, *, promote_it: bool = False,
                extra_files: dict[str, bytes] | None = None) -> str:
        """Save ``model``, its card and any extra files (metrics, plots, reference statistics) as a new
        version; the version's location."""
        check_version(card.version)
        staging = Path(tempfile.mkdtemp(prefix=f"xraylab-publish-{card.version}-"))
        try:
            model.save(staging / MODEL_FILE)
            (staging / CARD_FILE).write_text(card.to_json())
            for name, data in (extra_files or {}).items():
                (staging / Path(name).name).write_bytes(data)
            self.publish_dir(staging, card.version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if promote_it:
            self.promote(card.version)
        return f"{self.location.rstrip('/')}/{card.version}"

    def load_model(self, version: str = "") -> tuple[Any, ModelCard]:
        """(Keras model, card) for ``version`` (default: promoted, else newest)."""
        import keras

        resolved = self.resolve_version(version)
        card = self.read_card(resolved)
        model = keras.models.load_model(self.local_dir(resolved) / MODEL_FILE, compile=False)
        return model, card

    def import_dir(self, source: Path) -> ModelCard:
        """Publish a version folder from elsewhere (another registry's ``<version>/``, a colleague's copy)
        under the version its card names; ``ValueError`` when it is not one."""
        source = Path(source)
        if not (source / CARD_FILE).is_file() or not (source / MODEL_FILE).is_file():
            raise ValueError(f"{source} is not a model version: it needs {CARD_FILE} and {MODEL_FILE}")
        card = ModelCard.from_json((source / CARD_FILE).read_bytes(), str(source / CARD_FILE))
        self.publish_dir(source, card.version)  # FileExistsError when the registry has it
        return card

    def install_shipped(self, shipped: Registry) -> tuple[ModelCard, list[str]]:
        """The promoted version of ``shipped`` (the project's ``models/`` folder: the model trained on real
        X-rays) into this registry: imported unless it is there already, and promoted unless a model trained on
        real data is promoted here (a bootstrap model gives way; a model someone trained and promoted stays).
        Returns its card and what was done ("imported", "promoted")."""
        version = shipped.resolve_version()
        done = []
        if version not in self.versions():
            self.import_dir(shipped.local_dir(version))
            done.append("imported")
        promoted = self.promoted_version()
        if promoted != version:
            try:
                keep = promoted is not None and not self.read_card(promoted).synthetic
            except (ModelNotFoundError, ValueError):
                keep = False
            if not keep:
                self.promote(version)
                done.append("promoted")
        return self.read_card(version), done
