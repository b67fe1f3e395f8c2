"""Which registry the settings name: ``XRAYLAB_MODEL_REGISTRY`` = ``s3://bucket/prefix`` (shared by every
node, on the S3 endpoint ``XRAYLAB_MODEL_REGISTRY_ENDPOINT``), or empty for the folder ``XRAYLAB_MODEL_DIR``
(the embedded default)."""

from __future__ import annotations

from pathlib import Path

from xraylab.registry.base import Registry
from xraylab.registry.folder import FolderRegistry
from xraylab.registry.s3 import S3Registry
from xraylab.registry.signing import ModelKeys
from xraylab.settings import Settings

__all__ = ["open_registry", "as_registry", "RegistryLike"]

RegistryLike = Registry | Path | str


def open_registry(settings: Settings, location: str = "", *, publish: bool = False) -> Registry:
    """The registry at ``location`` (``s3://...`` or a folder), default the one the settings name. An S3 registry
    is reached as serving's identity (it reads), or as training's with ``publish`` (it publishes and promotes)."""
    location = location or settings.MODEL_REGISTRY
    keys = ModelKeys.from_settings(settings)  # the training key signs what it publishes; the trusted keys check
    if not location:
        return FolderRegistry(settings.model_dir, keys=keys)
    if not location.startswith("s3://"):
        return FolderRegistry(Path(location).expanduser(), keys=keys)
    from xraylab.storage import make_s3_client

    endpoint = settings.s3_endpoint(settings.MODEL_REGISTRY_ENDPOINT or None, "publish" if publish else "registry")
    return S3Registry(make_s3_client(endpoint), location, settings.model_cache_dir, keys=keys)


def as_registry(where: RegistryLike) -> Registry:
    """A registry as it is, or a folder path as a folder registry (what tests and tools pass), with the keys the
    settings name (read when it signs or checks a version)."""
    if isinstance(where, Registry):
        return where
    if str(where).startswith("s3://"):
        raise ValueError(f"{where}: an S3 registry needs its endpoint's credentials: use open_registry(settings, ...)")
    return FolderRegistry(where)
