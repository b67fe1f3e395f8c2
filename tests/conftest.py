"""Shared fixtures. Services are started by the test command (scripts/test.sh -> cluster/local/up.sh);
a test that needs one and cannot reach it fails, it never skips."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from xraylab.settings import Settings, load_settings

# Serve's throughput mode (serve_app.SERVE_ENV) serves HTTP from the Ingress replica itself, which on shutdown
# drains for 30 s by default so that a load balancer can stop sending it requests. The tests' pipelines have
# no balancer in front: 1 s, set before any process imports Ray Serve (it reads it then), saves ~30 s per
# pipeline stopped. Production keeps the default.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def model_key_pair(tmp_path_factory: pytest.TempPathFactory):  # -> xraylab.registry.ModelKeys
    """A model signing key pair of the test session's own (xraylab.registry.signing), trusted by itself."""
    from xraylab.registry.signing import ModelKeys, generate_key_pair

    folder = tmp_path_factory.mktemp("model-keys") / "keys"
    keys = ModelKeys(folder / "model-signing.key", folder / "model-trusted.pub")
    generate_key_pair(keys, "test training key")
    return keys


@pytest.fixture()
def model_keys(model_key_pair, monkeypatch: pytest.MonkeyPatch):  # -> xraylab.registry.ModelKeys
    """``model_key_pair`` as the settings' XRAYLAB_MODEL_SIGNING_KEY and XRAYLAB_MODEL_TRUSTED_KEYS for one test
    (and the commands it runs): what publishes signs with it, what loads trusts it."""
    monkeypatch.setenv("XRAYLAB_MODEL_SIGNING_KEY", str(model_key_pair.signing_key))
    monkeypatch.setenv("XRAYLAB_MODEL_TRUSTED_KEYS", str(model_key_pair.trusted_keys))
    return model_key_pair


@pytest.fixture()
def s3(settings: Settings):
    from xraylab.storage import make_s3_client

    return make_s3_client(settings.s3_endpoint(None, "admin"))


@pytest.fixture()
def bucket(s3):
    """A bucket of the test's own, emptied and deleted afterwards (in SeaweedFS each bucket is a collection
    with volumes of its own: left behind, they pile up run after run)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=name)
    except Exception:  # a test that stopped the store leaves its bucket behind: not a failure
        pass


@pytest.fixture(scope="session")
def mariadb(settings: Settings):
    """The project's MariaDB, migrated by the tests themselves (as the demo does)."""
    from xraylab.db.session import Database, upgrade_schema

    db = Database(settings.database_url("mariadb"))
    upgrade_schema(db.engine)
    yield db
    db.dispose()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with the session's own status once pytest has said everything. The tests run Ray drivers,
    TensorFlow and Kafka clients in this process, and their native threads can crash the interpreter's own
    teardown after the last test: seen once here, a SIGSEGV after "179 passed" turned a green run red."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
