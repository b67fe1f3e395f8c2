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
                assert getattr(deployment, option) == value, (entry["name"], option)
