"""The demo: the model trained on real X-rays (``models/``, installed and promoted; a bootstrap model trained on
generated images where there is none), the pipeline, X-rays through it (real test X-rays where a labelled folder
of them is at hand, generated ones otherwise), a summary.

``xraylab demo`` (``make demo``) runs it and then keeps serving the review app.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve_app.app import AppArgs
from serve_app.launch import Pipeline, start_pipeline
from xraylab.bands import NORMAL
from xraylab.labels import PNEUMONIA_CLASS
from xraylab.registry import (
    ModelKeys,
    ModelNotFoundError,
    ShippedRegistry,
    list_cards,
    open_registry,
    read_card,
    resolve_version,
)
from xraylab.settings import Settings

__all__ = ["DemoSummary", "run_demo", "ensure_demo_account", "DEMO_USER", "demo_pacs_hospitals"]

DEMO_USER = "doctor"

log = logging.getLogger("xraylab.demo")


@dataclass
class DemoSummary:
    uploaded: int
    bucket: str
    prefix: str
    source: str = "generated"  # where the uploaded images came from: "generated", or the labelled folder
    notice: str = ""  # the serving model's card notice
    pacs: int = 0  # DICOM studies sent to the PACS by C-STORE
    stored: int = 0
    bands: Counter[str] = field(default_factory=Counter)
    agree: int = 0  # of the uploaded images' rows, how many have score > 0.5 matching their label
    uploads_stored: int = 0  # rows of the uploaded images (the PACS studies are generated: counted apart)
    agree_band: int = 0  # of those, how many have a band matching their label (Pneumonia or Unsure: pneumonia)
    database: str = ""
    ingest: dict[str, object] = field(default_factory=dict)
    monitor: str = ""
    delivery: dict[str, dict[str, int]] = field(default_factory=dict)  # destination -> state -> results

    @property
    def complete(self) -> bool:
        return self.stored >= self.uploaded + self.pacs

    def lines(self) -> list[str]:
        what = ("generated X-rays (no real X-rays at hand: see --xrays)" if self.source == "generated"
                else f"real X-rays from {self.source}")
        out = ["=== xraylab demo summary ===",
               f"images uploaded: {self.uploaded} {what} to s3://{self.bucket}/{self.prefix}",
               f"DICOM studies sent to the PACS by C-STORE: {self.pacs}",
               f"predictions stored: {self.stored}",
               "risk bands: " + ", ".join(f"{b}={n}" for b, n in sorted(self.bands.items()))]
        if self.uploads_stored:
            whose = "the generator's labels" if self.source == "generated" else "their NORMAL/PNEUMONIA labels"
            out.append(f"agreement of the uploaded images with {whose}: score > 0.5 {self.agree}/"
                       f"{self.uploads_stored}, band (Pneumonia or Unsure for pneumonia) "
                       f"{self.agree_band}/{self.uploads_stored}")
        if self.delivery:
            out.append("results delivered (xraylab outbox list): " + ", ".join(
                f"{d} {states.get('sent', 0)}/{sum(states.values())}"
                + (f" ({states['failed']} set aside)" if states.get("failed") else "")
                for d, states in sorted(self.delivery.items()))
                + "; PACS: SR and Grad-CAM series in each study, RIS: ORU^R01 messages")
        out += [f"rows in: {self.database} (tables studies, predictions)", f"ingest: {self.ingest}",
                f"model monitor: {self.monitor}", f"NOTE: {self.notice}"]
        return out


def ensure_demo_model(settings: Settings) -> str:
    """The shipped model trained on real X-rays installed and promoted (``Registry.install_shipped``: checked
    against its committed checksums and signed with the local training key); where the checkout ships none, a
    bootstrap model when the registry has no model at all. The local signing key pair is made first where there
    is none (what ``xraylab models keygen``, cluster/local/keys.sh, does). Returns what was done."""
    from xraylab.registry.signing import generate_key_pair

    pair = generate_key_pair(ModelKeys.from_settings(settings), "demo training key")
    if pair.created or pair.trusted_added:
        log.info("model signing key %s made for the demo (%s)", pair.key_id, settings.MODEL_SIGNING_KEY)
    registry = open_registry(settings, publish=True)
    shipped = ShippedRegistry(settings.SHIPPED_MODELS) if settings.SHIPPED_MODELS else None
    if shipped is not None and shipped.versions():
        card, done = registry.install_shipped(shipped)
        return f"{card.version}: {', '.join(done) or 'already installed'}"
    if list_cards(registry):
        return "no shipped model; the registry's own"
    from train.bootstrap import train_bootstrap_model

    log.info("no model yet: training the bootstrap CNN on generated images ...")
    return "bootstrap " + train_bootstrap_model(registry, bands=settings.bands()).version


def run_demo(settings: Settings, *, count: int, database: str, timeout_s: float, seed: int,
             pacs: int = 0, xrays: Path | None = None) -> tuple[Pipeline, DemoSummary]:
    """Run the pipeline, upload ``count`` X-rays (real ones from the labelled folder ``xrays`` where it exists,
    generated ones otherwise) and send ``pacs`` generated DICOM studies (patient data burned into the pixels too)
    to the PACS, and wait (up to ``timeout_s``) for their rows. The pipeline is left running for the caller to
    serve or stop."""
    from ingest.pacs_sender import PacsTarget
    from ingest.standin_doctor import wait_for_scores
    from ingest.uploader import DicomOptions, send_generated_to_pacs, upload_generated, upload_labelled
    from xraylab.db.session import Database, upgrade_schema
    from xraylab.orthanc import PACS_BUCKET
    from xraylab.storage import make_s3_client

    log.info("model: %s", ensure_demo_model(settings))
    db = Database(settings.database_url(database))
    upgrade_schema(db.engine)
    ensure_demo_account(db, settings)
    pipeline = start_pipeline(settings, AppArgs(database=database))
    prefix = f"demo-{int(time.time())}/"
    client = make_s3_client(settings.s3_endpoint(None, "upload"))
    real = xrays is not None and xrays.is_dir()
    if real:
        uploads = upload_labelled(client, settings.S3_BUCKET, xrays, count, prefix=prefix, seed=seed)
    else:
        uploads = upload_generated(client, settings.S3_BUCKET, count, prefix=prefix, seed=seed)
    log.info("uploaded %d %s X-rays to s3://%s/%s", len(uploads), "real" if real else "generated",
             settings.S3_BUCKET, prefix)
    sent = send_generated_to_pacs(PacsTarget.from_settings(settings), pacs, seed=seed + 1,
                                  dicom=DicomOptions("jpeg2000-lossless", bits=16, burn_in=True),
                                  hospitals=demo_pacs_hospitals(settings)) if pacs else []
    log.info("sent %d generated DICOM studies to the PACS", len(sent))
    keys = {u.key: u.label for u in uploads}
    started = time.monotonic()
    rows = list(wait_for_scores(db, settings.S3_BUCKET, [u.key for u in uploads], timeout_s).values())
    uploaded_rows = list(rows)
    if sent:
        rows += wait_for_scores(db, PACS_BUCKET, [u.key for u in sent],
                                max(1.0, timeout_s - (time.monotonic() - started))).values()
    summary = DemoSummary(uploaded=len(uploads), bucket=settings.S3_BUCKET, prefix=prefix, pacs=len(sent),
                          stored=len(rows), source=str(xrays) if real else "generated",
                          notice=_serving_notice(settings),
                          bands=Counter(r["band"] for r in rows),
                          uploads_stored=len(uploaded_rows), agree=sum(
                              (r["score"] > 0.5) == (keys[r["object_key"]] == PNEUMONIA_CLASS) for r in uploaded_rows),
                          agree_band=sum((r["band"] != NORMAL) == (keys[r["object_key"]] == PNEUMONIA_CLASS)
                                         for r in uploaded_rows),
                          database=db.engine.url.render_as_string(hide_password=True),
                          ingest=pipeline.ingest_stats(), monitor=_start_monitor(settings, db, database),
                          delivery=_wait_for_delivery(db, [r["id"] for r in rows], 120.0)
                          if pipeline.delivery is not None else {})
    db.dispose()
    return pipeline, summary


def demo_pacs_hospitals(settings: Settings) -> tuple[str, ...]:
    """Where the demo's PACS studies come from: the PACS's own hospital (``XRAYLAB_ORTHANC_HOSPITAL``, which
    scripts/demo.sh sets to one of the demo doctor's hospitals) where one is configured, so that their
    InstitutionName says what their rows say; else the demo's hospitals, each study's InstitutionName its own."""
    from ingest.uploader import HOSPITALS

    return (settings.ORTHANC_HOSPITAL,) if settings.ORTHANC_HOSPITAL else HOSPITALS


def _wait_for_delivery(db: Any, study_ids: list[int], timeout_s: float) -> dict[str, dict[str, int]]:
    """The deliveries of these studies per destination and state, once none is queued (or after ``timeout_s``)."""
    from xraylab.db.outbox import QUEUED, states_of

    deadline = time.monotonic() + timeout_s
    while True:
        with db.session() as session:
            states = states_of(session, study_ids)
        if not any(s.get(QUEUED) for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(1.0)


def _serving_notice(settings: Settings) -> str:
    try:
        registry = open_registry(settings)
        return read_card(registry, resolve_version(registry)).notice
    except (ModelNotFoundError, ValueError) as exc:
        return f"no model card to read ({exc})"


def _start_monitor(settings: Settings, db: Any, database: str) -> str:
    """The monitor of the served model, with one run now so that the Monitor tab has its first figures."""
    from serve_app.monitor_actor import run_monitor_now, start_monitor
    from xraylab.registry import resolve_version

    try:
        version = resolve_version(open_registry(settings))
        state, message = start_monitor(settings, db, version, database)
        if state == "active":
            run_monitor_now(version, "drift", timeout_s=120)
        return f"{state} for {version}" + (f" ({message})" if message else " (the Monitor tab of the review app)")
    except Exception as exc:  # the demo goes on without it
        log.warning("the model monitor did not start: %s", exc)
        return f"not started ({type(exc).__name__})"


def ensure_demo_account(db: Any, settings: Settings) -> Path | None:
    """On a database with no account yet, a ``doctor`` account reading the demo's hospitals (``HOSPITALS``) with a
    generated password, written to
    ``<state dir>/demo-login.txt`` (mode 0600), never to a log. Returns that file (None: accounts exist)."""
    import secrets

    from xraylab.accounts import create_user, list_users

    login_file = settings.STATE_DIR / "demo-login.txt"
    with db.session() as session:
        if list_users(session):
            return login_file if login_file.exists() else None
        password = secrets.token_urlsafe(15)
        from ingest.uploader import HOSPITALS

        create_user(session, DEMO_USER, password, "doctor", hospitals=HOSPITALS)  # the demo's hospitals, by name
    login_file.parent.mkdir(parents=True, exist_ok=True)
    login_file.touch(mode=0o600)
    login_file.write_text(f"user: {DEMO_USER}\npassword: {password}\n")
    log.info("created the demo account %r; its password is in %s", DEMO_USER, login_file)
    return login_file
