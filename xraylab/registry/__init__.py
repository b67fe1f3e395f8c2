"""The model registry: versioned models, each with its card, and the promoted pointer.

Two kinds, one interface (``Registry``): a folder on one machine (``FolderRegistry``, the embedded default)
and an S3 bucket shared by every node with a cache on each (``S3Registry``); ``open_registry(settings)``
gives the one the settings name. Saving and loading go through here only, for the bootstrap model and
trained ones alike. The functions below take a registry or a folder path.

Every version is signed with the training key and checked against the trusted keys before it is loaded or
promoted (``xraylab.registry.signing``: ``UntrustedModelError`` otherwise). The models the project ships are a
``ShippedRegistry`` (checked against their committed checksums), installed and signed by ``install_shipped``.
"""

from __future__ import annotations

from typing import Any

from xraylab.registry.base import Registry
from xraylab.registry.card import SYNTHETIC_NOTICE, ModelCard, ModelNotFoundError, check_version, research_notice
from xraylab.registry.folder import FolderRegistry, ShippedRegistry
from xraylab.registry.open import RegistryLike, as_registry, open_registry
from xraylab.registry.s3 import S3Registry
from xraylab.registry.signing import ModelKeys, SigningKeyError, UntrustedModelError

__all__ = ["ModelCard", "ModelNotFoundError", "Registry", "FolderRegistry", "ShippedRegistry", "S3Registry",
           "RegistryLike", "ModelKeys", "UntrustedModelError", "SigningKeyError", "SYNTHETIC_NOTICE",
           "research_notice", "open_registry", "as_registry", "check_version", "publish", "list_cards", "promote",
           "promoted_version", "resolve_version", "load_model", "read_card"]


def read_card(registry: RegistryLike, version: str) -> ModelCard:
    return as_registry(registry).read_card(version)


def list_cards(registry: RegistryLike) -> list[ModelCard]:
    return as_registry(registry).list_cards()


def promoted_version(registry: RegistryLike) -> str | None:
    return as_registry(registry).promoted_version()


def promote(registry: RegistryLike, version: str) -> ModelCard:
    return as_registry(registry).promote(version)


def resolve_version(registry: RegistryLike, version: str = "") -> str:
    return as_registry(registry).resolve_version(version)


def publish(model: Any, registry: RegistryLike, card: ModelCard, *, promote_it: bool = False,
            extra_files: dict[str, bytes] | None = None) -> str:
    return as_registry(registry).publish(model, card, promote_it=promote_it, extra_files=extra_files)


def load_model(registry: RegistryLike, version: str = "") -> tuple[Any, ModelCard]:
    return as_registry(registry).load_model(version)
