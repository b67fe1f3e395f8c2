"""Signed model versions: a version is loaded, promoted or served only when a trusted Ed25519 key signed it.

The registry's own manifest (``MANIFEST.json`` in S3) is a hash its publisher computes: anyone who can write the
bucket can publish a whole, consistent version. What serving trusts instead is a signature made with a private key
that only training holds, checked against public keys that serving is given.

Keys (settings ``XRAYLAB_MODEL_SIGNING_KEY`` and ``XRAYLAB_MODEL_TRUSTED_KEYS``)::

    <state>/keys/                  mode 0700
    <state>/keys/model-signing.key the private key, PEM PKCS#8 (unencrypted), mode 0600: training's alone
    <state>/keys/model-trusted.pub the public keys serving trusts, a text file, one key a line:

        # '#' starts a comment; blank lines are ignored
        ed25519 <base64 of the raw 32-byte public key> <name: the rest of the line, for people>

A key's id is ``sha256:`` and the hex SHA-256 of its raw 32 bytes. ``xraylab models keygen`` makes a pair where
there is none (never overwriting one) and appends its public line to the trusted file; to trust another
training site's key, append its line. To retire a key, delete its line: every version it signed is refused.

What is signed: ``signature.json`` in the version folder, beside the files it covers::

    {"format": "xraylab-model-signature/1", "algorithm": "ed25519",
     "key_id": "sha256:<hex>", "public_key": "<base64 raw 32 bytes>",
     "manifest": {"format": "xraylab-model-manifest/1", "version": "<version>",
                  "card_sha256": "<hex SHA-256 of card.json>",
                  "files": {"<name>": {"sha256": "<hex>", "size": <bytes>}, ...}},
     "signature": "<base64 Ed25519 signature of canonical(manifest)>"}

``canonical(manifest)`` is its JSON with sorted keys, no whitespace, ASCII only (``canonical_json``). ``files``
lists every file of the version except ``signature.json`` (names relative to the version folder: versions are
flat), so changing, adding or removing any file, changing the card, or publishing the files under another version
name breaks it. ``public_key`` is there for people and for ``import_dir`` (which checks that a copy is whole as its
signer signed it); trust comes only from ``key_id`` being in the trusted file, whose key checks the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xraylab.registry.card import CARD_FILE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from xraylab.settings import Settings

__all__ = ["SIGNATURE_FILE", "SIGNATURE_FORMAT", "MANIFEST_FORMAT", "ALGORITHM", "UntrustedModelError",
           "SigningKeyError", "ModelKeys", "TrustedKey", "Verified", "KeyPair", "canonical_json", "sha256_file",
           "build_manifest", "key_id", "generate_key_pair", "load_signing_key", "read_trusted_keys", "sign_dir",
           "verify_dir", "check_copy", "public_key_line", "CHECKSUMS_FILE", "write_checksums", "verify_checksums"]

SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = "xraylab-model-signature/1"
MANIFEST_FORMAT = "xraylab-model-manifest/1"
ALGORITHM = "ed25519"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_SIGNATURE_BYTES = 1 << 20  # a signature file is a few kB; a bigger one is not read


class UntrustedModelError(ValueError):
    """A model version that is not signed by a trusted key, or whose files are not the ones that were signed:
    it is never loaded, promoted or served. ``version`` and ``reason`` say which and why."""

    def __init__(self, version: str, reason: str, where: str = "") -> None:
        self.version, self.reason, self.where = version, reason, where
        place = f" in {where}" if where else ""
        super().__init__(f"model version {version!r}{place} is not trusted: {reason}; refusing to load it")


class SigningKeyError(ValueError):
    """The signing key (``XRAYLAB_MODEL_SIGNING_KEY``) is missing or not one: nothing can be published."""


@dataclass(frozen=True)
class ModelKeys:
    """Where the signing key and the trusted keys are (``ModelKeys.from_settings``)."""

    signing_key: Path
    trusted_keys: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelKeys:
        assert settings.MODEL_SIGNING_KEY is not None and settings.MODEL_TRUSTED_KEYS is not None
        return cls(Path(settings.MODEL_SIGNING_KEY), Path(settings.MODEL_TRUSTED_KEYS))


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    name: str
    public_key: Ed25519PublicKey


@dataclass(frozen=True)
class Verified:
    """What ``verify_dir`` found: the version, who signed it, and the manifest that was signed."""

    version: str
    key_id: str
    key_name: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class KeyPair:
    """What ``generate_key_pair`` did: the key's id and whether it made the key and added it to the trusted file."""

    key_id: str
    created: bool
    trusted_added: bool


# -- manifests ----------------------------------------------------------------------------------------------

def canonical_json(doc: Any) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no whitespace, ASCII only."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name != SIGNATURE_FILE)


def build_manifest(folder: Path, version: str) -> dict[str, Any]:
    """The manifest of ``folder`` as ``version``: every file but ``signature.json``, with its SHA-256 and size."""
    files = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in _version_files(folder)}
    if CARD_FILE not in files:
        raise ValueError(f"{folder} has no {CARD_FILE}: not a model version")
    return {"format": MANIFEST_FORMAT, "version": version, "card_sha256": files[CARD_FILE]["sha256"],
            "files": files}


# -- keys ---------------------------------------------------------------------------------------------------

def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key: how signatures and the trusted file name a key."""
    return "sha256:" + hashlib.sha256(_raw_public(public_key)).hexdigest()


def public_key_line(public_key: Ed25519PublicKey, name: str) -> str:
    """The key's line in the trusted file."""
    return f"{ALGORITHM} {base64.b64encode(_raw_public(public_key)).decode()} {name}".rstrip()


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path`` (PEM PKCS#8); ``SigningKeyError`` naming the setting when it is not there,
    not readable, not one, or readable by others than its owner."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    hint = ("publishing signs each model version with the training key (XRAYLAB_MODEL_SIGNING_KEY); "
            "create one with `xraylab models keygen` (cluster/local/keys.sh) where training runs")
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(f"no model signing key at {path} (XRAYLAB_MODEL_SIGNING_KEY): {hint}") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read the model signing key {path} (XRAYLAB_MODEL_SIGNING_KEY): "
                              f"{exc.strerror}") from None
    if mode & (stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH):
        raise SigningKeyError(f"the model signing key {path} (XRAYLAB_MODEL_SIGNING_KEY) is open to others "
                              f"(mode {stat.S_IMODE(mode):o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} (XRAYLAB_MODEL_SIGNING_KEY) is not an unencrypted PEM private key: "
                              f"{exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} (XRAYLAB_MODEL_SIGNING_KEY) is not an Ed25519 key")
    return key


def read_trusted_keys(path: Path) -> dict[str, TrustedKey]:
    """The trusted public keys by id. A missing file trusts nothing (every version is then refused, saying
    so); a line that is not ``ed25519 <base64> [name]`` raises ``ValueError`` naming the file and line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    keys: dict[str, TrustedKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        try:
            if len(parts) < 2 or parts[0] != ALGORITHM:
                raise ValueError(f"expected '{ALGORITHM} <base64 public key> <name>'")
            raw = base64.b64decode(parts[1], validate=True)
            if len(raw) != 32:
                raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
            public = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"{path}:{number} (XRAYLAB_MODEL_TRUSTED_KEYS) is not a trusted key line: "
                             f"{exc}") from None
        ident = key_id(public)
        keys[ident] = TrustedKey(ident, parts[2] if len(parts) > 2 else "", public)
    return keys


def generate_key_pair(keys: ModelKeys, name: str = "") -> KeyPair:
    """The signing key pair, made where there is none: the private key written 0600 in a 0700 folder (created
    exclusively: an existing key is never overwritten), and its public line appended to the trusted file unless
    that file has it already. Run it again and it changes nothing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(keys.signing_key)
    folder = private_path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    created = False
    if private_path.exists():
        private = load_signing_key(private_path)
    else:
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        try:
            fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made meanwhile by another keygen: theirs is the key
            private = load_signing_key(private_path)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            os.chmod(private_path, 0o600)
            created = True
    public = private.public_key()
    ident = key_id(public)
    trusted_path = Path(keys.trusted_keys)
    added = False
    if ident not in read_trusted_keys(trusted_path):
        trusted_path.parent.mkdir(parents=True, exist_ok=True)
        existing = trusted_path.read_text(encoding="utf-8") if trusted_path.exists() else ""
        header = "" if existing else ("# Public keys whose signatures serving trusts (xraylab/registry/signing.py):\n"
                                      "# ed25519 <base64 raw 32-byte key> <name>\n")
        sep = "\n" if existing and not existing.endswith("\n") else ""
        with trusted_path.open("a", encoding="utf-8") as f:
            f.write(sep + header + public_key_line(public, name or f"training key {ident[7:19]}") + "\n")
        added = True
    return KeyPair(ident, created, added)


# -- signing and verifying ----------------------------------------------------------------------------------

def sign_dir(folder: Path, version: str, signing_key: Path | Ed25519PrivateKey) -> dict[str, Any]:
    """Sign the files of ``folder`` as ``version``: write ``signature.json`` into it (replacing any there)."""
    key = load_signing_key(signing_key) if isinstance(signing_key, Path) else signing_key
    manifest = build_manifest(folder, version)
    public = key.public_key()
    doc = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "key_id": key_id(public),
           "public_key": base64.b64encode(_raw_public(public)).decode(), "manifest": manifest,
           "signature": base64.b64encode(key.sign(canonical_json(manifest))).decode()}
    (Path(folder) / SIGNATURE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def _read_signature(folder: Path, version: str, where: str) -> dict[str, Any]:
    path = Path(folder) / SIGNATURE_FILE
    if not path.is_file():
        raise UntrustedModelError(version, f"unsigned (no {SIGNATURE_FILE}): it was not published with the "
                                           "training key", where)
    try:
        if path.stat().st_size > _MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        doc = json.loads(path.read_bytes())
        manifest = doc["manifest"]
        ok = (isinstance(doc, dict) and doc.get("format") == SIGNATURE_FORMAT and doc.get("algorithm") == ALGORITHM
              and _KEY_ID_RE.match(str(doc.get("key_id"))) and isinstance(doc.get("signature"), str)
              and isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
              and isinstance(manifest.get("files"), dict)
              and all(isinstance(name, str) and isinstance(meta, dict) and isinstance(meta.get("size"), int)
                      and _SHA256_RE.match(str(meta.get("sha256"))) for name, meta in manifest["files"].items()))
    except (ValueError, KeyError, TypeError, OSError):
        ok = False
    if not ok:
        raise UntrustedModelError(version, f"{SIGNATURE_FILE} is malformed", where)
    return doc


def _check_signature(doc: dict[str, Any], public_key: Ed25519PublicKey, version: str, where: str) -> None:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(doc["signature"], validate=True), canonical_json(doc["manifest"]))
    except (InvalidSignature, ValueError, binascii.Error):
        raise UntrustedModelError(version, f"bad signature (key {doc['key_id']}): the manifest is not the one "
                                           "that key signed", where) from None


def _check_files(folder: Path, doc: dict[str, Any], version: str, where: str) -> None:
    """The signed manifest against the version's name and the files as they are."""
    manifest = doc["manifest"]
    if manifest.get("version") != version:
        raise UntrustedModelError(version, f"signed as version {manifest.get('version')!r}, not {version!r}", where)
    signed: dict[str, dict[str, Any]] = manifest["files"]
    if CARD_FILE not in signed or manifest.get("card_sha256") != signed[CARD_FILE]["sha256"]:
        raise UntrustedModelError(version, f"the signed manifest does not cover {CARD_FILE}", where)
    present = {p.name: p for p in _version_files(folder)}
    if missing := sorted(set(signed) - set(present)):
        raise UntrustedModelError(version, f"signed file {missing[0]} is missing", where)
    if extra := sorted(set(present) - set(signed)):
        raise UntrustedModelError(version, f"file {extra[0]} was not signed", where)
    for name in sorted(signed):
        meta, path = signed[name], present[name]
        if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            raise UntrustedModelError(version, f"file {name} differs from the one that was signed "
                                               "(SHA-256 mismatch)", where)


def verify_dir(folder: Path, version: str, trusted: Path | dict[str, TrustedKey], where: str = "") -> Verified:
    """Check that ``folder`` holds ``version`` exactly as a trusted key signed it; ``UntrustedModelError``
    (naming the version and why) when it is unsigned, signed by a key not in ``trusted``, badly signed, signed as
    another version, or when a file was changed, added or removed. Reads no file but the signature and the
    bytes it hashes: call it before deserialising anything of the version."""
    keys = read_trusted_keys(trusted) if isinstance(trusted, Path) else trusted
    doc = _read_signature(folder, version, where)
    key = keys.get(doc["key_id"])
    if key is None:
        where_keys = f" ({trusted}, XRAYLAB_MODEL_TRUSTED_KEYS)" if isinstance(trusted, Path) else ""
        reason = (f"signed by key {doc['key_id']}, which is not trusted{where_keys}" if keys
                  else f"no trusted keys{where_keys}: run `xraylab models keygen` where training runs, "
                       "or add the training key's public line")
        raise UntrustedModelError(version, reason, where)
    _check_signature(doc, key.public_key, version, where)
    _check_files(folder, doc, version, where)
    return Verified(version, key.key_id, key.name, doc["manifest"])


def check_copy(folder: Path, version: str) -> bool:
    """For importing a copy: when ``folder`` carries a signature, check that it is whole as its signer (whoever
    that was: the key it names) signed it, and raise ``UntrustedModelError`` when not. False when it carries
    none. Says nothing of trust: the importer vouches for the copy by signing it anew."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not (Path(folder) / SIGNATURE_FILE).exists():
        return False
    doc = _read_signature(folder, version, str(folder))
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(doc.get("public_key")), validate=True))
    except (ValueError, binascii.Error):
        raise UntrustedModelError(version, f"{SIGNATURE_FILE} names no valid public key", str(folder)) from None
    if key_id(public) != doc["key_id"]:
        raise UntrustedModelError(version, f"{SIGNATURE_FILE}'s public key is not key {doc['key_id']}", str(folder))
    _check_signature(doc, public, version, str(folder))
    _check_files(folder, doc, version, str(folder))
    return True



# -- the shipped models' checksums --------------------------------------------------------------------------

CHECKSUMS_FILE = "SHA256SUMS"
_CHECKSUM_LINE_RE = re.compile(r"^([0-9a-f]{64}) [ *]([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")


def write_checksums(folder: Path) -> Path:
    """``SHA256SUMS`` of every file of ``folder`` but itself and ``signature.json`` (``sha256sum``'s format:
    ``sha256sum -c SHA256SUMS`` checks it): what a shipped version commits beside its files."""
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in _version_files(folder) if p.name != CHECKSUMS_FILE]
    path = Path(folder) / CHECKSUMS_FILE
    path.write_text("".join(lines))
    return path


def verify_checksums(folder: Path, version: str, where: str = "") -> Verified:
    """Check ``folder`` against the ``SHA256SUMS`` committed in it: every file listed, none changed, none more
    (``UntrustedModelError`` otherwise). Integrity only, as far as the checkout is trusted: for the shipped
    models, never for a registry."""
    path = Path(folder) / CHECKSUMS_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise UntrustedModelError(version, f"no {CHECKSUMS_FILE} beside its files", where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UntrustedModelError(version, f"{CHECKSUMS_FILE} is unreadable: {exc}", where) from None
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _CHECKSUM_LINE_RE.match(line.strip())
        if not match:
            raise UntrustedModelError(version, f"{CHECKSUMS_FILE} line {number} is not '<sha256>  <file>'", where)
        listed[match.group(2)] = match.group(1)
    present = {p.name: p for p in _version_files(folder) if p.name != CHECKSUMS_FILE}
    if CARD_FILE not in listed:
        raise UntrustedModelError(version, f"{CHECKSUMS_FILE} does not list {CARD_FILE}", where)
    if missing := sorted(set(listed) - set(present)):
        raise UntrustedModelError(version, f"file {missing[0]} listed in {CHECKSUMS_FILE} is missing", where)
    if extra := sorted(set(present) - set(listed)):
        raise UntrustedModelError(version, f"file {extra[0]} is not in {CHECKSUMS_FILE}", where)
    files = {}
    for name in sorted(listed):
        digest = sha256_file(present[name])
        if digest != listed[name]:
            raise UntrustedModelError(version, f"file {name} differs from its committed checksum", where)
        files[name] = {"sha256": digest, "size": present[name].stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "version": version, "card_sha256": listed[CARD_FILE], "files": files}
    return Verified(version, "", CHECKSUMS_FILE, manifest)
