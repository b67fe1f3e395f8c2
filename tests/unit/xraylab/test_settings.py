from pathlib import Path

import pytest

from xraylab.bands import DEFAULT_BANDS
from xraylab.settings import MissingCredentialsError, Settings, UnknownEndpointError, load_settings

DEFAULTS = Path(__file__).resolve().parents[3] / "cluster" / "local" / "defaults.env"


def test_port_defaults_match_the_stack_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in DEFAULTS.read_text().splitlines():
        if line and not line.startswith("#"):
            monkeypatch.delenv(line.split("=")[0], raising=False)
    settings = Settings()
    for line in DEFAULTS.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert str(getattr(settings, key.removeprefix("XRAYLAB_"))) == value, key


def test_endpoints_by_id(tmp_path: Path) -> None:
    s = Settings(STATE_DIR=tmp_path, S3_ACCESS_KEY="a", S3_SECRET_KEY="b",
                 S3_EXTRA_ENDPOINTS='{"ceph-east": {"url": "http://ceph:7480", "access_key": "x", "secret_key": "y"}}')
    assert s.s3_endpoint(None).url == s.S3_ENDPOINT_URL
    assert s.s3_endpoint("ceph-east").url == "http://ceph:7480"
    with pytest.raises(UnknownEndpointError):
        s.s3_endpoint("unknown")


def test_sqlite_is_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XRAYLAB_DATABASE_URL", raising=False)
    monkeypatch.delenv("XRAYLAB_MARIADB_URL", raising=False)
    s = Settings(STATE_DIR=tmp_path)
    assert f"sqlite:///{tmp_path.resolve() / 'xraylab.db'}" == s.DATABASE_URL
    with pytest.raises(ValueError, match="MARIADB_URL"):
        s.database_url("mariadb")


REAL = {"S3_ACCESS_KEY": "pipeline-access-key", "S3_SECRET_KEY": "a-real-secret-value"}


def test_production_rejects_placeholder_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(STATE_DIR=tmp_path, ENV="production", S3_SECRET_KEY="changethis")
    Settings(STATE_DIR=tmp_path, ENV="production", **REAL)
    extra = '{"east": {"url": "http://ceph:7480", "access_key": "a-key", "secret_key": "changethis"}}'
    for name, value in (("S3_ACCESS_KEY", "changethis"), ("S3_UPLOAD_SECRET_KEY", "REPLACE"),
                        ("KAFKA_INGEST_PASSWORD", "changeme"), ("ALERT_WEBHOOK_URL", "https://changethis"),
                        ("S3_EXTRA_ENDPOINTS", extra), ("DATABASE_URL", "mysql+pymysql://xraylab:changethis@db/x"),
                        ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")):
        with pytest.raises(ValueError, match="placeholder secrets in production") as caught:
            Settings(STATE_DIR=tmp_path, ENV="production", **{**REAL, name: value})
        assert name in str(caught.value) or "endpoint 'east'" in str(caught.value), name


def test_each_s3_job_has_its_own_identity(tmp_path: Path) -> None:
    east = ('{"east": {"url": "http://ceph:7480", "access_key": "a", "secret_key": "b", "buckets": ["films"], '
            '"jobs": {"export": {"access_key": "e", "secret_key": "f"}}}}')
    s = Settings(STATE_DIR=tmp_path, **REAL, S3_UPLOAD_ACCESS_KEY="up", S3_UPLOAD_SECRET_KEY="up-secret",
                 S3_EXTRA_ENDPOINTS=east)
    assert s.s3_endpoint(None).access_key.get_secret_value() == "pipeline-access-key"
    assert s.s3_endpoint(None, "upload").secret_key.get_secret_value() == "up-secret"
    with pytest.raises(MissingCredentialsError, match="XRAYLAB_S3_PUBLISH_ACCESS_KEY"):
        s.s3_endpoint(None, "publish")
    with pytest.raises(MissingCredentialsError, match="XRAYLAB_S3_ACCESS_KEY"):  # a job this process is not given
        Settings(STATE_DIR=tmp_path, ENV="production", S3_ACCESS_KEY="", S3_SECRET_KEY="").s3_endpoint(None)
    assert s.s3_endpoint("east", "export").access_key.get_secret_value() == "e"
    with pytest.raises(MissingCredentialsError, match="registry"):
        s.s3_endpoint("east", "registry")


def test_events_may_name_only_the_configured_source_buckets(tmp_path: Path) -> None:
    s = Settings(STATE_DIR=tmp_path, S3_SOURCE_BUCKETS="xray-images, test-*", MODEL_REGISTRY="s3://test-models/r",
                 S3_EXTRA_ENDPOINTS='{"east": {"url": "http://ceph:7480", "access_key": "a", "secret_key": "b", '
                                    '"buckets": ["films"]}}')
    assert s.source_allowed(None, "xray-images") and s.source_allowed("local", "test-1234")
    assert s.source_allowed("east", "films") and not s.source_allowed("east", "xray-images")
    assert not s.source_allowed(None, "xray-research"), "the research bucket is never a source"
    assert not s.source_allowed(None, "test-models"), "nor the model registry's, even under a source prefix"
    assert not s.source_allowed("nowhere", "xray-images")
    assert Settings(STATE_DIR=tmp_path, S3_SOURCE_BUCKETS="", S3_BUCKET="films").source_buckets() == ["films"]


def test_worker_env_carries_no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XRAYLAB_S3_SECRET_KEY", "topsecret")
    monkeypatch.setenv("XRAYLAB_DATABASE_URL", "mysql+pymysql://u:pw-of-db@h/db")
    monkeypatch.setenv("XRAYLAB_KAFKA_TOPIC", "t1")
    # Secrets under names that say nothing: the extra endpoints' keys, a copy of a secret, a URL's credentials.
    monkeypatch.setenv("XRAYLAB_S3_EXTRA_ENDPOINTS",
                       '{"east": {"url": "http://ceph:7480", "access_key": "east-access", "secret_key": "east-sec"}}')
    monkeypatch.setenv("XRAYLAB_SITE_NOTE", "copy of topsecret")
    monkeypatch.setenv("XRAYLAB_SOME_ENDPOINT", "https://svc:hunter22@example.org/x")
    env = load_settings(STATE_DIR=tmp_path).env_for_workers()
    assert env["XRAYLAB_KAFKA_TOPIC"] == "t1"
    for leak in ("topsecret", "pw-of-db", "east-sec", "east-access", "hunter22"):
        assert leak not in str(env), leak


def test_session_cookie_is_secure_in_production_unless_told(tmp_path: Path) -> None:
    assert Settings(STATE_DIR=tmp_path).COOKIE_SECURE is False
    production = Settings(STATE_DIR=tmp_path, ENV="production", **REAL)
    assert production.COOKIE_SECURE is True
    told = Settings(STATE_DIR=tmp_path, ENV="production", **REAL, COOKIE_SECURE=False)
    assert told.COOKIE_SECURE is False


def test_bands_default_once_and_are_validated(tmp_path: Path) -> None:
    assert Settings(STATE_DIR=tmp_path).bands() == DEFAULT_BANDS
    assert Settings(STATE_DIR=tmp_path, BAND_PNEUMONIA=0.9, BAND_UNSURE=0.5).bands().band(0.85) == "Unsure"
    with pytest.raises(ValueError, match="XRAYLAB_BAND"):
        Settings(STATE_DIR=tmp_path, BAND_PNEUMONIA=0.5, BAND_UNSURE=0.7)


def test_local_endpoints_follow_the_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XRAYLAB_S3_ENDPOINT_URL", "XRAYLAB_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(STATE_DIR=tmp_path, S3_PORT=28333, KAFKA_PORT=29092)
    assert (s.S3_ENDPOINT_URL, s.KAFKA_BOOTSTRAP) == ("http://127.0.0.1:28333", "127.0.0.1:29092")


def test_the_model_registry_is_the_folder_unless_an_s3_location_is_named(tmp_path: Path) -> None:
    from xraylab.registry import FolderRegistry, S3Registry, open_registry

    folder = Settings(STATE_DIR=tmp_path)
    registry = open_registry(folder)
    assert isinstance(registry, FolderRegistry) and registry.root == tmp_path.resolve() / "models"
    shared = Settings(STATE_DIR=tmp_path, MODEL_REGISTRY="s3://models/xraylab", S3_EXTRA_ENDPOINTS=(
        '{"central": {"url": "http://10.0.0.5:9000", "access_key": "a", "secret_key": "b", '
        '"jobs": {"registry": {"access_key": "serving-key", "secret_key": "s"}}}}'),
        MODEL_REGISTRY_ENDPOINT="central")
    with pytest.raises(MissingCredentialsError, match="publish"):  # this process may read models, not publish
        open_registry(shared, publish=True)
    registry = open_registry(shared)
    assert registry.client._request_signer._credentials.access_key == "serving-key"
    assert isinstance(registry, S3Registry) and registry.location == "s3://models/xraylab/"
    assert registry.client.meta.endpoint_url == "http://10.0.0.5:9000"
    assert registry.cache.is_relative_to(tmp_path.resolve() / "model-cache")
    with pytest.raises(ValueError, match="XRAYLAB_MODEL_REGISTRY must be empty"):
        Settings(STATE_DIR=tmp_path, MODEL_REGISTRY="/some/folder")
    with pytest.raises(UnknownEndpointError):
        open_registry(Settings(STATE_DIR=tmp_path, MODEL_REGISTRY="s3://models", MODEL_REGISTRY_ENDPOINT="nope"))


def test_pacs_and_research_settings_are_checked(tmp_path: Path) -> None:
    base = {"STATE_DIR": tmp_path, **REAL}
    with pytest.raises(ValueError, match="must not be the upload bucket"):
        Settings(**base, RESEARCH_BUCKET="xray-images", S3_BUCKET="xray-images")
    with pytest.raises(ValueError, match="RESEARCH_BANDS"):
        Settings(**base, RESEARCH_BANDS="Unsure,Maybe")
    with pytest.raises(ValueError, match="ORTHANC_ENDPOINT_ID"):
        Settings(**base, ORTHANC_ENDPOINT_ID="local")
    for name, value, why in (("RESEARCH_KEY", "REPLACE", "placeholder"),
                             ("ORTHANC_PASSWORD", "changethis", "placeholder"),
                             ("RESEARCH_KEY", "short-key", "shorter than 24")):
        with pytest.raises(ValueError, match=why):
            Settings(**base, ENV="production", **{name: value})
    settings = Settings(**base, RESEARCH_BANDS="Unsure, Pneumonia", RESEARCH_KEY="k" * 32, ENV="production")
    assert settings.research_bands() == ["Unsure", "Pneumonia"]
    assert settings.ORTHANC_URL == "http://127.0.0.1:18042"
