"""The demo's model (serve_app/demo.py, ``ensure_demo_model``): on a fresh state folder it makes the local model
signing key pair, then installs the shipped model trained on real X-rays, checked and signed, and promotes it."""

import stat
from pathlib import Path

from serve_app.demo import ensure_demo_model
from xraylab.registry import ShippedRegistry, open_registry
from xraylab.settings import Settings, project_root


def test_the_demo_makes_its_signing_key_and_installs_the_shipped_model_signed(tmp_path: Path) -> None:
    settings = Settings(STATE_DIR=tmp_path, MODEL_REGISTRY="", MODEL_DIR=None, MODEL_SIGNING_KEY=None,
                        MODEL_TRUSTED_KEYS=None, SHIPPED_MODELS=project_root() / "models")
    version = ShippedRegistry(project_root() / "models").resolve_version()
    assert ensure_demo_model(settings) == f"{version}: imported, promoted"
    signing_key = settings.MODEL_SIGNING_KEY
    assert signing_key is not None and signing_key.relative_to(tmp_path.resolve()) == Path("keys/model-signing.key")
    assert stat.S_IMODE(signing_key.stat().st_mode) == 0o600
    registry = open_registry(settings)
    assert registry.promoted_version() == version
    assert registry.verify(version).key_name == "demo training key"
    key = signing_key.read_bytes()
    assert ensure_demo_model(settings) == f"{version}: already installed"  # and the key is kept
    assert signing_key.read_bytes() == key
