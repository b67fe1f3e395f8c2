"""Commands of the shared package (events, db, models, cluster), and the helpers every layer's
commands use. The ``xraylab`` console script (``xraylab_cli``) gathers these with the commands of
each layer; this module imports no layer above the shared package."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from xraylab.settings import load_settings, project_root

__all__ = ["register", "fail", "setup_logging", "DatabaseOption"]

DatabaseOption = Annotated[str, typer.Option(help="'default' (XRAYLAB_DATABASE_URL, SQLite unless set) or 'mariadb'")]

events_app = typer.Typer(help="S3 event notifications.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
cluster_app = typer.Typer(help="The local stack (cluster/local).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    for sub, name in ((events_app, "events"), (db_app, "db"), (models_app, "models"), (cluster_app, "cluster")):
        root.add_typer(sub, name=name)


def fail(message: str) -> typer.Exit:
    """Print a one-line error; ``raise fail(...) from None`` exits with status 2 (bad input)."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(2)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@events_app.command("parse")
def events_parse(file: Annotated[str, typer.Argument(help="event JSON file, or - for stdin")]) -> None:
    """Print one JSON line {bucket, key, size} per object to process; nothing for an event to ignore."""
    from xraylab.events import MalformedEventError, parse_s3_event

    try:
        payload = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    try:
        items = parse_s3_event(payload)
    except MalformedEventError as exc:
        raise fail(str(exc)) from None
    for item in items:
        print(json.dumps({"bucket": item.bucket, "key": item.key, "size": item.size}))


@db_app.command("upgrade")
def db_upgrade(database: DatabaseOption = "default") -> None:
    """Apply the Alembic migrations up to head (a start-up step: the Writer does not migrate)."""
    from xraylab.db.session import make_engine, upgrade_schema

    engine = make_engine(load_settings().database_url(database))
    upgrade_schema(engine)
    print(f"{database} database ({engine.dialect.name}) at head")


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
        raise fail(str(exc)) from None
    print(f"promoted {version}")


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
