"""What every registry does: versions with their cards and files, a promoted pointer, publish and load.

A version is immutable once published: publishing never overwrites one, and a reader sees a version
whole or not at all. Every version is signed (``xraylab.registry.signing``): publishing signs it with the
training key (``XRAYLAB_MODEL_SIGNING_KEY``), and ``local_dir`` (what loading, promoting and the monitor read
through) hands out a version's files only once they are checked against a signature by a trusted key
(``XRAYLAB_MODEL_TRUSTED_KEYS``): whoever could write the store, a version they wrote is refused
(``UntrustedModelError``) before anything in it is deserialised. TensorFlow is imported inside the functions
that need it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from xraylab.registry.card import CARD_FILE, MODEL_FILE, ModelCard, ModelNotFoundError, check_version
from xraylab.registry.signing import (
    CHECKSUMS_FILE,
    SIGNATURE_FILE,
    ModelKeys,
    UntrustedModelError,
    Verified,
    check_copy,
    load_signing_key,
    sign_dir,
    verify_dir,
)

__all__ = ["Registry", "NOT_COPIED"]

log = logging.getLogger("xraylab.registry")

# Files of a version folder that are not the version's own and are never copied into a registry: its signature
# (made anew by whoever publishes), the S3 registry's manifest and the shipped models' checksums.
NOT_COPIED = frozenset({SIGNATURE_FILE, "MANIFEST.json", CHECKSUMS_FILE})  # MANIFEST.json: s3.MANIFEST_FILE


class Registry(ABC):
    """A model registry. ``location`` names it for people (a folder, ``s3://bucket/prefix``); ``keys`` says where
    the signing and trusted keys are (``None``: the settings' ``XRAYLAB_MODEL_SIGNING_KEY`` and
    ``XRAYLAB_MODEL_TRUSTED_KEYS``, read when needed)."""

    location: str
    keys: ModelKeys | None = None

    @abstractmethod
    def versions(self) -> list[str]:
        """The published versions (complete ones only)."""

    @abstractmethod
    def read_card(self, version: str) -> ModelCard:
        """The card of ``version``; ``ModelNotFoundError`` when there is no such version. For listing and
        showing: a card read here is not checked against the version's signature (``local_dir`` is)."""

    @abstractmethod
    def promoted_version(self) -> str | None:
        """The version serving loads by default, if one was promoted."""

    @abstractmethod
    def _write_promoted(self, version: str) -> None:
        """Point PROMOTED at ``version`` in one write a reader sees whole."""

    @abstractmethod
    def publish_dir(self, source: Path, version: str) -> None:
        """Publish the files of ``source`` (a folder holding ``card.json`` and ``model.keras``) as
        ``version``, as they are; ``FileExistsError`` when it exists. Readers never see it half there. Signs
        nothing: a version published here without a valid ``signature.json`` is refused by every reader."""

    @abstractmethod
    def _version_dir(self, version: str) -> Path:
        """A local folder with the files of ``version`` as stored, not yet checked against its signature
        (``ModelNotFoundError`` when there is no such version)."""

    # -- built on the above -----------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.location

    def model_keys(self) -> ModelKeys:
        if self.keys is not None:
            return self.keys
        from xraylab.settings import load_settings

        return ModelKeys.from_settings(load_settings())

    def verify_dir(self, folder: Path, version: str) -> Verified:
        """Check ``folder`` (the files of ``version``) against its signature and the trusted keys;
        ``UntrustedModelError`` when it does not hold."""
        return verify_dir(folder, version, self.model_keys().trusted_keys, self.location)

    def local_dir(self, version: str) -> Path:
        """A local folder with the files of ``version``, checked against its signature by a trusted key
        (``UntrustedModelError`` when they are not the files a trusted key signed; ``ModelNotFoundError`` when
        there is no such version)."""
        folder = self._version_dir(check_version(version))
        self.verify_dir(folder, version)
        return folder

    def verify(self, version: str) -> Verified:
        """Who signed ``version`` (``UntrustedModelError`` when no trusted key did, or its files changed since)."""
        return self.verify_dir(self._version_dir(check_version(version)), version)

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
        """Point PROMOTED at ``version`` once its files are checked against a trusted signature: a version no
        trusted key signed is never promoted (``UntrustedModelError``)."""
        folder = self.local_dir(check_version(version))
        card = ModelCard.from_json((folder / CARD_FILE).read_bytes(), f"{self.location.rstrip('/')}/{version}")
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
        version signed with the training key (``SigningKeyError`` before anything is written when there is
        none); the version's location."""
        check_version(card.version)
        key = load_signing_key(self.model_keys().signing_key)
        staging = Path(tempfile.mkdtemp(prefix=f"xraylab-publish-{card.version}-"))
        try:
            model.save(staging / MODEL_FILE)
            (staging / CARD_FILE).write_text(card.to_json())
            for name, data in (extra_files or {}).items():
                if Path(name).name not in NOT_COPIED:
                    (staging / Path(name).name).write_bytes(data)
            sign_dir(staging, card.version, key)
            self.publish_dir(staging, card.version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if promote_it:
            self.promote(card.version)
        return f"{self.location.rstrip('/')}/{card.version}"

    def load_model(self, version: str = "") -> tuple[Any, ModelCard]:
        """(Keras model, card) for ``version`` (default: promoted, else newest). The version's files are checked
        against its signature first (``UntrustedModelError``): nothing of a version no trusted key signed is
        deserialised, its card included."""
        import keras

        resolved = check_version(version) if version else self.resolve_version()
        folder = self.local_dir(resolved)
        card = ModelCard.from_json((folder / CARD_FILE).read_bytes(), str(folder / CARD_FILE))
        model = keras.models.load_model(folder / MODEL_FILE, compile=False)
        return model, card

    def import_dir(self, source: Path) -> ModelCard:
        """Publish a version folder from elsewhere (another registry's ``<version>/``, a colleague's copy)
        under the version its card names, signed with this site's training key: importing vouches for it
        (``SigningKeyError`` without the key). A copy that carries a signature must be whole as its signer
        signed it (``UntrustedModelError``); ``ValueError`` when it is no version."""
        source = Path(source)
        if not (source / CARD_FILE).is_file() or not (source / MODEL_FILE).is_file():
            raise ValueError(f"{source} is not a model version: it needs {CARD_FILE} and {MODEL_FILE}")
        card = ModelCard.from_json((source / CARD_FILE).read_bytes(), str(source / CARD_FILE))
        check_version(card.version)
        key = load_signing_key(self.model_keys().signing_key)
        check_copy(source, card.version)
        staging = Path(tempfile.mkdtemp(prefix=f"xraylab-import-{card.version}-"))
        try:
            for path in source.iterdir():
                if path.is_file() and path.name not in NOT_COPIED:
                    shutil.copyfile(path, staging / path.name)
            sign_dir(staging, card.version, key)
            self.publish_dir(staging, card.version)  # FileExistsError when the registry has it
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return card

    def install_shipped(self, shipped: Registry) -> tuple[ModelCard, list[str]]:
        """The promoted version of ``shipped`` (the project's ``models/`` folder as a ``ShippedRegistry``: the
        model trained on real X-rays) into this registry: its files checked against the checksums committed
        beside them and imported, signed with this site's training key (the operator vouches for it by
        installing it), unless it is there already; and promoted unless a model trained on real data is promoted
        here (a bootstrap model gives way; a model someone trained, signed and promoted stays). Returns its card
        and what was done ("imported", "promoted")."""
        version = shipped.resolve_version()
        done = []
        if version not in self.versions():
            self.import_dir(shipped.local_dir(version))
            done.append("imported")
        else:
            try:
                self.verify(version)
            except UntrustedModelError as exc:
                raise UntrustedModelError(version, f"{exc.reason}. It is installed but was not signed as it "
                                                   "is now (installed before models were signed?): delete it "
                                                   "from the registry and install it again", self.location) from None
        promoted = self.promoted_version()
        if promoted != version:
            try:  # a promoted version no trusted key signed is not served: it does not stay either
                keep = promoted is not None and not self.read_card(promoted).synthetic and bool(self.verify(promoted))
            except (ModelNotFoundError, ValueError):
                keep = False
            if not keep:
                self.promote(version)
                done.append("promoted")
        return self.read_card(version), done
