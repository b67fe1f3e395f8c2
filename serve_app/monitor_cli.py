"""``xraylab monitor``: start, stop and inspect the model monitor, upload its limits, and check a folder of
images for drift offline."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer

from xraylab.cli import DatabaseOption, fail, setup_logging
from xraylab.settings import Settings, load_settings

__all__ = ["monitor_cli", "drift_of_folder"]

monitor_cli = typer.Typer(help="The model monitor: health, drift, performance, alerts.", no_args_is_help=True)
ModelOption = Annotated[str, typer.Option("--model", help="model version (default: the promoted one)")]


def _db(database: str) -> Any:
    from xraylab.db.session import Database, schema_is_current

    db = Database(load_settings().database_url(database))
    if not schema_is_current(db.engine):
        raise fail("the database is not migrated: run `xraylab db upgrade` first") from None
    return db


def _version(settings: Settings, model: str) -> str:
    from xraylab.registry import ModelNotFoundError, open_registry, resolve_version

    try:
        return resolve_version(open_registry(settings), model)
    except (ModelNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None


def _connect_ray(address: str) -> None:
    import ray

    from serve_app.monitor_actor import MONITOR_NAMESPACE

    try:
        ray.init(address=address, namespace=MONITOR_NAMESPACE, log_to_driver=False)
    except ConnectionError as exc:
        raise fail(f"no Ray cluster at {address!r} ({exc}); start the pipeline first (`xraylab serve run`)") from None


def _in_cluster(model: str, database: str, address: str) -> tuple[Settings, str, Any]:
    """(settings, model version, database) of a command on the monitor's actor, connected to the cluster."""
    setup_logging()
    settings = load_settings()
    version, db = _version(settings, model), _db(database)
    _connect_ray(address)
    return settings, version, db


@monitor_cli.command("start")
def monitor_start(model: ModelOption = "", database: DatabaseOption = "default",
                  address: Annotated[str, typer.Option(help="the Ray cluster")] = "auto") -> None:
    """Start the monitor of a model version inside the running Ray cluster."""
    from serve_app.monitor_actor import start_monitor

    settings, version, db = _in_cluster(model, database, address)
    state, message = start_monitor(settings, db, version, database)
    print(f"monitor of {version}: {state}" + (f" ({message})" if message else ""))


@monitor_cli.command("stop")
def monitor_stop(model: ModelOption = "", database: DatabaseOption = "default",
                 address: Annotated[str, typer.Option(help="the Ray cluster")] = "auto") -> None:
    """Stop the monitor of a model version (its figures and alerts stay)."""
    from serve_app.monitor_actor import stop_monitor

    _, version, db = _in_cluster(model, database, address)
    ran = stop_monitor(db, version)
    print(f"monitor of {version}: stopped" + ("" if ran else " (it was not running)"))


@monitor_cli.command("status")
def monitor_status(database: DatabaseOption = "default",
                   as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """Each monitor's state, its last runs, open alerts and latest figures (reads the database only)."""
    from xraylab.db import monitoring as store

    db = _db(database)
    with db.session() as session:
        monitors = store.list_monitors(session)
        for m in monitors:
            m["latest"] = {k: v["value"] for k, v in store.latest_results(session, m["model_version"]).items()}
            m["open_alerts_list"] = [a["message"] for a in store.alerts(session, m["model_version"], limit=20)
                                     if a["resolved_at"] is None]
    if as_json:
        print(json.dumps(monitors, default=str))
        return
    if not monitors:
        print("no monitor yet: `xraylab monitor start`")
    for m in monitors:
        print(f"{m['model_version']}: {m['state']}" + (f" ({m['message']})" if m["message"] else ""))
        print(f"  last drift run {m['last_drift_at'] or '-'}, last health run {m['last_health_at'] or '-'}, "
              f"open alerts {m['open_alerts']}")
        for name, value in sorted(m["latest"].items()):
            print(f"  {name:24s} {'-' if value is None else f'{value:.4g}'}")
        for message in m["open_alerts_list"]:
            print(f"  ALERT {message}")


@monitor_cli.command("thresholds")
def monitor_thresholds(file: Annotated[Path | None, typer.Argument(help="a thresholds JSON file")] = None,
                       database: DatabaseOption = "default") -> None:
    """Upload the limits (validated; Prometheus' rules are regenerated and reloaded); without FILE, print them."""
    from xraylab.db import monitoring as store
    from xraylab.monitor.prom_rules import reload_prometheus, rules_file, write_rules
    from xraylab.monitor.thresholds import Thresholds, ThresholdsError

    db = _db(database)
    if file is None:
        with db.session() as session:
            print(store.get_thresholds(session).to_json())
        return
    try:
        thresholds = Thresholds.load(file)
    except ThresholdsError as exc:
        raise fail(str(exc)) from None
    with db.session() as session:
        store.set_thresholds(session, thresholds)
    settings = load_settings()
    try:
        rules = write_rules(thresholds, rules_file(settings))
    except OSError as exc:
        raise fail(f"thresholds stored, but Prometheus' rules could not be written: {exc}") from None
    reloaded = reload_prometheus(settings.PROMETHEUS_URL)
    print(f"thresholds stored ({len(thresholds.limits)} limits); Prometheus rules in {rules}"
          + ("; Prometheus reloaded" if reloaded else
             "; Prometheus not reloaded (not running here, or it refused them): it reads them when it starts"))


def drift_of_folder(settings: Settings, folder: Path, version: str, thresholds: Any) -> dict[str, Any]:
    """The image-drift test of a folder of JPEG/PNG files (any layout) against a model's reference: at most
    ``MONITOR_MAX_IMAGES`` of them (a seeded sample), as a drift run takes."""
    import numpy as np

    from train.dataset import IMAGE_SUFFIXES
    from xraylab.monitor.drift import atypicality
    from xraylab.monitor.run import MonitorRunner

    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ValueError(f"no JPEG or PNG files under {folder}")
    limit = settings.MONITOR_MAX_IMAGES
    picked = np.sort(np.random.default_rng(0).choice(len(found), limit, replace=False)) if len(found) > limit else None
    files = [found[i] for i in picked] if picked is not None else found
    runner = MonitorRunner(settings, db=None, model_version=version, sinks=[])  # type: ignore[arg-type]
    runner.prepare()
    feats = runner.features([p.read_bytes() for p in files])
    if len(feats.kept) < 2:
        raise ValueError(f"fewer than 2 readable images under {folder} ({len(feats.errors)} unreadable)")
    result = runner.image_drift(feats.embeddings, feats.readable)
    assert runner.reference is not None
    odd = atypicality(runner.reference.embeddings, feats.embeddings)
    top = np.argsort(-odd)[: settings.MONITOR_ATYPICAL]
    return {"image_drift": round(result.score, 4), "status": thresholds.status("image", result.score),
            "n_images": len(feats.kept), "n_files": len(found), "unreadable": len(feats.errors),
            "model_version": version,
            "p_value": result.p_value, "mmd_p_value": result.mmd_p_value, "drifted": result.drifted,
            "moved": [{"statistic": m.name, "reference_median": m.reference_median, "live_median": m.live_median,
                       "ks": m.ks} for m in result.moved],
            "most_atypical": [{"file": str(files[feats.kept[i]].relative_to(folder)),
                               "atypicality": round(float(odd[i]), 4)} for i in top]}


@monitor_cli.command("drift")
def monitor_drift(images: Annotated[Path, typer.Option("--images", help="a folder of JPEG/PNG files")],
                  model: ModelOption = "", database: DatabaseOption = "default") -> None:
    """Image drift of a folder against a model's reference: one JSON object. Exit 0 whatever the status."""
    from xraylab.db import monitoring as store
    from xraylab.db.session import Database, schema_is_current
    from xraylab.monitor.reference import NoReferenceError
    from xraylab.monitor.thresholds import default_thresholds

    setup_logging()
    settings = load_settings()
    version = _version(settings, model)
    thresholds = default_thresholds()
    try:
        db = Database(settings.database_url(database))
        if schema_is_current(db.engine):
            with db.session() as session:
                thresholds = store.get_thresholds(session)
    except Exception as exc:  # no database here: the default limits
        print(f"note: thresholds from the defaults ({type(exc).__name__})", file=sys.stderr)
    try:
        result = drift_of_folder(settings, images, version, thresholds)
    except (ValueError, NoReferenceError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise fail(f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError | zipfile.BadZipFile) else str(exc)) \
            from None
    print(json.dumps(result))


@monitor_cli.command("run")
def monitor_run(kind: Annotated[str, typer.Option(help="drift or health")] = "drift", model: ModelOption = "",
                address: Annotated[str, typer.Option(help="the Ray cluster")] = "auto") -> None:
    """Run the started monitor once now (it also runs on its schedule) and print what it found."""
    from serve_app.monitor_actor import run_monitor_now
    from xraylab.registry import ModelNotFoundError

    if kind not in ("drift", "health"):
        raise fail("--kind is drift or health") from None
    settings = load_settings()
    version = _version(settings, model)
    _connect_ray(address)
    import ray

    try:
        print(json.dumps(run_monitor_now(version, kind), default=str))
    except ModelNotFoundError as exc:
        raise fail(str(exc)) from None
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
        raise fail(f"the monitor of {version} did not answer: {type(exc).__name__}") from None
