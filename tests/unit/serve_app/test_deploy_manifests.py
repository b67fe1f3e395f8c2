"""The deployment files against the app: the `ray up` cluster config (cluster/ray/cluster.yaml) and the KubeRay
RayService with its Secret (cluster/kuberay/rayservice.yaml) parse, run the Serve config of
serve_app/serve_config.yaml (the same import path, valid AppArgs, deployments the code has, the same tuning),
start Ray with the app's Serve environment and its metrics port, and set what a cluster needs: images,
resources, a CPU and a GPU worker group under the autoscaler, credentials from a Secret, probes on /healthz."""

from pathlib import Path

import pytest
import ray
import yaml

from serve_app import SERVE_ENV
from serve_app.app import AppArgs
from xraylab.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "serve_app" / "serve_config.yaml"
KUBERAY = ROOT / "cluster" / "kuberay" / "rayservice.yaml"
LAUNCHER = ROOT / "cluster" / "ray" / "cluster.yaml"


def kuberay() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERAY.read_text())}


def groups() -> list[dict]:
    cluster = kuberay()["RayService"]["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def containers() -> list[dict]:
    return [c for group in groups() for c in group["template"]["spec"]["containers"]]


def test_kuberay_serves_the_serve_config() -> None:
    from serve_app.classifier import Classifier
    from serve_app.fetcher import Fetcher
    from serve_app.ingress import Ingress
    from serve_app.writer import Writer

    [app] = yaml.safe_load(CONFIG.read_text())["applications"]
    [kube_app] = yaml.safe_load(kuberay()["RayService"]["spec"]["serveConfigV2"])["applications"]
    assert kube_app["import_path"] == app["import_path"] == "serve_app.app:build_app"
    args = AppArgs.model_validate(kube_app["args"])
    assert args.classifier_num_gpus == 1, "the GPU group is there for the Classifier"
    names = {d.name for d in (Ingress, Classifier, Fetcher, Writer)}
    assert {d["name"] for d in kube_app["deployments"]} <= names
    assert kube_app["deployments"] == app["deployments"]
    assert kube_app["runtime_env"] == app["runtime_env"]


def test_kuberay_cluster_has_images_resources_groups_and_autoscaling() -> None:
    cluster = kuberay()["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    workers = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(workers) == {"cpu", "gpu"}
    for group in workers.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in containers():
        assert container["image"].startswith("registry.") and ":" in container["image"]
        limits = container["resources"]["limits"]
        assert limits["cpu"] and limits["memory"], container["name"]
    [gpu] = workers["gpu"]["template"]["spec"]["containers"]
    [cpu] = workers["cpu"]["template"]["spec"]["containers"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and gpu["image"].endswith("-gpu")
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_credentials_come_from_the_secret_as_an_env_file() -> None:
    docs = kuberay()
    secret = docs["Secret"]
    env_file = secret["stringData"]["xraylab.env"]
    keys = {line.split("=", 1)[0] for line in env_file.splitlines() if "=" in line}
    assert {"XRAYLAB_DATABASE_URL", "XRAYLAB_S3_ACCESS_KEY", "XRAYLAB_S3_SECRET_KEY", "XRAYLAB_KAFKA_BOOTSTRAP"} <= keys
    known = {f"XRAYLAB_{name}" for name in Settings.model_fields}
    assert keys <= known, keys - known  # every key is a setting the app reads
    for group in groups():
        spec = group["template"]["spec"]
        [volume] = spec["volumes"]
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        for container in spec["containers"]:
            env = {e["name"]: e["value"] for e in container["env"]}
            mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
            assert env["XRAYLAB_ENV_FILE"] == f"{mount['mountPath']}/xraylab.env" and mount["readOnly"]
            assert not any("SECRET" in name or "PASSWORD" in name for name in env)  # no credential in the env


def test_the_head_is_probed_on_healthz() -> None:
    head = kuberay()["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]
    [container] = head["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 8000}
    assert container["livenessProbe"]["failureThreshold"] * container["livenessProbe"]["periodSeconds"] >= 300


@pytest.mark.parametrize("source", ["kuberay", "launcher"])
def test_ray_starts_with_the_apps_serve_env_and_metrics_port(source: str) -> None:
    port = str(Settings.model_fields["RAY_METRICS_PORT"].default)
    if source == "kuberay":
        for group in groups():
            assert group["rayStartParams"]["metrics-export-port"] == port
        for container in containers():
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert SERVE_ENV.items() <= env.items(), container["name"]
        return
    launcher = yaml.safe_load(LAUNCHER.read_text())
    starts = [c for c in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assignments = dict(word.split("=", 1) for word in command.split("ray start")[0].split())
        assert SERVE_ENV.items() <= assignments.items(), command
        assert f"--metrics-export-port={port}" in command


def test_every_node_shares_the_s3_registry_and_the_classifier_prefers_a_labelled_pool() -> None:
    env_file = kuberay()["Secret"]["stringData"]["xraylab.env"]
    settings = dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["XRAYLAB_MODEL_REGISTRY"].startswith("s3://"), "a folder registry is not seen by other nodes"
    import json

    assert json.loads(settings["XRAYLAB_S3_EXTRA_ENDPOINTS"]), "one S3 endpoint per hospital"
    [kube_app] = yaml.safe_load(kuberay()["RayService"]["spec"]["serveConfigV2"])["applications"]
    prefer = AppArgs.model_validate(kube_app["args"]).classifier_prefer_labels
    gpu = next(g for g in groups() if g.get("groupName") == "gpu")
    assert f"{','.join(f'{k}={v}' for k, v in prefer.items())}" == gpu["rayStartParams"]["labels"]
    launcher = yaml.safe_load(LAUNCHER.read_text())
    [head] = [c for c in launcher["head_start_ray_commands"] if "ray start" in c]
    [worker] = [c for c in launcher["worker_start_ray_commands"] if "ray start" in c]
    assert "--labels=xraylab/pool=worker" in worker and "xraylab/pool=worker" not in head
    [(target, _source)] = launcher["file_mounts"].items()
    for command in (head, worker):
        assert f"XRAYLAB_ENV_FILE={target} " in command
