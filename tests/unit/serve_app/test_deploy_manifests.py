"""The deployment files against the app: the `ray up` cluster config (cluster/ray/cluster.yaml) and the KubeRay
RayService with its Secret (cluster/kuberay/rayservice.yaml) parse, run the Serve config of
serve_app/serve_config.yaml (the same import path, valid AppArgs, deployments the code has, the same tuning),
start Ray with the app's Serve environment and its metrics port, and set what a cluster needs: images,
resources, a CPU and a GPU worker group under the autoscaler, credentials from a Secret, probes on /healthz.
Ray's token authentication is on wherever the project starts Ray (Ray 2.60: RAY_AUTH_MODE=token, the token
from RAY_AUTH_TOKEN_PATH, a file the operator made; KubeRay: ``authOptions: {mode: token, secretName}``, a
Secret the site made), the token is never inline, and no dashboard listens on all interfaces without it."""

import copy
import shlex
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


def test_the_cluster_holds_only_the_credentials_of_its_own_jobs() -> None:
    """The Ray cluster runs the pipeline, serving, ingest and the monitor: its env file gives those jobs' secrets
    and no other (an uploader's, training's, the export's or the administrator's S3 keys, the notifier's or the
    admin's Kafka password, the model signing key, the research key); it trusts signed models and talks to Kafka
    over SASL_SSL with the broker's CA."""
    env_file = kuberay()["Secret"]["stringData"]["xraylab.env"]
    settings = dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line and not line.startswith("#"))
    for name in ("S3_ACCESS_KEY", "S3_REGISTRY_ACCESS_KEY", "KAFKA_INGEST_PASSWORD", "KAFKA_MONITOR_PASSWORD",
                 "KAFKA_CA_FILE", "MODEL_TRUSTED_KEYS", "S3_SOURCE_BUCKETS"):
        assert f"XRAYLAB_{name}" in settings, name
    for name in ("S3_UPLOAD_ACCESS_KEY", "S3_PUBLISH_ACCESS_KEY", "S3_EXPORT_ACCESS_KEY", "S3_ADMIN_ACCESS_KEY",
                 "KAFKA_NOTIFIER_PASSWORD", "KAFKA_ADMIN_PASSWORD", "MODEL_SIGNING_KEY", "RESEARCH_KEY"):
        assert not any(key.startswith(f"XRAYLAB_{name}".rsplit("_ACCESS_KEY", 1)[0]) for key in settings), name
    assert settings.get("XRAYLAB_KAFKA_SECURITY_PROTOCOL", "SASL_SSL") == "SASL_SSL"
    mounted = set(kuberay()["Secret"]["stringData"])
    for name in ("XRAYLAB_KAFKA_CA_FILE", "XRAYLAB_MODEL_TRUSTED_KEYS"):
        assert settings[name].startswith("/etc/xraylab/") and settings[name].rsplit("/", 1)[1] in mounted


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
    target = "/etc/xraylab/xraylab.env"
    assert target in launcher["file_mounts"]
    for command in (head, worker):
        assert f"XRAYLAB_ENV_FILE={target} " in command


# --- Ray's token authentication ----------------------------------------------------------------------------------

ALL_INTERFACES = {"0.0.0.0", "::", "[::]", ""}
RAY_COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                     "head_start_ray_commands", "worker_start_ray_commands")


def kuberay_auth_problems(docs: dict[str, dict]) -> list[str]:
    """What leaves the KubeRay cluster open or puts its token in the manifest (empty: none)."""
    problems = []
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    auth = cluster.get("authOptions") or {}
    token_auth = auth.get("mode", "token" if auth else None) == "token"
    if not token_auth:
        problems.append("rayClusterConfig.authOptions.mode is not token: the cluster takes anyone")
    secret = auth.get("secretName")
    if token_auth and not secret:
        problems.append("authOptions.secretName missing: a RayService's generated token changes with its cluster")
    for doc in docs.values():
        if doc.get("kind") == "Secret" and (doc["metadata"]["name"] == secret
                                            or "auth_token" in {**doc.get("data", {}), **doc.get("stringData", {})}):
            problems.append(f"the Ray token's Secret {doc['metadata']['name']} is inline in the manifest")
    cluster_groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    for group in cluster_groups:
        if str(group.get("rayStartParams", {}).get("dashboard-host", "127.0.0.1")) in ALL_INTERFACES \
                and not token_auth:
            problems.append(f"dashboard on all interfaces without token auth ({group.get('groupName', 'head')})")
        for container in group["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] == "RAY_AUTH_TOKEN" and "value" in env:
                    problems.append(f"RAY_AUTH_TOKEN inline in {container['name']}")
                if env["name"] == "RAY_AUTH_MODE" and env.get("value") != "token":
                    problems.append(f"RAY_AUTH_MODE={env.get('value')} in {container['name']}")
    [app] = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])["applications"]
    if {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"} & set(app.get("runtime_env", {}).get("env_vars", {})):
        problems.append("Ray's auth variables in the Serve runtime_env")
    return problems


def ray_start_auth_problems(command: str, mounted: set[str]) -> list[str]:
    """What leaves one `ray start` command line open, or puts its token in it (empty: none)."""
    words = shlex.split(command)
    at = next(i for i, (a, b) in enumerate(zip(words, words[1:], strict=False)) if (a, b) == ("ray", "start"))
    assignments = dict(w.split("=", 1) for w in words[:at] if "=" in w)
    flags = dict(w.split("=", 1) if "=" in w else (w, "") for w in words[at + 2:])
    problems = []
    token_auth = assignments.get("RAY_AUTH_MODE") == "token"
    if not token_auth:
        problems.append(f"ray start without RAY_AUTH_MODE=token: {command}")
    if "RAY_AUTH_TOKEN" in assignments:
        problems.append("the Ray token inline in a ray start command")
    if token_auth and assignments.get("RAY_AUTH_TOKEN_PATH") not in mounted:
        problems.append("RAY_AUTH_TOKEN_PATH is not a file the operator's machine copies to the node (file_mounts)")
    if "--head" in flags and flags.get("--dashboard-host", "localhost") in ALL_INTERFACES and not token_auth:
        problems.append("dashboard on all interfaces without token auth")
    return problems


def launcher_auth_problems(launcher: dict) -> list[str]:
    mounted = set(launcher.get("file_mounts", {}))
    commands = [c for name in RAY_COMMAND_LISTS for c in launcher.get(name, [])]
    starts = [c for c in commands if "ray start" in c]
    problems = [p for c in starts for p in ray_start_auth_problems(c, mounted)]
    if not any("--head" in c for c in starts) or not any("--address" in c for c in starts):
        problems.append("expected a head's and a worker's ray start")
    problems += [f"the Ray token inline: {c}" for c in commands if "RAY_AUTH_TOKEN=" in c]
    problems += [f"token auth disabled: {c}" for c in commands if "RAY_AUTH_MODE=disabled" in c]
    return problems


def test_the_kuberay_cluster_takes_only_token_holders() -> None:
    docs = kuberay()
    assert kuberay_auth_problems(docs) == []
    auth = docs["RayService"]["spec"]["rayClusterConfig"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "xraylab-ray-token"}  # made by the site (kubectl create secret)


def test_every_launcher_ray_start_uses_token_auth_from_a_mounted_file() -> None:
    launcher = yaml.safe_load(LAUNCHER.read_text())
    assert launcher_auth_problems(launcher) == []
    [head] = [c for c in launcher["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head  # loopback: reached through `ray dashboard` (an SSH tunnel)
    token_file = "/etc/xraylab/ray_auth_token"
    assert any(token_file in c and "chmod 600" in c for c in launcher["setup_commands"])


def _open_kuberay(docs: dict) -> None:
    del docs["RayService"]["spec"]["rayClusterConfig"]["authOptions"]


def _inline_kuberay_token(docs: dict) -> None:
    head = docs["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"].append({"name": "RAY_AUTH_TOKEN", "value": "t0ken"})


def _kuberay_token_secret_inline(docs: dict) -> None:
    docs["TokenSecret"] = {"kind": "Secret", "metadata": {"name": "xraylab-ray-token"},
                           "stringData": {"auth_token": "t0ken"}}


@pytest.mark.parametrize(("breach", "caught"), [
    (_open_kuberay, "dashboard on all interfaces without token auth (head)"),
    (_inline_kuberay_token, "RAY_AUTH_TOKEN inline in ray-head"),
    (_kuberay_token_secret_inline, "the Ray token's Secret xraylab-ray-token is inline in the manifest"),
])
def test_the_kuberay_check_catches(breach, caught: str) -> None:  # noqa: ANN001 - a mutation of the manifest
    docs = copy.deepcopy(kuberay())
    breach(docs)
    assert caught in kuberay_auth_problems(docs)


@pytest.mark.parametrize(("old", "new"), [
    ("RAY_AUTH_MODE=token ", ""),  # a ray start without token auth
    ("RAY_AUTH_MODE=token ", "RAY_AUTH_MODE=disabled "),
    ("RAY_AUTH_TOKEN_PATH=/etc/xraylab/ray_auth_token", "RAY_AUTH_TOKEN=t0ken"),  # the token inline
    ("RAY_AUTH_TOKEN_PATH=/etc/xraylab/ray_auth_token", "RAY_AUTH_TOKEN_PATH=/tmp/made-by-nobody"),
])
def test_the_launcher_check_catches(old: str, new: str) -> None:
    text = LAUNCHER.read_text()
    for which in ("head", "worker"):
        lines = text.splitlines()
        section = lines.index(f"{which}_start_ray_commands:")
        at = next(i for i in range(section, len(lines)) if "ray start" in lines[i])
        lines[at] = lines[at].replace(old, new)
        assert lines[at] != text.splitlines()[at]
        assert launcher_auth_problems(yaml.safe_load("\n".join(lines))), (which, old, new)


def test_the_launcher_check_catches_an_open_dashboard_without_auth() -> None:
    launcher = yaml.safe_load(LAUNCHER.read_text())
    [head] = [c for c in launcher["head_start_ray_commands"] if "ray start" in c]
    opened = head.replace("RAY_AUTH_MODE=token ", "").replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")
    problems = ray_start_auth_problems(opened, set(launcher["file_mounts"]))
    assert any("dashboard on all interfaces" in p for p in problems)


def test_the_multinode_nodes_start_with_token_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tests/multinode starts its nodes with `ray start`: token auth on there too (its fixture makes the token)."""
    pytest.importorskip("psutil")
    from tests.multinode import ray_nodes

    seen: list[dict] = []

    class Recorded:
        def __init__(self, args: list[str], **kwargs: object) -> None:
            seen.append({"args": args, **kwargs})

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(ray_nodes.subprocess, "Popen", Recorded)
    ray_nodes.start_head(tmp_path, port=1, dashboard_port=2, metrics_port=3, temp_dir=tmp_path, num_cpus=1,
                         labels={"a": "b"})
    ray_nodes.start_worker("w", tmp_path, address="127.0.0.1:1", metrics_port=4, agent_port=5, num_cpus=1,
                           labels={"a": "c"}, resources={})
    assert len(seen) == 2
    for call in seen:
        assert call["env"]["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in call["env"]  # type: ignore[index]
        assert "--dashboard-host=0.0.0.0" not in call["args"]
