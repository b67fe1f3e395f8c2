from pathlib import Path

import yaml

from serve_app.app import AppArgs

CONFIG = Path(__file__).resolve().parents[3] / "serve_app" / "serve_config.yaml"


def test_serve_config_points_at_build_app_with_valid_args() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    [app] = config["applications"]
    assert app["import_path"] == "serve_app.app:build_app"
    args = AppArgs.model_validate(app["args"])
    assert args.database == "default" and args.classifier.max_batch_size >= 1
    assert not any("SECRET" in k or "PASSWORD" in k for k in app["runtime_env"]["env_vars"])


def test_serve_config_deployment_options_match_the_code() -> None:
    from serve_app.classifier import Classifier
    from serve_app.ingress import Ingress

    [app] = yaml.safe_load(CONFIG.read_text())["applications"]
    code = {"Ingress": Ingress, "Classifier": Classifier}
    for entry in app["deployments"]:
        deployment = code[entry["name"]]
        for option, value in entry.items():
            if option != "name":
                actual = getattr(deployment, option)
                actual = actual.model_dump() if hasattr(actual, "model_dump") else actual  # backpressure_config
                assert actual == value, (entry["name"], option)


def test_importing_the_app_sets_its_serve_env() -> None:
    import os

    import serve_app

    assert all(name in os.environ for name in serve_app.SERVE_ENV)  # FORWARDED_ALLOW_IPS is set empty
