"""The registry in an S3 bucket, shared by every node, with a cache of its versions on each node.

Layout under ``s3://<bucket>/<prefix>``::

    <version>/<upload id>/model.keras, card.json, reference.npz, ...   the version's files
    <version>/MANIFEST.json   written last: the upload id, each file's size and SHA-256
    PROMOTED                  the version serving loads by default (one object)

S3 has no rename, so a version exists for readers only once its manifest is there: a publish that dies
half-way leaves files no reader lists or loads, and a reader checks every file it downloads against the
manifest (a file replaced or cut short is refused, never loaded). Each publish uploads under an id of its
own, and the manifest is written only if none exists (``If-None-Match: *``), so two publishers of one
version cannot mix their files; on a store that ignores the condition the last manifest wins, still whole.
PROMOTED is a single PUT, which S3 makes visible whole. Versions are immutable, so a node's cache
(``<cache>/versions/<version>/``, filled through a staging folder and a rename) never goes stale; cards are
cached the same way.

The manifest is the publisher's own hash, so it proves a version whole, not who made it: anyone who can write
the bucket can write a consistent one. What a node trusts is the version's ``signature.json``
(``xraylab.registry.signing``), checked against the trusted keys in the staging folder before a version enters
the node's cache, and again whenever the cache hands it out (``local_dir``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from xraylab.registry.base import Registry
from xraylab.registry.card import CARD_FILE, ModelCard, ModelNotFoundError, check_version, is_version
from xraylab.registry.signing import ModelKeys, sha256_file
from xraylab.storage import MISSING_CODES, error_code

__all__ = ["S3Registry", "parse_s3_location", "MANIFEST_FILE"]

MANIFEST_FILE = "MANIFEST.json"
PROMOTED_KEY = "PROMOTED"
_EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
log = logging.getLogger("xraylab.registry")
_LOCATION_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")


def parse_s3_location(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, ``some/prefix/``); ``ValueError`` for anything else."""
    match = _LOCATION_RE.match(location.strip())
    if not match:
        raise ValueError(f"bad registry location {location!r}: expected s3://BUCKET[/PREFIX]")
    prefix = (match.group(2) or "").strip("/")
    return match.group(1), (prefix + "/" if prefix else "")


class S3Registry(Registry):
    def __init__(self, client: Any, location: str, cache_dir: Path, *, keys: ModelKeys | None = None) -> None:
        self.client = client
        self.keys = keys
        self.bucket, self.prefix = parse_s3_location(location)
        self.location = f"s3://{self.bucket}/{self.prefix}"
        key = hashlib.sha256(self.location.encode()).hexdigest()[:12]
        self.cache = Path(cache_dir) / f"{self.bucket}-{key}"

    # -- S3 -------------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise

    def _manifest(self, version: str) -> tuple[str, dict[str, dict[str, Any]]]:
        """(the key prefix of the version's files, {file name: {size, sha256}}); ``ValueError`` for a
        manifest that is not one (a file name that is not a plain name, a size or digest missing)."""
        raw = self._get(self._key(check_version(version), MANIFEST_FILE))
        if raw is None:
            raise ModelNotFoundError(f"model version {version!r} not found in {self.location}")
        try:
            doc = json.loads(raw)
            upload, files = str(doc["upload"]), doc["files"]
            ok = (_FILE_RE.match(upload) and isinstance(files, dict) and CARD_FILE in files
                  and all(isinstance(name, str) and _FILE_RE.match(name) and isinstance(meta, dict)
                          and isinstance(meta.get("size"), int) and _SHA256_RE.match(str(meta.get("sha256")))
                          for name, meta in files.items()))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ValueError(f"{self.location}{version}/{MANIFEST_FILE} is corrupt")
        return self._key(version, upload, ""), files

    # -- Registry ---------------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(self.prefix):]
                version, _, name = rest.partition("/")
                if name == MANIFEST_FILE and is_version(version):
                    found.append(version)
                elif name == MANIFEST_FILE:
                    log.warning("ignoring %s%s: not a version name", self.location, rest)
        return sorted(found)

    def read_card(self, version: str) -> ModelCard:
        cached = self.cache / "cards" / f"{check_version(version)}.json"
        if cached.exists():
            return ModelCard.from_json(cached.read_bytes(), str(cached))
        where, files = self._manifest(version)
        raw = self._get(where + CARD_FILE)
        if raw is None or hashlib.sha256(raw).hexdigest() != files[CARD_FILE]["sha256"]:
            raise ValueError(f"{self.location}{version}/{CARD_FILE} does not match its manifest")
        card = ModelCard.from_json(raw, f"{self.location}{version}/{CARD_FILE}")
        self._cache_write(cached, raw)
        return card

    def promoted_version(self) -> str | None:
        raw = self._get(self._key(PROMOTED_KEY))
        return (raw.decode().strip() or None) if raw is not None else None

    def _write_promoted(self, version: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(PROMOTED_KEY), Body=(version + "\n").encode(),
                               ContentType="text/plain")

    def publish_dir(self, source: Path, version: str) -> None:
        check_version(version)
        if self._get(self._key(version, MANIFEST_FILE)) is not None:
            raise FileExistsError(f"model version {version!r} already exists in {self.location}")
        from botocore.exceptions import ClientError

        upload = uuid.uuid4().hex
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(Path(source).iterdir()):
            if not path.is_file() or path.name == MANIFEST_FILE:
                continue
            if not _FILE_RE.match(path.name):
                raise ValueError(f"{path}: a model file needs a plain name (letters, digits, '.', '_', '-')")
            self.client.upload_file(str(path), self.bucket, self._key(version, upload, path.name))
            files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        manifest = json.dumps({"version": version, "upload": upload, "files": files}, indent=2,
                              sort_keys=True).encode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(version, MANIFEST_FILE), Body=manifest,
                                   ContentType="application/json", IfNoneMatch="*")
        except ClientError as exc:
            if error_code(exc) in _EXISTS:
                raise FileExistsError(f"model version {version!r} was published meanwhile in {self.location}") from None
            raise

    def _version_dir(self, version: str) -> Path:
        target = self.cache / "versions" / check_version(version)
        if target.exists():
            return target
        where, files = self._manifest(version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            for name, meta in files.items():
                path = staging / name  # a plain file name: _manifest refused any other
                self.client.download_file(self.bucket, where + name, str(path))
                if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
                    raise ValueError(f"{self.location}{version}/{name} does not match its manifest: not loaded")
            self.verify_dir(staging, version)  # an unsigned or tampered version never enters the cache
            try:
                os.replace(staging, target)
            except OSError:  # another process of this node filled the cache first: theirs is the same files
                if not target.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _cache_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
