"""The pipeline on a two-node Ray cluster started with Ray's own ``ray start``, against the local services,
with the model registry in S3 (SeaweedFS) shared by both nodes.

* A node dies mid-stream: the classifier replicas (which prefer nodes labelled ``xraylab/pool=worker``)
  and one of the two ingest actors run on the second node; its raylet and workers are SIGKILLed by the
  PIDs of the ``ray start`` process tree while the hospital uploads. Every image must end as exactly one
  row, the app must recover on the head alone, and the test prints uploaded / rows / duplicates / lost and
  the recovery times.
* A node joins and a training job is submitted to the cluster with ``ray job submit``: it publishes to the
  S3 registry and promotes, and the replicas on both nodes switch to the new version.

``make test`` runs it with ``XRAYLAB_MULTINODE_UPLOADS`` = 150 uploads; ``make multinode`` with 1,000.
The report is written to ``<state dir>/multinode.txt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from serve_app.app import AppArgs, build_app
from serve_app.classifier import ClassifierConfig
from tests.cli import xraylab
from tests.multinode.ray_nodes import RAY, RayNode, start_head, start_worker, wait_for
from tests.stream import Uploader, drain, jpegs, rows_for
from xraylab.registry import FolderRegistry, Registry, open_registry
from xraylab.settings import Settings, load_settings
from xraylab.storage import make_s3_client

pytestmark = [pytest.mark.e2e, pytest.mark.multinode]
UPLOADS = int(os.environ.get("XRAYLAB_MULTINODE_UPLOADS", "150"))
GCS_PORT, DASHBOARD_PORT = 16379, 18265
WORKER = {"xraylab/pool": "worker"}
CLASSIFIERS = 2
REPORT: list[str] = []
_HANDLES: dict[str, object] = {}


@dataclass
class Cluster:
    settings: Settings
    registry: Registry
    log_dir: Path
    temp_dir: Path
    head: RayNode
    workers: list[RayNode] = field(default_factory=list)
    address: str = f"127.0.0.1:{GCS_PORT}"

    def add_worker(self) -> RayNode:
        n = len(self.workers)
        node = start_worker(f"node{n + 2}", self.log_dir, address=self.address, metrics_port=18091 + n,
                            agent_port=52366 + n, num_cpus=2, labels=WORKER, resources={"xraylab_worker": 1})
        self.workers.append(node)
        return node


def schedulable_worker(count: int) -> None:
    """Wait until ``count`` nodes are alive and the head's scheduler sees a worker node's resources: a task
    that needs the workers' custom resource has run. Right after a node joins, Ray already lists it alive
    while a soft node affinity to it still falls back to the head."""
    import ray

    wait_for(lambda: len(alive_nodes()) == count, 120, f"{count} alive nodes")

    @ray.remote(num_cpus=0, resources={"xraylab_worker": 0.01})
    def probe() -> str:
        return ray.get_runtime_context().get_node_id()

    ray.get(probe.remote(), timeout=120)


class RowWatch(threading.Thread):
    """The bucket's row count, read every 0.25 s: when rows kept coming around a fault."""

    def __init__(self, db, bucket: str) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.db, self.bucket, self.stop = db, bucket, threading.Event()
        self.seen: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self.seen.append((time.time(), len(rows_for(self.db, self.bucket))))

    def longest_gap(self, since: float) -> float:
        """The longest time after ``since`` that the count stood still (while rows were still missing)."""
        grew = [since] + [t for (t, n), (_, before) in zip(self.seen[1:], self.seen, strict=False) if n > before
                          and t > since]
        return max((b - a for a, b in zip(grew, grew[1:], strict=False)), default=0.0)


def alive_nodes() -> dict[str, dict]:
    import ray

    return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}


def head_id() -> str:
    return next(k for k, n in alive_nodes().items() if "node:__internal_head__" in n["Resources"])


def serving(app_name: str, samples: int = 24) -> dict[str, dict[str, str]]:
    """replica id -> {model_version, node_id} of the classifier replicas that answered ``samples`` calls."""
    from ray import serve

    handle = _HANDLES.get(app_name)
    if handle is None:
        handle = _HANDLES[app_name] = serve.get_deployment_handle("Classifier", app_name)
        handle._init(_run_router_in_separate_loop=True)  # called from this thread, with no event loop of its own
    seen = {}
    for _ in range(samples):
        info = handle.serving.remote().result(timeout_s=30)
        seen[info["replica"]] = info
    return seen


def classifier_nodes(app_name: str) -> set[str]:
    """The nodes of the classifier replicas Ray reports alive (the state API, not the router's view)."""
    from ray._private import state

    return {a["Address"]["NodeID"] for a in state.actors(actor_state_name="ALIVE").values()
            if a["ActorClassName"].endswith("Classifier") and a.get("Name", "").find(app_name) >= 0}


@pytest.fixture(scope="module")
def cluster(settings, mariadb, request) -> Iterator[Cluster]:
    import ray

    s3 = make_s3_client(settings.s3_endpoint(None, "admin"))
    bucket = f"xray-models-{uuid.uuid4().hex[:8]}"  # the registry identities may use xray-models*
    s3.create_bucket(Bucket=bucket)
    # Ray 2.60's token authentication, on for this cluster whatever ran before: the nodes, this driver and the
    # `ray` commands all use the token in ~/.ray/auth_token (made if missing). Left to itself, a head enables
    # it when that file exists, while a process that did not start a cluster (`ray status`, this driver when no
    # test before it started a Ray) does not. Ray's own switch: RAY_AUTH_MODE=token, for this process (its
    # config read again) and the processes it starts; it stays on, as a local Ray turns it on with a token.
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    subprocess.run([RAY, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60)
    _enable_token_auth()
    env = {"XRAYLAB_MODEL_REGISTRY": f"s3://{bucket}/registry", "XRAYLAB_SERVE_PROXY_LOCATION": "HeadOnly"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # before `ray start`: both nodes' processes read the same settings
    cluster_settings = load_settings()
    registry = open_registry(cluster_settings, publish=True)  # the operator imports and promotes
    local = FolderRegistry(settings.model_dir)
    if not local.versions():
        from train.bootstrap import train_bootstrap_model

        train_bootstrap_model(local)
    seed = local.resolve_version()
    registry.import_dir(local.local_dir(seed))  # what an operator does: `xraylab models import`
    registry.promote(seed)

    log_dir = settings.STATE_DIR / "multinode"
    temp_dir = Path(tempfile.mkdtemp(prefix="xr-ray-"))  # short: Ray's socket paths live under it
    head = start_head(log_dir, port=GCS_PORT, dashboard_port=DASHBOARD_PORT, metrics_port=settings.RAY_METRICS_PORT,
                      temp_dir=temp_dir, num_cpus=2, labels={"xraylab/pool": "head"})
    nodes = Cluster(cluster_settings, registry, log_dir, temp_dir, head)
    try:
        from serve_app.launch import init_ray

        wait_for(lambda: subprocess.run([RAY, "status", f"--address={nodes.address}"], capture_output=True,
                                        timeout=30).returncode == 0, 90, "the head")
        nodes.add_worker()
        init_ray(cluster_settings, address=nodes.address)
        schedulable_worker(2)
        yield nodes
    finally:
        ray.shutdown()
        for node in [*nodes.workers, head]:
            node.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        text = "\n".join([f"multi-node suite, {UPLOADS} uploads", *REPORT])
        (settings.STATE_DIR / "multinode.txt").write_text(text + "\n")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("\n" + text)


@pytest.fixture(scope="module")
def pipeline(cluster):
    """The Serve app deployed on the cluster, and its ingest actors started as an operator does on a cluster:
    ``xraylab ingest start --address`` (detached actors, one per node)."""
    from serve_app.launch import ingest_actors, start_pipeline

    args = AppArgs(database="mariadb", mount_ui=False, classifier_replicas=CLASSIFIERS,
                   classifier_prefer_labels=WORKER, classifier=ClassifierConfig(model_poll_s=1.0))
    pipe = start_pipeline(cluster.settings, args, ingest=False, address=cluster.address)
    pipe.args = args
    started = xraylab("ingest", "start", f"--address={cluster.address}", timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    assert "2 ingest actors consuming" in started.stdout
    pipe.ingest = [actor for _, actor in ingest_actors(cluster.settings)]
    yield pipe
    stopped = xraylab("ingest", "stop", f"--address={cluster.address}", timeout=300)
    assert stopped.returncode == 0 and "stopped 2 ingest actors" in stopped.stdout, stopped.stderr[-2000:]
    from ray import serve

    serve.shutdown()


def test_a_node_dies_mid_stream_and_every_image_ends_as_one_row(cluster, pipeline, s3, bucket, mariadb) -> None:
    import ray

    app = cluster.settings.SERVE_APP_NAME
    head, node2 = head_id(), next(k for k in alive_nodes() if k != head_id())
    assert classifier_nodes(app) == {node2}, "the classifier replicas prefer the worker node"
    ingest_nodes = ray.get([a.node_id.remote() for a in pipeline.ingest], timeout=60)
    assert sorted(ingest_nodes) == sorted([head, node2]), f"one ingest actor per node: {ingest_nodes} {head} {node2}"

    # Paced so that the stream lasts about half a minute at any size: the kill lands mid-stream.
    uploader = Uploader(s3, bucket, UPLOADS, jpegs(), pace_s=30.0 / UPLOADS)
    uploader.start()
    wait_for(lambda: len(rows_for(mariadb, bucket)) >= UPLOADS // 4, 300, "a quarter of the rows")
    progress = RowWatch(mariadb, bucket)
    progress.start()
    killed = cluster.workers[0].kill()
    t_kill = time.time()
    at_kill = len(uploader.uploaded), len(rows_for(mariadb, bucket))
    assert at_kill[0] < UPLOADS, "the node dies while the hospital is still uploading"
    print(f"killed node2: pids {killed}")

    wait_for(lambda: node2 not in alive_nodes(), 120, "Ray to see node2 dead", every_s=0.2)
    dead_s = time.time() - t_kill

    last: list[str] = []

    def recovered_on_head() -> bool:
        try:
            replicas = serving(app)
            health = requests.get(f"{pipeline.url}/healthz", timeout=10)
        except Exception as exc:
            last[:] = [f"{time.time() - t_kill:.0f}s {type(exc).__name__}: {str(exc)[:300]}"]
            return False
        last[:] = [f"{time.time() - t_kill:.0f}s replicas {replicas} healthz {health.status_code} {health.text[:300]}"]
        return (len(replicas) == CLASSIFIERS and {r["node_id"] for r in replicas.values()} == {head}
                and health.status_code == 200)

    try:
        wait_for(recovered_on_head, 300, "the app on the head alone", every_s=1.0)
    except TimeoutError:
        from ray import serve

        raise AssertionError(f"not recovered: {last} / {serve.status()}") from None
    healthy_s = time.time() - t_kill
    uploader.join(timeout=600)
    assert len(uploader.uploaded) == UPLOADS
    _, caught_up_s = drain(mariadb, bucket, UPLOADS, t_kill)
    progress.stop.set()
    rows = rows_for(mariadb, bucket)
    stall_s = progress.longest_gap(t_kill)
    duplicates = sum(n - 1 for n in rows.values() if n > 1)
    lost = len(set(uploader.uploaded) - set(rows))
    line = (f"kill node2 (raylet + {len(killed) - 1} processes under `ray start`) at {at_kill[0]} uploaded, "
            f"{at_kill[1]} rows: "
            f"uploaded {len(uploader.uploaded)}, rows {len(rows)}, duplicates {duplicates}, lost {lost}; "
            f"node seen dead after {dead_s:.1f} s, app healthy on the head alone after {healthy_s:.1f} s, "
            f"longest wait for a new row {stall_s:.1f} s, every image stored "
            f"{caught_up_s if caught_up_s is None else round(caught_up_s, 1)} s after the kill")
    REPORT.append(line)
    print(line)
    assert sorted(rows) == sorted(uploader.uploaded), "exactly the uploaded images have rows: nothing lost"
    assert set(rows.values()) == {1}, "one prediction each: nothing stored twice"
    assert ray.get([a.node_id.remote() for a in pipeline.ingest], timeout=120) == [head, head]
    assert pipeline.ingest_stats()["consuming"]


def test_a_training_job_submitted_to_the_cluster_switches_the_replicas_on_both_nodes(cluster, pipeline,
                                                                                    tmp_path: Path) -> None:
    from ray import serve

    from xraylab.synthetic import write_dataset

    app = cluster.settings.SERVE_APP_NAME
    old = cluster.registry.promoted_version()
    cluster.add_worker()  # a replacement node joins
    schedulable_worker(2)
    head, new_node = head_id(), next(k for k in alive_nodes() if k != head_id())
    # One replica per node from now on: the rolling update puts one on the head and one on the new node.
    args = pipeline.args.model_copy(update={"classifier_prefer_labels": {}, "classifier_max_replicas_per_node": 1})
    serve.run(build_app(args), name=app, route_prefix="/")
    seen: list[dict] = []

    def on_both_nodes() -> bool:
        seen[:] = [serving(app)]
        return {r["node_id"] for r in seen[0].values()} == {head, new_node}

    try:
        wait_for(on_both_nodes, 300, "classifier replicas on both nodes", every_s=1.0)
    except TimeoutError:
        raise AssertionError(f"replicas {seen} head {head} new {new_node} actors {classifier_nodes(app)} "
                             f"status {serve.status()}") from None

    data = tmp_path / "data"
    write_dataset(data, {"train": 64, "val": 32, "test": 32}, size=96, seed=3)
    version = f"mn-{uuid.uuid4().hex[:6]}"
    dashboard = f"--address=http://127.0.0.1:{DASHBOARD_PORT}"
    t0 = time.time()
    submitted = subprocess.run(
        [RAY, "job", "submit", dashboard, f"--submission-id={version}", "--no-wait",
         "--runtime-env-json", json.dumps({"env_vars": cluster.settings.env_for_workers()}), "--",
         sys.executable, "-m", "xraylab_cli", "train", "run", f"--data={data}", "--epochs=1", "--workers=2",
         "--batch-size=16", f"--version={version}", "--promote"],
        capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    promoted_at = wait_for(lambda: cluster.registry.promoted_version() == version and time.time(), 900,
                           "the job to publish and promote its model", every_s=0.5)

    def switched() -> bool:
        replicas = serving(app, samples=30)
        return (len(replicas) == CLASSIFIERS and {r["model_version"] for r in replicas.values()} == {version}
                and {r["node_id"] for r in replicas.values()} == {head, new_node})

    wait_for(switched, 180, "every replica on both nodes serving the new version", every_s=0.5)
    switch_s = time.time() - promoted_at
    def ended() -> str:
        out = subprocess.run([RAY, "job", "status", dashboard, version], capture_output=True, text=True,
                             timeout=60).stdout.lower()
        return out if ("succeeded" in out or "failed" in out or "stopped" in out) else ""

    status = wait_for(ended, 300, "the job to end", every_s=2.0)
    logs = subprocess.run([RAY, "job", "logs", dashboard, version], capture_output=True, text=True, timeout=60).stdout
    assert f"job '{version}' succeeded" in status, logs[-3000:]
    assert version in cluster.registry.versions() and old != version
    line = (f"`ray job submit` training job {version}: published to {cluster.registry.location} and promoted "
            f"{promoted_at - t0:.0f} s after submission; {CLASSIFIERS} replicas on 2 nodes served it "
            f"{switch_s:.1f} s after the promotion")
    REPORT.append(line)
    print(line)
