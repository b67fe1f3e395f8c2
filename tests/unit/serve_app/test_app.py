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


def test_cluster_configs_start_ray_with_the_apps_serve_env() -> None:
    from serve_app import SERVE_ENV

    cluster = CONFIG.parents[1] / "cluster"
    service = yaml.safe_load((cluster / "kuberay" / "rayservice.yaml").read_text())["spec"]["rayClusterConfig"]
    groups = [service["headGroupSpec"], *service["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert SERVE_ENV.items() <= env.items(), container["name"]
    launcher = yaml.safe_load((cluster / "ray" / "cluster.yaml").read_text())
    commands = launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assignments = dict(word.split("=", 1) for word in command.split("ray start")[0].split())
        assert SERVE_ENV.items() <= assignments.items(), command


def test_importing_the_app_sets_its_serve_env() -> None:
    import os

    import serve_app

    assert all(os.environ.get(name) for name in serve_app.SERVE_ENV)


def test_kuberay_manifest_tunes_the_deployments_as_the_serve_config() -> None:
    [app] = yaml.safe_load(CONFIG.read_text())["applications"]
    service = yaml.safe_load((CONFIG.parents[1] / "cluster" / "kuberay" / "rayservice.yaml").read_text())
    [kuberay_app] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert kuberay_app["deployments"] == app["deployments"]
