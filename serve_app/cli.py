"""Commands that run the system: ``xraylab serve run`` and ``xraylab demo``. The orchestration they
call lives in ``serve_app/launch.py`` and ``serve_app/demo.py``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from xraylab.cli import DatabaseOption, fail, setup_logging
from xraylab.settings import load_settings

__all__ = ["register"]

serve_app_cli = typer.Typer(help="The Ray Serve application.", no_args_is_help=True)


ingest_cli = typer.Typer(help="The Kafka ingest actors on a running Ray cluster (`serve run` starts its own).",
                         no_args_is_help=True)
AddressOption = Annotated[str, typer.Option(help="the Ray cluster (`ray start --head`'s address, or 'auto')")]


def register(root: typer.Typer) -> None:
    from delivery.cli import outbox_app
    from serve_app.monitor_cli import monitor_cli

    outbox_app.command("start")(outbox_start)  # beside `outbox list|retry|run` (delivery/cli.py): they need Ray
    outbox_app.command("stop")(outbox_stop)

    root.add_typer(serve_app_cli, name="serve")
    root.add_typer(ingest_cli, name="ingest")
    root.add_typer(monitor_cli, name="monitor")
    root.command("demo")(demo)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_forever(pipeline: Any) -> None:
    # Ctrl-C and `kill` both stop cleanly, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        pipeline.stop()


@serve_app_cli.command("run")
def serve_run(database: DatabaseOption = "default", ingest: bool = True, ui: bool = True,
              model_version: str = "", num_gpus: float = 0.0,
              address: Annotated[str, typer.Option(
                  help="a running Ray cluster to deploy on (`ray start --head`'s address, or 'auto'); "
                       "default: a Ray of its own")] = "") -> None:
    """Run the Serve app (and the Kafka ingest actors) until Ctrl-C. Run `xraylab db upgrade` first."""
    setup_logging()
    from serve_app.app import AppArgs
    from serve_app.launch import start_pipeline

    args = AppArgs(database=database, mount_ui=ui, model_version=model_version, classifier_num_gpus=num_gpus)
    pipeline = start_pipeline(load_settings(), args, ingest=ingest, address=address)
    print(f"serving at {pipeline.url} (UI at {pipeline.url}/ui); Ctrl-C to stop")
    _wait_forever(pipeline)


def demo(count: int = 24, database: DatabaseOption = "default", timeout_s: float = 300.0, seed: int = -1,
         serve_forever: Annotated[bool, typer.Option(help="keep serving the UI until Ctrl-C")] = True,
         pacs: Annotated[int, typer.Option(help="generated DICOM studies sent to the PACS by C-STORE", min=0)] = 4,
         xrays: Annotated[Path | None, typer.Option(
             help="real labelled X-rays to upload (a folder with NORMAL/ and PNEUMONIA/); default XRAYLAB_DEMO_XRAYS "
                  "(the Kermany test split in ../shared), generated images where it does not exist")] = None,
         ) -> None:
    """Install the model trained on real X-rays (or bootstrap one), run the pipeline, upload COUNT X-rays (real
    ones where at hand) and send PACS DICOM studies, summarise, serve the UI."""
    setup_logging()
    from serve_app.demo import run_demo

    settings = load_settings()
    if xrays is not None and not xrays.is_dir():
        raise fail(f"--xrays {xrays} is not a folder")
    pipeline, summary = run_demo(settings, count=count, database=database, timeout_s=timeout_s,
                                 seed=seed if seed >= 0 else int(time.time()), pacs=pacs,
                                 xrays=xrays or settings.DEMO_XRAYS)
    print("\n" + "\n".join(summary.lines()))
    if not summary.complete:
        print(f"error: only {summary.stored}/{count + summary.pacs} predictions within {timeout_s:.0f}s",
              file=sys.stderr)
        pipeline.stop()
        raise typer.Exit(1)
    login_file = settings.STATE_DIR / "demo-login.txt"
    where = f"user and password in {login_file}" if login_file.exists() else "your accounts (xraylab users list)"
    print(f"\nReview app: {pipeline.url}/ui  ({where})")
    if serve_forever:
        print("Ctrl-C to stop.")
        _wait_forever(pipeline)
    else:
        pipeline.stop()


def _connect(address: str) -> Any:
    from serve_app.launch import init_ray

    settings = load_settings()
    host, _, port = address.rpartition(":")
    if host and port.isdigit():  # Ray waits for an absent GCS without end: a plain TCP connect first
        import socket

        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise fail(f"no Ray cluster at {address}: {exc.strerror or exc}") from None
    try:
        init_ray(settings, address=address or "auto")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise fail(f"no Ray cluster at {address or 'auto'}: {_first_line(exc)}") from None
    return settings


def _first_line(exc: BaseException) -> str:
    """What to print of a Ray error: its first line (Ray's messages go on with tracebacks)."""
    return (str(exc).splitlines() or [repr(exc)])[0]


def _cluster_errors() -> tuple[type[BaseException], ...]:
    """What a cluster answers instead: an actor that died or did not start (the Serve app not deployed), no
    answer in time."""
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    return GetTimeoutError, RayActorError, RayTaskError, ValueError


@ingest_cli.command("start")
def ingest_start(address: AddressOption = "auto",
                 count: Annotated[int, typer.Option(help="actors (default XRAYLAB_INGEST_ACTORS)")] = 0) -> None:
    """Start the app's ingest actors on the cluster as detached actors (after `serve deploy`, or a RayService),
    one per node as far as the nodes go; actors already running are kept. They consume until `ingest stop`,
    and Ray restarts one whose process or node dies."""
    import ray

    from serve_app.launch import ingest_actors, start_ingest_actors

    settings = _connect(address)
    running = {name for name, _ in ingest_actors(settings)}
    actors = start_ingest_actors(settings, count or settings.INGEST_ACTORS, detached=True)
    try:
        nodes = ray.get([actor.node_id.remote() for actor in actors], timeout=120)
    except _cluster_errors() as exc:
        raise fail(f"the ingest actors did not start (is the Serve app {settings.SERVE_APP_NAME!r} deployed?): "
                   f"{_first_line(exc)}") from None
    for index, node in enumerate(nodes):
        print(f"ingest actor {index} on node {node[:12]}")
    print(f"{len(actors)} ingest actors consuming {settings.KAFKA_TOPIC} as group {settings.KAFKA_GROUP} "
          f"({len(running)} were running already)")


@ingest_cli.command("stop")
def ingest_stop(address: AddressOption = "auto") -> None:
    """Stop the app's ingest actors: each finishes the batch it holds, commits it and leaves the group."""
    import ray

    from serve_app.launch import ingest_actors

    settings = _connect(address)
    actors = ingest_actors(settings)
    for name, actor in actors:
        try:
            ray.get(actor.stop.remote(), timeout=60)
            ray.get(actor.run.remote(), timeout=120)  # the batch in hand done and committed
        except _cluster_errors() as exc:
            print(f"{name} did not stop cleanly ({_first_line(exc)}); killed")
        ray.kill(actor, no_restart=True)
    print(f"stopped {len(actors)} ingest actors")


@ingest_cli.command("status")
def ingest_status(address: AddressOption = "auto") -> None:
    """One JSON line per ingest actor: its node, lag and counters."""
    import json

    import ray

    from serve_app.launch import ingest_actors

    settings = _connect(address)
    for name, actor in ingest_actors(settings):
        try:
            stats, node = ray.get([actor.stats.remote(), actor.node_id.remote()], timeout=60)
        except _cluster_errors() as exc:
            print(json.dumps({"actor": name, "error": _first_line(exc)}))
            continue
        print(json.dumps({"actor": name, "node": node, **stats}, default=str))


def outbox_start(address: AddressOption = "auto", database: DatabaseOption = "default") -> None:
    """Start the deliverer on the cluster as a detached actor (after `serve deploy`, or a RayService); one running
    already is kept. It sends the outbox's results to the PACS and RIS of XRAYLAB_DELIVERY_CONFIG until `outbox stop`,
    and Ray restarts it where its process or node dies."""
    from serve_app.delivery_actor import start_delivery
    from xraylab.delivery_config import DeliveryConfigError

    settings = _connect(address)
    try:
        actor = start_delivery(settings, database, detached=True)
    except DeliveryConfigError as exc:
        raise fail(str(exc)) from None
    if actor is None:
        raise fail("no destinations: set XRAYLAB_DELIVERY_CONFIG on every node (docs/delivery.md)")
    import ray

    try:
        print(json.dumps(ray.get(actor.stats.remote(), timeout=120)))
    except _cluster_errors() as exc:
        raise fail(f"the deliverer did not start: {_first_line(exc)}") from None
    print("deliverer running; `xraylab outbox list` shows what it sends")


def outbox_stop(address: AddressOption = "auto") -> None:
    """Stop the cluster's deliverer (what it has not sent stays queued in the outbox)."""
    import ray

    from serve_app.delivery_actor import DELIVERY_ACTOR, NAMESPACE

    _connect(address)
    try:
        actor = ray.get_actor(DELIVERY_ACTOR, namespace=NAMESPACE)
    except ValueError:
        raise fail("no deliverer runs on this cluster") from None
    try:
        ray.get(actor.stop.remote(), timeout=60)
    except _cluster_errors() as exc:
        print(f"the deliverer did not stop cleanly ({_first_line(exc)}); killed")
    ray.kill(actor, no_restart=True)
    print("deliverer stopped")
