"""Commands of the shared package (events, db, models, cluster), and the helpers every layer's
commands use. The ``xraylab`` console script (``xraylab_cli``) gathers these with the commands of
each layer; this module imports no layer above the shared package."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from xraylab.settings import load_settings, project_root

__all__ = ["register", "fail", "setup_logging", "DatabaseOption", "operator_name", "open_database"]

DatabaseOption = Annotated[str, typer.Option(help="'default' (XRAYLAB_DATABASE_URL, SQLite unless set) or 'mariadb'")]

events_app = typer.Typer(help="S3 event notifications.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
cluster_app = typer.Typer(help="The local stack (cluster/local).", no_args_is_help=True)
users_app = typer.Typer(help="Accounts of the review app and the HTTP API.", no_args_is_help=True)
export_app = typer.Typer(help="De-identified exports.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    for sub, name in ((events_app, "events"), (db_app, "db"), (models_app, "models"), (cluster_app, "cluster"),
                      (users_app, "users"), (export_app, "export")):
        root.add_typer(sub, name=name)
    root.command("audit")(audit)
    root.command("predict")(predict)


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


RegistryOption = Annotated[str, typer.Option(
    "--registry", help="s3://BUCKET[/PREFIX] or a folder; default XRAYLAB_MODEL_REGISTRY, else XRAYLAB_MODEL_DIR")]


def _registry(location: str, *, publish: bool = False):  # -> xraylab.registry.Registry
    """The registry; ``publish``: as training's S3 identity (promote, import, install), else serving's (reads)."""
    from xraylab.registry import open_registry

    try:
        return open_registry(load_settings(), location, publish=publish)
    except (ValueError, KeyError) as exc:  # a bad location; an unknown XRAYLAB_MODEL_REGISTRY_ENDPOINT
        raise fail(str(exc).strip('"')) from None


def _registry_errors() -> tuple[type[BaseException], ...]:
    """What a registry raises for a person's mistake or a store that does not answer: one line, exit 2."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from xraylab.registry import ModelNotFoundError

    return ModelNotFoundError, ValueError, FileExistsError, OSError, BotoCoreError, ClientError, Boto3Error


@models_app.command("list")
def models_list(registry: RegistryOption = "") -> None:
    """List model versions, oldest first (the promoted one marked with *)."""
    reg = _registry(registry)
    try:
        promoted = reg.promoted_version()
        cards = reg.list_cards()
    except _registry_errors() as exc:
        raise fail(f"{reg.location}: {exc}") from None
    for card in cards:
        mark = "*" if card.version == promoted else " "
        print(f"{mark} {card.version}  {card.architecture}  trained_on={card.trained_on}  {json.dumps(card.metrics)}")


@models_app.command("promote")
def models_promote(version: str, registry: RegistryOption = "") -> None:
    """Make VERSION the one serving loads (every replica that follows promotions switches to it)."""
    reg = _registry(registry, publish=True)
    try:
        reg.promote(version)
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    print(f"promoted {version} in {reg.location}")


@models_app.command("install-shipped")
def models_install_shipped(registry: RegistryOption = "") -> None:
    """Install the model the project ships (XRAYLAB_SHIPPED_MODELS, default models/: trained on real X-rays) into
    the registry, and promote it unless a model trained on real data is promoted there already. Its files are
    checked against their committed SHA256SUMS and signed with XRAYLAB_MODEL_SIGNING_KEY: installing vouches
    for them."""
    from xraylab.registry import ShippedRegistry

    settings = load_settings()
    assert settings.SHIPPED_MODELS is not None
    reg = _registry(registry, publish=True)
    try:
        card, done = reg.install_shipped(ShippedRegistry(settings.SHIPPED_MODELS))
    except _registry_errors() as exc:
        raise fail(f"{settings.SHIPPED_MODELS} -> {reg.location}: {exc}") from None
    print(f"{card.version} in {reg.location}: {', '.join(done) or 'already there'}"
          f"; promoted: {reg.promoted_version()}")


@models_app.command("import")
def models_import(
    source: Annotated[Path, typer.Argument(help="a version folder (card.json, model.keras, ...) or a folder "
                                                "registry whose versions are all imported")],
    registry: RegistryOption = "",
    promote: Annotated[bool, typer.Option(help="promote the imported version (one version only)")] = False,
) -> None:
    """Copy model versions from a folder into the registry (e.g. the embedded folder into S3); versions the
    registry already has are left as they are. Each is signed with XRAYLAB_MODEL_SIGNING_KEY (importing vouches
    for it); a copy that carries a signature must be whole as it was signed."""
    from xraylab.registry import FolderRegistry, ModelCard

    reg = _registry(registry, publish=True)
    if not source.is_dir():
        raise fail(f"{source} is not a folder")
    single = (source / "card.json").is_file()
    folders = [source] if single else [source / v for v in FolderRegistry(source).versions()]
    if not folders:
        raise fail(f"{source} holds no model version (a folder with card.json and model.keras)")
    if promote and len(folders) != 1:
        raise fail(f"--promote needs one version; {source} holds {len(folders)}")
    imported = 0
    for folder in folders:
        try:
            try:
                card = reg.import_dir(folder)
                imported += 1
                print(f"imported {card.version} into {reg.location}")
            except FileExistsError as exc:
                print(f"skipped: {exc}")
                card = ModelCard.from_json((folder / "card.json").read_bytes(), str(folder / "card.json"))
            if promote:
                reg.promote(card.version)
                print(f"promoted {card.version}")
        except _registry_errors() as exc:
            raise fail(str(exc)) from None
    print(f"{imported} of {len(folders)} versions imported")


@models_app.command("keygen")
def models_keygen(
    name: Annotated[str, typer.Option(help="the key's name in the trusted file (default: training@<host>)")] = "",
    check: Annotated[bool, typer.Option(help="make nothing: exit 1 unless the key is there and trusted")] = False,
) -> None:
    """Make the model signing key pair where there is none: the private key XRAYLAB_MODEL_SIGNING_KEY (mode 600,
    training's alone) and its public line appended to XRAYLAB_MODEL_TRUSTED_KEYS. Never overwrites a key: run it
    again and it changes nothing (it adds the key's public line to the trusted file if that lost it)."""
    import socket

    from xraylab.registry import ModelKeys, SigningKeyError
    from xraylab.registry.signing import generate_key_pair, key_id, load_signing_key, read_trusted_keys

    keys = ModelKeys.from_settings(load_settings())
    if check:
        try:
            ident = key_id(load_signing_key(keys.signing_key).public_key())
            trusted = ident in read_trusted_keys(keys.trusted_keys)
        except (SigningKeyError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        print(f"model signing key {ident}: {keys.signing_key}; "
              f"{'trusted in' if trusted else 'NOT trusted in'} {keys.trusted_keys}")
        if not trusted:
            raise typer.Exit(1)
        return
    try:
        pair = generate_key_pair(keys, name or f"training@{socket.gethostname()}")
    except (SigningKeyError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    made = f"created {keys.signing_key}" if pair.created else f"{keys.signing_key} exists (kept)"
    trusted = f"added to {keys.trusted_keys}" if pair.trusted_added else f"already in {keys.trusted_keys}"
    print(f"model signing key {pair.key_id}: {made}; {trusted}")


@models_app.command("verify")
def models_verify(
    version: Annotated[str, typer.Argument(help="model version (default: every version)")] = "",
    registry: RegistryOption = "",
) -> None:
    """Check versions against their signatures and XRAYLAB_MODEL_TRUSTED_KEYS, as serving does before it loads
    one: one line per version, exit 1 when any is refused."""
    reg = _registry(registry)
    try:
        versions = [version] if version else reg.versions()
    except _registry_errors() as exc:
        raise fail(f"{reg.location}: {exc}") from None
    refused = 0
    for v in versions:
        try:
            verified = reg.verify(v)
            print(f"ok       {v}  signed by {verified.key_name or '(unnamed)'} {verified.key_id}")
        except _registry_errors() as exc:
            refused += 1
            print(f"REFUSED  {v}  {getattr(exc, 'reason', exc)}")
    if refused:
        raise typer.Exit(1)


def predict(
    files: Annotated[list[Path], typer.Argument(help="JPEG, PNG or DICOM files to score")],
    model: Annotated[str, typer.Option(help="model version; default the promoted one")] = "",
    registry: RegistryOption = "",
) -> None:
    """Score files with the registry's model through the preprocessing serving uses: one JSON line per file,
    {file, score, band, model_version}, or {file, error, reason} for a file it refuses (exit 0 either way); the
    model card's notice (trained on generated images, or research use only) on stderr."""
    from xraylab.file_scoring import score_files

    settings = load_settings()
    reg = _registry(registry)
    try:
        version = reg.resolve_version(model)  # checked before any output; and a promotion meanwhile changes nothing
        reg.verify(version)  # a version no trusted key signed: one line, exit 2 (loading would refuse it too)
        notice = reg.read_card(version).notice
    except _registry_errors() as exc:
        raise fail(str(exc)) from None
    print(f"note: {notice}", file=sys.stderr)  # what the scores are worth; stdout stays one JSON line per file
    for result in score_files(reg, files, version=version, limits=settings.image_limits(),
                              max_bytes=settings.MAX_IMAGE_BYTES):
        print(json.dumps(result), flush=True)


@export_app.command("research")
def export_research_command(
    band: Annotated[list[str] | None, typer.Option("--band", help="a band to export (repeatable); default "
                                                                  "XRAYLAB_RESEARCH_BANDS")] = None,
    limit: Annotated[int, typer.Option(help="at most this many studies in this run", min=1)] = 1000,
    database: DatabaseOption = "default",
) -> None:
    """Copy the DICOM studies of a band, de-identified (PS3.15 E.1, keyed pseudonyms and UIDs, shifted dates,
    burned-in text blurred), to XRAYLAB_RESEARCH_BUCKET; prints {"exported", "skipped": {why: n}}."""
    setup_logging()
    from xraylab.bands import BAND_ORDER
    from xraylab.db.session import Database
    from xraylab.ocr import TesseractMissingError
    from xraylab.research_export import export_research
    from xraylab.settings import MissingCredentialsError

    settings = load_settings()
    if unknown := [b for b in band or [] if b not in BAND_ORDER]:
        raise fail(f"unknown band(s) {', '.join(unknown)}: use {', '.join(BAND_ORDER)}")
    try:
        report = export_research(Database(settings.database_url(database)), settings, bands=band or None, limit=limit)
    except (ValueError, TesseractMissingError, MissingCredentialsError) as exc:
        raise fail(str(exc)) from None
    print(json.dumps(report.to_dict()))


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


def _read_password(confirm: bool = True) -> str:
    """From the terminal (asked twice, not echoed), or the first line of stdin when it is not a terminal;
    never from the command line, where other users and the shell history would see it."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password again: ") != password:
        raise fail("the two passwords differ")
    return password


def open_database(database: str):  # type: ignore[no-untyped-def]
    """The database a command names (``--database``)."""
    from xraylab.db.session import Database

    return Database(load_settings().database_url(database))


HospitalOption = Annotated[list[str] | None, typer.Option(
    "--hospital", help="a hospital whose patients the user reads (repeat for several)")]


@users_app.command("add")
def users_add(name: str, role: Annotated[str, typer.Option(help="doctor or admin")] = "doctor",
              hospital: HospitalOption = None,
              network: Annotated[bool, typer.Option("--network", help=(
                  "the network-wide reading grant: every hospital's patients"))] = False,
              database: DatabaseOption = "default") -> None:
    """Create user NAME; the password is asked for (or read from stdin's first line). The user reads the
    patients of each --hospital, or of all with --network; with neither, none (an admin who manages accounts)."""
    from xraylab.accounts import AccountError, create_user
    from xraylab.db.review import record_audit
    from xraylab.db.scope import ReadScope

    password = _read_password()
    scope = ReadScope.of(hospital or (), network)
    try:
        with open_database(database).session() as session:
            create_user(session, name, password, role, hospitals=scope.hospitals, network=network)
            record_audit(session, operator_name(), "user_added", detail=f"{name} ({role}); reads {scope.describe()}")
    except AccountError as exc:
        raise fail(str(exc)) from None
    print(f"user {name} ({role}) added; reads {scope.describe()}")


def operator_name() -> str:
    """Who ran a command, for the audit trail: the operating system's user."""
    import getpass

    try:
        return f"os:{getpass.getuser()}"[:64]
    except Exception:
        return "os:unknown"


@users_app.command("hospitals")
def users_hospitals(name: str, add: Annotated[list[str] | None, typer.Option("--add", help="a hospital to add")] = None,
                    remove: Annotated[list[str] | None, typer.Option("--remove", help="one to take away")] = None,
                    database: DatabaseOption = "default") -> None:
    """Change which hospitals' patients user NAME reads (a local account's; a directory account's come from its
    groups). With no option, print them."""
    from xraylab.accounts import AccountError, set_hospitals, user_scope

    if not add and not remove:
        try:
            with open_database(database).session() as session:
                print(f"{name} reads {user_scope(session, name).describe()}")
        except AccountError as exc:
            raise fail(str(exc)) from None
        return
    scope = _account_change(database, lambda session: set_hospitals(session, name, add or (), remove or ()),
                            "user_hospitals", f"{name}: +{sorted(add or [])} -{sorted(remove or [])}")
    print(f"{name} reads {scope.describe()}")


@users_app.command("grant-network")
def users_grant_network(name: str, database: DatabaseOption = "default") -> None:
    """Give user NAME the network-wide reading grant: every hospital's patients."""
    _set_network(name, True, database)


@users_app.command("revoke-network")
def users_revoke_network(name: str, database: DatabaseOption = "default") -> None:
    """Take the network-wide reading grant back from user NAME."""
    _set_network(name, False, database)


def _account_change(database: str, change: Any, action: str, detail: str) -> Any:
    """``change(session)`` and its line of the audit trail in one transaction; a refused change exits 2."""
    from xraylab.accounts import AccountError
    from xraylab.db.review import record_audit

    try:
        with open_database(database).session() as session:
            result = change(session)
            record_audit(session, operator_name(), action, detail=detail)
    except AccountError as exc:
        raise fail(str(exc)) from None
    return result


def _set_network(name: str, granted: bool, database: str) -> None:
    from xraylab.accounts import set_network_reader

    _account_change(database, lambda session: set_network_reader(session, name, granted),
                    "network_granted" if granted else "network_revoked", name)
    print(f"user {name}: network-wide reading {'granted' if granted else 'revoked'}")


@users_app.command("disable")
def users_disable(name: str, database: DatabaseOption = "default") -> None:
    """Disable user NAME: their sessions end at once and their API keys stop working."""
    _set_disabled(name, True, database)


@users_app.command("enable")
def users_enable(name: str, database: DatabaseOption = "default") -> None:
    """Enable user NAME again (and lift a login lock)."""
    _set_disabled(name, False, database)


def _set_disabled(name: str, disabled: bool, database: str) -> None:
    from xraylab.accounts import set_disabled

    _account_change(database, lambda session: set_disabled(session, name, disabled),
                    "user_disabled" if disabled else "user_enabled", name)
    print(f"user {name} {'disabled' if disabled else 'enabled'}")


@users_app.command("add-key")
def users_add_key(name: str, label: Annotated[str, typer.Option(help="what the key is for")] = "",
                  database: DatabaseOption = "default") -> None:
    """Make an API key for user NAME and print it once (only its hash is kept): send it as
    'Authorization: Bearer KEY' to /v1/..."""
    from xraylab.accounts import AccountError, create_api_key
    from xraylab.db.review import record_audit

    try:
        with open_database(database).session() as session:
            key = create_api_key(session, name, label or None)
            record_audit(session, None, "api_key_added", detail=f"{name} {key.split('_')[1]}")
    except AccountError as exc:
        raise fail(str(exc)) from None
    print(key)


@users_app.command("revoke-key")
def users_revoke_key(key_id: Annotated[str, typer.Argument(help="the key, or its id: the part after xrk_")],
                     database: DatabaseOption = "default") -> None:
    """Revoke an API key at once."""
    from xraylab.accounts import AccountError, revoke_api_key
    from xraylab.db.review import record_audit

    try:
        with open_database(database).session() as session:
            owner = revoke_api_key(session, key_id)
            record_audit(session, None, "api_key_revoked", detail=f"{owner} {key_id.removeprefix('xrk_')[:12]}")
    except AccountError as exc:
        raise fail(str(exc)) from None
    print(f"key revoked ({owner})")


@users_app.command("list")
def users_list(database: DatabaseOption = "default") -> None:
    """One line per user: name, role, local or directory, disabled or not, what it reads, API keys, last login."""
    from xraylab.accounts import list_users

    with open_database(database).session() as session:
        for user in list_users(session):
            state = "disabled" if user["disabled"] else "active"
            print(f"{user['name']}\t{user['role']}\t{user['source']}\t{state}\treads={user['scope'].describe()}\t"
                  f"keys={user['api_keys']}\tlast_login={user['last_login_at']}")


def audit(study: Annotated[int | None, typer.Option(help="one study's trail")] = None,
          user: Annotated[str | None, typer.Option(help="one user's actions")] = None,
          patient: Annotated[str | None, typer.Option(help="who saw patient P (their patient ID): every study")] = None,
          limit: int = 1000, database: DatabaseOption = "default") -> None:
    """Print the audit trail (logins, worklist pages and the studies they listed, studies opened, pictures,
    verdicts), oldest first. The query itself is audited, under the operating system's user."""
    from xraylab.db.review import audit_trail, record_audit

    if study is None and user is None and patient is None:
        raise fail("name a --study ID, a --user NAME or a --patient ID")
    with open_database(database).session() as session:
        events = audit_trail(session, study_id=study, user_name=user, limit=limit, patient_id=patient)
        asked = {"study": study, "user": user, "patient": "given" if patient is not None else None}
        record_audit(session, operator_name(), "audit_query", study_id=study,
                     detail=" ".join(f"{k}={v}" for k, v in asked.items() if v is not None))
    if not events:
        print("no audit events" + (f" for study {study}" if study is not None else ""), file=sys.stderr)
    for event in events:
        where = f"study={event['study_id']}" if event["study_id"] is not None else "-"
        if event["listed"]:
            where = "listed=" + ",".join(str(i) for i in event["listed"])
        print(f"{event['at']:%Y-%m-%d %H:%M:%S}\t{event['user'] or '-'}\t{event['action']}\t{where}\t"
              f"{event['detail'] or ''}")
