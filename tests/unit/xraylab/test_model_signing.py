"""Signed model versions (xraylab/registry/signing.py): what training publishes is signed with its key, and a
version that no trusted key signed, or whose files changed since, is never loaded, promoted or cached, whoever
wrote it into the registry."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.cli import xraylab
from xraylab.imaging import PreprocessSpec
from xraylab.registry import (
    FolderRegistry,
    ModelCard,
    ModelKeys,
    S3Registry,
    ShippedRegistry,
    SigningKeyError,
    UntrustedModelError,
)
from xraylab.registry.signing import (
    generate_key_pair,
    read_trusted_keys,
    sha256_file,
    write_checksums,
)
from xraylab.settings import project_root

pytestmark = pytest.mark.usefixtures("model_keys")  # tests/conftest.py: the session's pair, in the settings
SPEC = PreprocessSpec(height=16, width=16)


class FakeModel:
    """What publishing needs of a model: ``save``. Its bytes are never loaded (every test here refuses first)."""

    def __init__(self, data: bytes = b"weights") -> None:
        self.data = data

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.data)


def tiny_model():
    import keras

    return keras.Sequential([keras.Input((SPEC.height, SPEC.width, 1)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(1, activation="sigmoid")])


def card(version: str, trained_on: str = "synthetic") -> ModelCard:
    return ModelCard(version=version, architecture="test", preprocess=SPEC.to_dict(),
                     bands={"pneumonia": 0.8, "unsure": 0.6}, trained_on=trained_on, created_at="2026-01-01T00:00:00")


def other_keys(tmp_path: Path, trusted: Path) -> ModelKeys:
    """A second pair whose private key signs, checked against ``trusted`` (which does not hold it)."""
    own = ModelKeys(tmp_path / "other" / "signing.key", tmp_path / "other" / "trusted.pub")
    generate_key_pair(own, "someone else")
    return ModelKeys(own.signing_key, trusted)


def unsigned_upload(registry: FolderRegistry | S3Registry, version: str, tmp_path: Path) -> None:
    """What an uploader with write access to the store can do: a whole version, files and manifest, no key."""
    folder = tmp_path / f"upload-{version}"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"a model nobody signed")
    (folder / "card.json").write_text(card(version).to_json())
    registry.publish_dir(folder, version)


def test_publish_signs_and_load_checks_the_signature(tmp_path: Path, model_keys: ModelKeys) -> None:
    import numpy as np

    registry = FolderRegistry(tmp_path)
    model = tiny_model()
    registry.publish(model, card("v1"), promote_it=True, extra_files={"reference.npz": b"ref"})
    signature = json.loads((tmp_path / "v1" / "signature.json").read_text())
    assert signature["algorithm"] == "ed25519" and signature["key_id"].startswith("sha256:")
    manifest = signature["manifest"]
    assert manifest["version"] == "v1" and set(manifest["files"]) == {"model.keras", "card.json", "reference.npz"}
    assert manifest["card_sha256"] == sha256_file(tmp_path / "v1" / "card.json")
    assert manifest["files"]["model.keras"]["size"] == (tmp_path / "v1" / "model.keras").stat().st_size
    verified = registry.verify("v1")
    assert verified.key_name == "test training key" and verified.key_id == signature["key_id"]
    loaded, loaded_card = registry.load_model()
    assert loaded_card.version == "v1"
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)


def test_a_version_written_without_the_key_is_refused(tmp_path: Path) -> None:
    registry = FolderRegistry(tmp_path / "models")
    unsigned_upload(registry, "forged", tmp_path)
    with pytest.raises(UntrustedModelError, match="'forged'.*unsigned") as refused:
        registry.load_model("forged")
    assert refused.value.version == "forged" and "unsigned" in refused.value.reason
    (tmp_path / "models" / "PROMOTED").write_text("forged\n")  # and its promotion, written by hand
    with pytest.raises(UntrustedModelError):
        registry.load_model()
    image = tmp_path / "a.jpeg"
    image.write_bytes(b"not scored: the model is refused first")
    scored = xraylab("predict", str(image), "--registry", str(registry.root))
    assert scored.returncode == 2 and "unsigned" in scored.stderr and not scored.stdout
    # Another version's signature copied beside it does not make it signed either.
    registry.publish(FakeModel(), card("good"))
    shutil.copyfile(tmp_path / "models" / "good" / "signature.json", tmp_path / "models" / "forged" / "signature.json")
    with pytest.raises(UntrustedModelError, match="signed as version 'good'"):
        registry.local_dir("forged")


def test_promote_refuses_a_version_no_trusted_key_signed(tmp_path: Path) -> None:
    registry = FolderRegistry(tmp_path / "models")
    registry.publish(FakeModel(), card("good"), promote_it=True)
    unsigned_upload(registry, "forged", tmp_path)
    with pytest.raises(UntrustedModelError, match="unsigned"):
        registry.promote("forged")
    assert registry.promoted_version() == "good"
    cli = xraylab("models", "promote", "forged", "--registry", str(registry.root))
    assert cli.returncode == 2 and "not trusted" in cli.stderr and registry.promoted_version() == "good"
    checked = xraylab("models", "verify", "--registry", str(registry.root))
    assert checked.returncode == 1, checked.stderr
    assert checked.stdout.splitlines() == [
        "REFUSED  forged  unsigned (no signature.json): it was not published with the training key",
        f"ok       good  signed by test training key {registry.verify('good').key_id}"]


@pytest.mark.parametrize("change", ["weights", "card", "added", "removed", "renamed"])
def test_a_changed_version_is_refused(tmp_path: Path, change: str) -> None:
    registry = FolderRegistry(tmp_path / "models")
    registry.publish(FakeModel(b"weights as trained"), card("v1"), extra_files={"metrics.json": b"{}"})
    folder, version = tmp_path / "models" / "v1", "v1"
    if change == "weights":  # same size, other bytes
        (folder / "model.keras").write_bytes(b"weights as swapped")
        expected = "file model.keras differs"
    elif change == "card":
        (folder / "card.json").write_text(card("v1", trained_on="a real hospital").to_json())
        expected = "file card.json differs"
    elif change == "added":
        (folder / "extra.bin").write_bytes(b"x")
        expected = "file extra.bin was not signed"
    elif change == "removed":
        (folder / "metrics.json").unlink()
        expected = "signed file metrics.json is missing"
    else:  # the whole signed version published again under another name
        shutil.copytree(folder, tmp_path / "models" / "v2")
        version, expected = "v2", "signed as version 'v1'"
    with pytest.raises(UntrustedModelError, match=expected):
        registry.load_model(version)


def test_a_signature_by_an_untrusted_key_or_a_forged_one_is_refused(tmp_path: Path, model_keys: ModelKeys) -> None:
    theirs = FolderRegistry(tmp_path / "models", keys=other_keys(tmp_path, model_keys.trusted_keys))
    theirs.publish(FakeModel(), card("theirs"))
    ours = FolderRegistry(tmp_path / "models")
    with pytest.raises(UntrustedModelError, match="signed by key sha256:[0-9a-f]{64}, which is not trusted"):
        ours.load_model("theirs")
    # Our key id on a manifest we did not sign (their signature, or a manifest changed to fit changed files).
    ours.publish(FakeModel(), card("ours"))
    path = tmp_path / "models" / "ours" / "signature.json"
    doc = json.loads(path.read_text())
    (tmp_path / "models" / "ours" / "model.keras").write_bytes(b"swapped")
    doc["manifest"]["files"]["model.keras"] = {"sha256": sha256_file(tmp_path / "models" / "ours" / "model.keras"),
                                               "size": 7}
    path.write_text(json.dumps(doc))
    with pytest.raises(UntrustedModelError, match="bad signature"):
        ours.load_model("ours")
    doc["signature"] = base64.b64encode(b"\0" * 64).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(UntrustedModelError, match="bad signature"):
        ours.local_dir("ours")
    path.write_text("not json")
    with pytest.raises(UntrustedModelError, match="malformed"):
        ours.local_dir("ours")


def test_nothing_is_trusted_without_the_trusted_keys(tmp_path: Path, model_keys: ModelKeys) -> None:
    FolderRegistry(tmp_path / "models").publish(FakeModel(), card("v1"))
    nobody = FolderRegistry(tmp_path / "models", keys=ModelKeys(model_keys.signing_key, tmp_path / "none.pub"))
    with pytest.raises(UntrustedModelError, match="no trusted keys"):
        nobody.local_dir("v1")


def test_publishing_without_the_key_fails_naming_the_setting(tmp_path: Path, model_keys: ModelKeys) -> None:
    keyless = FolderRegistry(tmp_path / "models", keys=ModelKeys(tmp_path / "nokey", model_keys.trusted_keys))
    saved: list[Path] = []

    class Recording(FakeModel):
        def save(self, path: Path) -> None:
            saved.append(path)

    with pytest.raises(SigningKeyError, match="XRAYLAB_MODEL_SIGNING_KEY"):
        keyless.publish(Recording(), card("v1"))
    assert saved == [] and keyless.versions() == [], "fails before anything is saved"
    with pytest.raises(SigningKeyError, match="XRAYLAB_MODEL_SIGNING_KEY"):
        keyless.import_dir(_signed_copy(tmp_path, "v2"))
    open_key = tmp_path / "open.key"
    shutil.copyfile(model_keys.signing_key, open_key)
    os.chmod(open_key, 0o644)
    open_to_others = FolderRegistry(tmp_path / "m", keys=ModelKeys(open_key, model_keys.trusted_keys))
    with pytest.raises(SigningKeyError, match="open to others"):
        open_to_others.publish(FakeModel(), card("v"))
    cli = xraylab("train", "bootstrap", env={"XRAYLAB_MODEL_DIR": str(tmp_path / "empty"),
                                             "XRAYLAB_MODEL_SIGNING_KEY": str(tmp_path / "nokey")})
    assert cli.returncode == 2 and "XRAYLAB_MODEL_SIGNING_KEY" in cli.stderr and "keygen" in cli.stderr


def _signed_copy(tmp_path: Path, version: str) -> Path:
    FolderRegistry(tmp_path / "elsewhere").publish(FakeModel(), card(version))
    return tmp_path / "elsewhere" / version


def test_import_signs_with_the_local_key_and_refuses_a_changed_signed_copy(tmp_path: Path, model_keys: ModelKeys
                                                                          ) -> None:
    theirs = FolderRegistry(tmp_path / "theirs", keys=other_keys(tmp_path, model_keys.trusted_keys))
    theirs.publish(FakeModel(), card("from-colleague"))
    ours = FolderRegistry(tmp_path / "ours")
    ours.import_dir(tmp_path / "theirs" / "from-colleague")  # the importer vouches: signed anew with our key
    assert ours.verify("from-colleague").key_name == "test training key"
    theirs.publish(FakeModel(), card("v2"))
    (tmp_path / "theirs" / "v2" / "model.keras").write_bytes(b"changed in transit")
    with pytest.raises(UntrustedModelError, match="file model.keras differs"):
        ours.import_dir(tmp_path / "theirs" / "v2")
    assert "v2" not in ours.versions()


def test_keygen_is_idempotent_and_keeps_the_private_key_to_its_owner(tmp_path: Path) -> None:
    keys = ModelKeys(tmp_path / "state" / "keys" / "model-signing.key", tmp_path / "state" / "keys" / "trusted.pub")
    first = generate_key_pair(keys, "training")
    assert first.created and first.trusted_added
    assert stat.S_IMODE(keys.signing_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.signing_key.parent.stat().st_mode) == 0o700
    pem, trusted = keys.signing_key.read_bytes(), keys.trusted_keys.read_text()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = generate_key_pair(keys, "training")
    assert again.key_id == first.key_id and not again.created and not again.trusted_added
    assert keys.signing_key.read_bytes() == pem and keys.trusted_keys.read_text() == trusted
    assert list(read_trusted_keys(keys.trusted_keys)) == [first.key_id]
    # the command, twice: one key, never overwritten; the trusted file's line put back when it was lost
    env = {"XRAYLAB_MODEL_SIGNING_KEY": str(keys.signing_key), "XRAYLAB_MODEL_TRUSTED_KEYS": str(keys.trusted_keys)}
    keys.trusted_keys.write_text("# emptied\n")
    made = xraylab("models", "keygen", env=env)
    assert made.returncode == 0 and first.key_id in made.stdout and "exists (kept)" in made.stdout, made.stderr
    assert keys.signing_key.read_bytes() == pem and list(read_trusted_keys(keys.trusted_keys)) == [first.key_id]
    assert xraylab("models", "keygen", "--check", env=env).returncode == 0
    fresh = {"XRAYLAB_MODEL_SIGNING_KEY": str(tmp_path / "k2" / "signing.key"),
             "XRAYLAB_MODEL_TRUSTED_KEYS": str(tmp_path / "k2" / "trusted.pub")}
    missing = xraylab("models", "keygen", "--check", env=fresh)  # what cluster/local/keys.sh status runs
    assert missing.returncode == 1 and "XRAYLAB_MODEL_SIGNING_KEY" in missing.stderr
    assert not (tmp_path / "k2").exists()
    assert "created" in xraylab("models", "keygen", env=fresh).stdout
    assert "exists (kept)" in xraylab("models", "keygen", env=fresh).stdout
    assert stat.S_IMODE((tmp_path / "k2" / "signing.key").stat().st_mode) == 0o600


def test_the_trusted_keys_file_has_comments_and_refuses_a_bad_line(tmp_path: Path, model_keys: ModelKeys) -> None:
    line = next(x for x in model_keys.trusted_keys.read_text().splitlines() if x.startswith("ed25519 "))
    path = tmp_path / "trusted.pub"
    path.write_text(f"# the keys we trust\n\n{line}\n")
    assert [k.name for k in read_trusted_keys(path).values()] == ["test training key"]
    path.write_text(f"{line}\nrsa AAAA someone\n")
    with pytest.raises(ValueError, match=r"trusted.pub:2"):
        read_trusted_keys(path)
    path.write_text("ed25519 AAAA short\n")
    with pytest.raises(ValueError, match="32 bytes"):
        read_trusted_keys(path)


# -- the shipped models -------------------------------------------------------------------------------------

def _shipped(tmp_path: Path) -> ShippedRegistry:
    """A copy of a version as models/ holds it: its files and their SHA256SUMS, no signature."""
    FolderRegistry(tmp_path / "trained").publish(FakeModel(), card("real-1", trained_on="Kermany 2018"))
    root = tmp_path / "shipped"
    root.mkdir()
    shutil.copytree(tmp_path / "trained" / "real-1", root / "real-1", ignore=shutil.ignore_patterns("signature.json"))
    write_checksums(root / "real-1")
    (root / "PROMOTED").write_text("real-1\n")
    return ShippedRegistry(root)


def test_install_shipped_checks_the_committed_checksums_and_signs(tmp_path: Path) -> None:
    shipped = _shipped(tmp_path)
    assert shipped.verify("real-1").key_name == "SHA256SUMS"
    registry = FolderRegistry(tmp_path / "registry")
    installed, done = registry.install_shipped(shipped)
    assert installed.version == "real-1" and done == ["imported", "promoted"]
    assert registry.verify("real-1").key_name == "test training key"
    assert not (tmp_path / "registry" / "real-1" / "SHA256SUMS").exists()
    # A changed shipped file is refused before anything is installed.
    (shipped.root / "real-1" / "model.keras").write_bytes(b"swapped")
    fresh = FolderRegistry(tmp_path / "fresh")
    with pytest.raises(UntrustedModelError, match="file model.keras differs from its committed checksum"):
        fresh.install_shipped(shipped)
    assert fresh.versions() == []
    # The shipped folder as a registry of its own: nothing published, nothing promoted there.
    with pytest.raises(PermissionError):
        shipped.publish_dir(tmp_path / "trained" / "real-1", "real-2")


def test_install_shipped_refuses_an_unsigned_copy_installed_before(tmp_path: Path) -> None:
    shipped = _shipped(tmp_path)
    registry = FolderRegistry(tmp_path / "registry")
    registry.publish_dir(shipped.root / "real-1", "real-1")  # as installed before versions were signed
    with pytest.raises(UntrustedModelError, match="delete it from the registry and install it again"):
        registry.install_shipped(shipped)


def test_the_committed_shipped_model_matches_its_checksums() -> None:
    shipped = ShippedRegistry(project_root() / "models")
    version = shipped.resolve_version()
    assert shipped.verify(version).manifest["files"]["model.keras"]["size"] > 0
    assert shipped.local_dir(version) == project_root() / "models" / version


def test_a_plain_folder_registry_does_not_take_checksums_for_a_signature(tmp_path: Path) -> None:
    shipped = _shipped(tmp_path)
    with pytest.raises(UntrustedModelError, match="unsigned"):
        FolderRegistry(shipped.root).local_dir("real-1")


# -- the S3 registry's per-node cache -----------------------------------------------------------------------

class FakeS3:
    """The calls S3Registry makes, on a dict: what an uploader with write access to the bucket can write."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        from botocore.exceptions import ClientError

        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:  # noqa: N803
        self.objects[Bucket, Key] = bytes(Body)

    def upload_file(self, filename: str, bucket: str, key: str) -> None:
        self.objects[bucket, key] = Path(filename).read_bytes()

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        Path(filename).write_bytes(self.objects[bucket, key])

    def get_paginator(self, _name: str) -> FakeS3:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:  # noqa: N803
        return [{"Contents": [{"Key": k} for b, k in sorted(self.objects) if b == Bucket and k.startswith(Prefix)]}]


def test_the_s3_cache_takes_no_version_no_trusted_key_signed(tmp_path: Path) -> None:
    s3 = FakeS3()
    publisher = S3Registry(s3, "s3://models/prod", tmp_path / "training")
    publisher.publish(FakeModel(), card("good"), promote_it=True)
    node = S3Registry(s3, "s3://models/prod", tmp_path / "node")
    assert node.verify("good").key_name == "test training key"
    assert (node.local_dir("good") / "signature.json").is_file()
    unsigned_upload(node, "forged", tmp_path)  # files and a manifest whose hashes hold, but no signature
    s3.put_object(Bucket="models", Key="prod/PROMOTED", Body=b"forged\n")
    with pytest.raises(UntrustedModelError, match="'forged'.*unsigned"):
        node.load_model()
    assert not (node.cache / "versions" / "forged").exists(), "never cached"
    assert [p.name for p in (node.cache / "versions").iterdir()] == ["good"], "no staging folder left"
    with pytest.raises(UntrustedModelError):
        node.promote("forged")
    # A cached version changed on the node afterwards is refused too: the cache is checked as it is read.
    (node.cache / "versions" / "good" / "model.keras").write_bytes(b"swapped")
    with pytest.raises(UntrustedModelError, match="model.keras differs"):
        node.load_model("good")
