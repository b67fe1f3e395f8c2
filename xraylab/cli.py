"""The ``xraylab`` command. Heavy imports (Ray, TensorFlow, Gradio) happen inside commands."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from xraylab.settings import load_settings, project_root

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

app = typer.Typer(help="xraylab: chest X-ray pneumonia triage on Ray Serve.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
events_app = typer.Typer(help="S3 event notifications.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
train_app = typer.Typer(help="Training.", no_args_is_help=True)
serve_app_cli = typer.Typer(help="The Ray Serve application.", no_args_is_help=True)
notifier_app = typer.Typer(help="The SeaweedFS -> Kafka S3 event notifier.", no_args_is_help=True)
cluster_app = typer.Typer(help="The local stack (cluster/local).", no_args_is_help=True)
for sub, name in ((events_app, "events"), (db_app, "db"), (models_app, "models"), (train_app, "train"),
                  (serve_app_cli, "serve"), (notifier_app, "notifier"), (cluster_app, "cluster")):
    app.add_typer(sub, name=name)

Database = Annotated[str, typer.Option(help="'default' (XRAYLAB_DATABASE_URL, SQLite unless set) or 'mariadb'")]


def _fail(message: str) -> typer.Exit:
    """Print a one-line error; ``raise _fail(...) from None`` exits with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@events_app.command("parse")
def events_parse(file: Annotated[str, typer.Argument(help="event JSON file, or - for stdin")]) -> None:
    """Print one JSON line {bucket, key, size} per object to process; nothing for an event to ignore."""
    from xraylab.events import MalformedEventError, parse_s3_event

    try:
        payload = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}") from None
    try:
        refs = parse_s3_event(payload)
    except MalformedEventError as exc:
        raise _fail(str(exc)) from None
    for ref in refs:
        print(json.dumps({"bucket": ref.bucket, "key": ref.key, "size": ref.size}))


@db_app.command("upgrade")
def db_upgrade(database: Database = "default") -> None:
    """Apply the Alembic migrations up to head."""
    from xraylab.db.session import make_engine, upgrade_schema

    engine = make_engine(load_settings().database_url(database))
    upgrade_schema(engine)
    print(f"{database} database ({engine.dialect.name}) at head")


@train_app.command("bootstrap")
def train_bootstrap(force: Annotated[bool, typer.Option(help="train even if a model exists")] = False) -> None:
    """Train the small bootstrap CNN on generated images for a few seconds and publish it (promoted)."""
    _logging()
    from xraylab.registry import list_cards

    settings = load_settings()
    if list_cards(settings.model_dir) and not force:
        print(f"a model already exists in {settings.model_dir}; use --force to train another")
        return
    from train.bootstrap import train_bootstrap_model

    card = train_bootstrap_model(settings.model_dir)
    print(json.dumps(card.to_dict(), indent=2))


@train_app.command("run")
def train_run(
    data: Annotated[Path, typer.Option(help="ROOT of {train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg")],
    arch: Annotated[str, typer.Option(help="seed-cnn (baseline) or xray-resnet")] = "seed-cnn",
    workers: int = 2, gpus_per_worker: float = 0.0, epochs: int = 10, batch_size: int = 32,
    learning_rate: float = 1e-4, patience: int = 3, seed: int = 0, version: str = "",
    trained_on: Annotated[str, typer.Option(help="'synthetic' or a description of the real data")] = "synthetic",
    promote: Annotated[bool, typer.Option(help="make it the served model")] = False,
) -> None:
    """Distributed training on Ray Train; evaluates on the test split and publishes a version."""
    _logging()
    from train.dataset import DatasetLayoutError, scan_layout

    try:
        scan_layout(data)  # a bad folder fails here, before Ray and TensorFlow start
    except DatasetLayoutError as exc:
        raise _fail(str(exc)) from None
    from train.distributed import TrainConfig
    from train.job import train_and_publish
    from xraylab.bands import Bands

    settings = load_settings()
    cfg = TrainConfig(data=str(data), arch=arch, workers=workers, gpus_per_worker=gpus_per_worker, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, patience=patience, seed=seed,
                      storage_path=str(settings.STATE_DIR / "train"))
    try:
        card, outcome = train_and_publish(cfg, model_dir=settings.model_dir, version=version, promote=promote,
                                          bands=Bands(settings.BAND_PNEUMONIA, settings.BAND_UNSURE),
                                          trained_on=trained_on)
    except (DatasetLayoutError, ValueError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps({"version": card.version, "test": card.metrics["test"],
                      "train_images_per_second": outcome.images_per_second, "promoted": promote}, indent=2))


@app.command("evaluate")
def evaluate(
    model: Annotated[str, typer.Option(help="model version ('' = the promoted one)")] = "",
    data: Annotated[Path, typer.Option(help="ROOT in the {split}/{NORMAL,PNEUMONIA} layout")] = Path("."),
    split: str = "test",
    out: Annotated[Path | None, typer.Option(help="where metrics.json, roc.png, confusion_matrix.png go")] = None,
) -> None:
    """Evaluate any model version on any labelled folder (accuracy, AUC, sensitivity, ... and plots)."""
    _logging()
    from train.dataset import DatasetLayoutError
    from train.evaluate import evaluate_model
    from xraylab.registry import ModelNotFoundError

    settings = load_settings()
    out = out or settings.STATE_DIR / "evaluations" / f"{model or 'promoted'}-{int(time.time())}"
    try:
        report = evaluate_model(settings.model_dir, model, data, out, split=split)
    except (DatasetLayoutError, ModelNotFoundError) as exc:
        raise _fail(str(exc)) from None
    summary = {k: report[k] for k in ("model_version", "n", "accuracy", "auc", "sensitivity", "specificity",
                                      "precision", "f1", "mcc", "confusion_matrix", "bands", "skipped")}
    summary["calibration_ece"] = report["calibration"]["ece"]
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")


@app.command("make-dataset")
def make_dataset(root: Path, train: int = 400, val: int = 80, test: int = 120, seed: int = 0) -> None:
    """Write a synthetic chest-xray set in the Kaggle layout ROOT/{train,val,test}/{NORMAL,PNEUMONIA}."""
    from train.synthetic import write_dataset

    counts = write_dataset(root, {"train": train, "val": val, "test": test}, seed=seed)
    print(json.dumps(counts))


@models_app.command("list")
def models_list() -> None:
    """List model versions (the promoted one marked with *)."""
    from xraylab.registry import list_cards, promoted_version

    settings = load_settings()
    promoted = promoted_version(settings.model_dir)
    for card in list_cards(settings.model_dir):
        mark = "*" if card.version == promoted else " "
        print(f"{mark} {card.version}  {card.architecture}  trained_on={card.trained_on}  {json.dumps(card.metrics)}")


@models_app.command("promote")
def models_promote(version: str) -> None:
    """Make VERSION the one serving loads."""
    from xraylab.registry import ModelNotFoundError, promote

    try:
        promote(load_settings().model_dir, version)
    except (ModelNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    print(f"promoted {version}")


@app.command("upload")
def upload(
    paths: Annotated[list[Path] | None, typer.Argument(help="image files; none = generate --count images")] = None,
    count: int = 20, bucket: str = "", hospital: str = "st-mary", seed: int = 0,
) -> None:
    """Upload X-ray images with study metadata to the source bucket (the simulated hospital)."""
    _logging()
    from ingest.uploader import upload_files, upload_generated
    from xraylab.storage import make_s3_client

    settings = load_settings()
    client = make_s3_client(settings.s3_endpoint(None))
    bucket = bucket or settings.S3_BUCKET
    if paths:
        done = upload_files(client, bucket, paths, hospital=hospital, seed=seed)
    else:
        done = upload_generated(client, bucket, count, seed=seed)
    print(f"uploaded {len(done)} images to s3://{bucket}")


@notifier_app.command("run")
def notifier_run() -> None:
    """Follow the SeaweedFS filer and produce S3 event JSON to Kafka until stopped."""
    _logging()
    import signal

    from ingest.notifier import SeaweedNotifier

    notifier = SeaweedNotifier(load_settings())
    signal.signal(signal.SIGTERM, lambda *_: notifier.stop_event.set())
    try:
        notifier.run()
    except KeyboardInterrupt:
        notifier.stop_event.set()


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_forever(pipeline: object) -> None:
    import signal

    # Ctrl-C and `kill` both stop cleanly, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        pipeline.stop()  # type: ignore[attr-defined]


@serve_app_cli.command("run")
def serve_run(database: Database = "default", ingest: bool = True, ui: bool = True,
              model_version: str = "", num_gpus: float = 0.0) -> None:
    """Run the Serve app (and the Kafka ingest actor) until Ctrl-C."""
    _logging()
    from serve_app.app import AppArgs
    from serve_app.launch import start_pipeline

    settings = load_settings()
    args = AppArgs(database=database, mount_ui=ui, model_version=model_version, classifier_num_gpus=num_gpus)
    pipeline = start_pipeline(settings, args, ingest=ingest)
    print(f"serving at {pipeline.url} (UI at {pipeline.url}/ui); Ctrl-C to stop")
    _wait_forever(pipeline)


@app.command("ui")
def ui(database: Database = "default", port: int = 0) -> None:
    """Run the review app on its own (Gradio server), reading the same database and S3."""
    _logging()
    from ui.review_app import S3ImageLoader, build_review_app
    from xraylab.db.session import make_engine

    settings = load_settings()
    users = settings.ui_users()
    if not users:
        raise _fail("set XRAYLAB_UI_USERS (name:password,...): the app shows patient data")
    demo = build_review_app(make_engine(settings.database_url(database)), S3ImageLoader(settings),
                            model_dir=settings.model_dir)
    demo.launch(server_name="127.0.0.1", server_port=port or settings.UI_PORT, auth=users)


@app.command("demo")
def demo(count: int = 24, database: Database = "default", timeout_s: float = 300.0, seed: int = -1,
         serve_forever: Annotated[bool, typer.Option(help="keep serving the UI until Ctrl-C")] = True) -> None:
    """Bootstrap a model if none, run the pipeline, upload COUNT generated X-rays, summarise, serve the UI."""
    _logging()
    from ingest.uploader import upload_generated
    from serve_app.app import AppArgs
    from serve_app.launch import start_pipeline
    from xraylab.db.crud import worklist
    from xraylab.db.session import make_engine
    from xraylab.registry import SYNTHETIC_NOTICE, list_cards
    from xraylab.storage import make_s3_client

    settings = load_settings()
    if not list_cards(settings.model_dir):
        from train.bootstrap import train_bootstrap_model

        print("no model yet: training the bootstrap CNN on generated images ...")
        train_bootstrap_model(settings.model_dir)
    pipeline = start_pipeline(settings, AppArgs(database=database))
    prefix = f"demo-{int(time.time())}/"
    client = make_s3_client(settings.s3_endpoint(None))
    uploads = upload_generated(client, settings.S3_BUCKET, count, prefix=prefix,
                               seed=seed if seed >= 0 else int(time.time()))
    print(f"uploaded {count} generated X-rays to s3://{settings.S3_BUCKET}/{prefix}")
    engine = make_engine(settings.database_url(database))
    keys = {u.key for u in uploads}
    deadline = time.time() + timeout_s
    rows: list[dict] = []
    while time.time() < deadline:
        rows = [r for r in worklist(engine, limit=100000) if r["object_key"] in keys]
        if len(rows) >= count:
            break
        time.sleep(1)
    bands: dict[str, int] = {}
    for r in rows:
        bands[r["band"]] = bands.get(r["band"], 0) + 1
    truth = {u.key: u.label for u in uploads}
    agree = sum((r["score"] > 0.5) == (truth[r["object_key"]] == "PNEUMONIA") for r in rows)
    print("\n=== xraylab demo summary ===")
    print(f"images uploaded: {count}; predictions stored: {len(rows)}")
    print("risk bands: " + ", ".join(f"{b}={n}" for b, n in sorted(bands.items())))
    if rows:
        print(f"agreement with the generator's labels (score > 0.5): {agree}/{len(rows)}")
    print(f"rows in: {engine.url.render_as_string(hide_password=True)} (tables studies, predictions)")
    print(f"ingest: {pipeline.ingest_stats()}")
    print(f"NOTE: {SYNTHETIC_NOTICE}")
    if len(rows) < count:
        print(f"error: only {len(rows)}/{count} predictions within {timeout_s:.0f}s", file=sys.stderr)
        pipeline.stop()
        raise typer.Exit(1)
    env_file = settings.STATE_DIR / "local.env"
    print(f"\nReview app: {pipeline.url}/ui  (user 'doctor'; password in {env_file}, XRAYLAB_UI_USERS)")
    if serve_forever:
        print("Ctrl-C to stop.")
        _wait_forever(pipeline)
    else:
        pipeline.stop()


def _cluster_script(name: str) -> None:
    script = project_root() / "cluster" / "local" / f"{name}.sh"
    raise typer.Exit(subprocess.call(["bash", str(script)]))


@cluster_app.command("up")
def cluster_up() -> None:
    """Install if missing and start SeaweedFS, Kafka, MariaDB and the notifier."""
    _cluster_script("up")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop what `cluster up` started."""
    _cluster_script("down")


@cluster_app.command("status")
def cluster_status() -> None:
    """Exit 0 only if every service answers a real request."""
    _cluster_script("status")


if __name__ == "__main__":
    app()
