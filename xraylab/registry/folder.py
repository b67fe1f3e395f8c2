"""The registry as a folder on one machine: the embedded default (``XRAYLAB_MODEL_DIR``).

Layout::

    <MODEL_DIR>/<version>/model.keras   the Keras 3 model
    <MODEL_DIR>/<version>/card.json     the card (xraylab.registry.card)
    <MODEL_DIR>/<version>/...           reference.npz, metrics, plots
    <MODEL_DIR>/<version>/signature.json  the training key's signature of them all (xraylab.registry.signing)
    <MODEL_DIR>/PROMOTED                the version serving loads by default

A version is copied into a hidden staging folder beside it and renamed into place, so a reader sees it
whole; PROMOTED is replaced the same way.

``ShippedRegistry`` is the models the project ships (``models/``, committed with the code): not signed (the
training key never leaves the site that made it), each version carries the ``SHA256SUMS`` of its files instead,
checked before anything is read; ``Registry.install_shipped`` signs the version with the site's key as it
installs it. A new shipped version: its folder from a registry without ``signature.json``, then
``sha256sum $(ls | grep -vx SHA256SUMS) > SHA256SUMS`` in it (or ``signing.write_checksums``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from xraylab.registry.base import Registry
from xraylab.registry.card import CARD_FILE, ModelCard, ModelNotFoundError, check_version
from xraylab.registry.signing import ModelKeys, Verified, verify_checksums

__all__ = ["FolderRegistry", "ShippedRegistry"]


class FolderRegistry(Registry):
    def __init__(self, root: Path | str, *, keys: ModelKeys | None = None) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.keys = keys

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / CARD_FILE).exists())

    def read_card(self, version: str) -> ModelCard:
        path = self.root / check_version(version) / CARD_FILE
        if not path.exists():
            raise ModelNotFoundError(f"model version {version!r} not found in {self.location}")
        return ModelCard.from_json(path.read_bytes(), str(path))

    def promoted_version(self) -> str | None:
        path = self.root / "PROMOTED"
        return (path.read_text().strip() or None) if path.exists() else None

    def _write_promoted(self, version: str) -> None:
        tmp = self.root / ".PROMOTED.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / "PROMOTED")

    def publish_dir(self, source: Path, version: str) -> None:
        target = self.root / check_version(version)
        if target.exists():
            raise FileExistsError(f"model version {version!r} already exists in {self.location}")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        try:
            for path in Path(source).iterdir():
                if path.is_file():
                    shutil.copyfile(path, staging / path.name)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _version_dir(self, version: str) -> Path:
        folder = self.root / check_version(version)
        if not (folder / CARD_FILE).is_file():
            raise ModelNotFoundError(f"model version {version!r} not found in {self.location}")
        return folder


class ShippedRegistry(FolderRegistry):
    """The models the project ships (``XRAYLAB_SHIPPED_MODELS``, default ``models/``): a version's files are
    checked against its committed ``SHA256SUMS`` (integrity: they are the files the checkout was committed
    with), not a signature. Install them into a registry (``install_shipped``) to serve them; nothing is
    published here."""

    def verify_dir(self, folder: Path, version: str) -> Verified:
        return verify_checksums(folder, version, self.location)

    def publish_dir(self, source: Path, version: str) -> None:
        raise PermissionError(f"{self.location} holds the shipped models: nothing is published there")

    def _write_promoted(self, version: str) -> None:
        raise PermissionError(f"{self.location} holds the shipped models: its promoted version is committed")
