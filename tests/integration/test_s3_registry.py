"""The model registry in S3 (SeaweedFS with SigV4): publish, promote and load from another node's cache,
versions whole or not at all, and ``xraylab models list|promote|import`` against it."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.cli import xraylab
from xraylab.imaging import PreprocessSpec
from xraylab.registry import FolderRegistry, ModelCard, ModelNotFoundError, S3Registry
from xraylab.registry.s3 import MANIFEST_FILE, parse_s3_location

pytestmark = pytest.mark.integration
SPEC = PreprocessSpec(height=16, width=16)


def tiny_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((SPEC.height, SPEC.width, 1)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(1, activation="sigmoid")])


def card(version: str, created: str = "2026-12-01T00:00:00") -> ModelCard:
    return ModelCard(version=version, architecture="test", preprocess=SPEC.to_dict(),
                     bands={"pneumonia": 0.8, "unsure": 0.6}, created_at=created)


def test_locations_are_parsed_or_refused() -> None:
    assert parse_s3_location("s3://models") == ("models", "")
    assert parse_s3_location("s3://models/xraylab/prod/") == ("models", "xraylab/prod/")
    for bad in ("models", "s3://", "s3://UPPER/x", "http://models/x"):
        with pytest.raises(ValueError, match="expected s3://BUCKET"):
            parse_s3_location(bad)


def test_a_model_published_on_one_node_loads_on_another(s3, bucket, tmp_path: Path) -> None:
    first = S3Registry(s3, f"s3://{bucket}/registry", tmp_path / "node1")
    second = S3Registry(s3, f"s3://{bucket}/registry", tmp_path / "node2")  # another node: its own cache
    with pytest.raises(ModelNotFoundError):
        second.resolve_version()
    model = tiny_model()
    first.publish(model, card("v1", "2026-12-01T00:00:00"), extra_files={"reference.npz": b"ref"})
    first.publish(tiny_model(1), card("v2", "2026-12-02T00:00:00"))
    assert second.versions() == ["v1", "v2"] and second.resolve_version() == "v2"  # newest, none promoted
    assert second.promoted_version() is None
    first.promote("v1")
    assert second.promoted_version() == "v1" and second.resolve_version() == "v1"
    loaded, loaded_card = second.load_model()
    assert loaded_card.version == "v1" and loaded_card.synthetic
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)
    cached = second.local_dir("v1")
    assert cached.is_relative_to(tmp_path / "node2") and (cached / "reference.npz").read_bytes() == b"ref"
    with pytest.raises(FileExistsError):
        second.publish(tiny_model(), card("v1"))
    with pytest.raises(ModelNotFoundError):
        second.promote("v3")
    with pytest.raises(ValueError):
        second.promote("../escape")
    assert second.promoted_version() == "v1"


def test_a_half_published_version_is_invisible_and_a_changed_file_is_refused(s3, bucket, tmp_path: Path) -> None:
    registry = S3Registry(s3, f"s3://{bucket}", tmp_path / "cache")
    # A publisher that died before its manifest: files, but no version.
    s3.put_object(Bucket=bucket, Key="v0/model.keras", Body=b"half")
    s3.put_object(Bucket=bucket, Key="v0/card.json", Body=card("v0").to_json().encode())
    assert registry.versions() == []
    with pytest.raises(ModelNotFoundError):
        registry.local_dir("v0")
    with pytest.raises(ModelNotFoundError):
        registry.promote("v0")
    # A whole version whose model file is replaced afterwards: the manifest's digest refuses it.
    registry.publish(tiny_model(), card("v1"))
    upload = json.loads(s3.get_object(Bucket=bucket, Key=f"v1/{MANIFEST_FILE}")["Body"].read())["upload"]
    s3.put_object(Bucket=bucket, Key=f"v1/{upload}/model.keras", Body=b"not the model that was published")
    with pytest.raises(ValueError, match="does not match its manifest"):
        registry.local_dir("v1")
    assert not any(p.name == "v1" for p in (tmp_path / "cache").rglob("v1") if p.is_dir())
    # A manifest naming a file outside the version (or missing a digest) is refused, not followed; the other
    # versions stay listed.
    registry.publish(tiny_model(), card("v2"))
    for files in ({"card.json": {"size": 1, "sha256": "0" * 64}, "../../escape": {"size": 1, "sha256": "0" * 64}},
                  {"card.json": {"size": 1}}):
        s3.put_object(Bucket=bucket, Key=f"v3/{MANIFEST_FILE}", Body=json.dumps({"upload": "u", "files": files}))
        with pytest.raises(ValueError, match="is corrupt"):
            S3Registry(s3, f"s3://{bucket}", tmp_path / "other").local_dir("v3")
    assert [c.version for c in S3Registry(s3, f"s3://{bucket}", tmp_path / "other").list_cards()] == ["v1", "v2"]
    assert not (tmp_path / "escape").exists()


def test_two_publishers_of_one_version_cannot_mix_their_files(s3, bucket, tmp_path: Path) -> None:
    """Both upload under ids of their own; the manifest is written only if none exists (If-None-Match)."""
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        try:
            S3Registry(s3, f"s3://{bucket}", tmp_path / f"p{n}").publish(tiny_model(n), card("same"))
        except FileExistsError as exc:
            errors.append(exc)

    publishers = [threading.Thread(target=publish, args=(n,)) for n in range(2)]
    for t in publishers:
        t.start()
    for t in publishers:
        t.join(60)
    assert len(errors) == 1, "one publisher wins, the other is told the version exists"
    loaded, loaded_card = S3Registry(s3, f"s3://{bucket}", tmp_path / "reader").load_model("same")
    assert loaded_card.version == "same"


def test_readers_never_see_a_version_half_there(s3, bucket, tmp_path: Path) -> None:
    """Readers on other 'nodes' list and load every version they see while versions are being published."""
    writer = S3Registry(s3, f"s3://{bucket}/r", tmp_path / "writer")
    errors: list[BaseException] = []
    seen: set[str] = set()
    done = threading.Event()

    def read(n: int) -> None:
        reader = S3Registry(s3, f"s3://{bucket}/r", tmp_path / f"reader{n}")
        while not done.is_set():
            try:
                for version in reader.versions():
                    reader.read_card(version)
                    assert (reader.local_dir(version) / "model.keras").stat().st_size > 0
                    seen.add(version)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)
                return

    readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for t in readers:
        t.start()
    for i in range(4):
        writer.publish(tiny_model(i), card(f"v{i}"), extra_files={"reference.npz": bytes(200_000)})
    done.set()
    for t in readers:
        t.join(30)
    assert errors == []
    assert seen <= {f"v{i}" for i in range(4)} and seen


@pytest.fixture()
def registry_bucket(s3):
    """A bucket named as the stack's registry identities may use (xray-models*), made by the admin."""
    name = f"xray-models-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def test_models_commands_against_s3_and_a_folder(s3, registry_bucket, tmp_path: Path) -> None:
    bucket = registry_bucket
    folder = FolderRegistry(tmp_path / "models")
    folder.publish(tiny_model(), card("b1", "2026-12-01T00:00:00"))
    folder.publish(tiny_model(1), card("b2", "2026-12-02T00:00:00"))
    location = f"s3://{bucket}/prod"
    env = {"XRAYLAB_MODEL_REGISTRY": location}

    imported = xraylab("models", "import", str(folder.root), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "2 of 2 versions imported" in imported.stdout
    again = xraylab("models", "import", str(folder.root / "b1"), "--promote", env=env)
    assert again.returncode == 0 and "skipped" in again.stdout and "0 of 1" in again.stdout
    promoted = xraylab("models", "promote", "b2", env=env)
    assert promoted.returncode == 0 and f"promoted b2 in {location}/" in promoted.stdout
    listed = xraylab("models", "list", env=env)
    assert [line.split()[:2] for line in listed.stdout.splitlines()] == [["b1", "test"], ["*", "b2"]]
    in_folder = xraylab("models", "list", "--registry", str(folder.root), env=env).stdout  # the folder too
    assert [line.split()[0] for line in in_folder.splitlines()] == ["b1", "b2"]
    assert S3Registry(s3, location, tmp_path / "c").promoted_version() == "b2"
    manifest = s3.get_object(Bucket=bucket, Key=f"prod/b1/{MANIFEST_FILE}")["Body"].read()
    assert b"model.keras" in manifest and b"sha256" in manifest

    for args, message in [(("promote", "nope"), "not found"),
                          (("import", str(tmp_path / "missing")), "is not a folder"),
                          (("import", str(tmp_path)), "holds no model version"),
                          (("list", "--registry", "s3://Bad_Bucket"), "expected s3://BUCKET")]:
        result = xraylab("models", *args, env=env)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
