"""The model monitor on the running system: its actor in the Ray cluster reads what the pipeline stored
(MariaDB) and the images in SeaweedFS, and alerts go to the real Kafka topic.

Windows of generated uploads, clean or with drift injected as the uploader does it, each followed by one
monitor run: clean windows raise nothing; blurred, transposed and brightened ones cross the hard image-drift
limit, each alert fires once and resolves when clean data returns; one hospital's drift shows in its own
figure; verdicts from a stand-in doctor that disagree with the predictions cross the accuracy limit, and on
clean data the realised figures lie within the interval estimated from the scores. The figures measured
here are written to ``<state dir>/monitor-e2e.json``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete

from ingest.standin_doctor import record_standin_verdicts
from ingest.uploader import Drift, upload_generated
from tests.cli import xraylab
from tests.e2e.observe import rows_for
from xraylab.db import monitoring as store
from xraylab.db.models import MonitorAlert, MonitorResult, MonitorRow
from xraylab.registry import resolve_version

pytestmark = pytest.mark.e2e
WINDOW = 60  # images per monitor run here (XRAYLAB_MONITOR_MIN_IMAGES)
WAIT_S = 240
MONITOR_ENV = {"XRAYLAB_MONITOR_MIN_IMAGES": str(WINDOW), "XRAYLAB_MONITOR_MIN_SLICE": "50",
               "XRAYLAB_MONITOR_SETTLE_S": "0",  # the test waits until its window is scored, then runs
               "XRAYLAB_MONITOR_PERFORMANCE_WINDOW": str(WINDOW),
               # runs happen when the test asks (run_now), besides the first one at start
               "XRAYLAB_MONITOR_DRIFT_INTERVAL_S": "3600", "XRAYLAB_MONITOR_HEALTH_INTERVAL_S": "3600"}


@pytest.fixture(scope="module")
def monitor_bucket(settings) -> Iterator[str]:
    from xraylab.storage import make_s3_client

    s3 = make_s3_client(settings.s3_endpoint(None, "admin"))
    name = f"test-monitor-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="module")
def monitor(pipeline, settings, mariadb) -> Iterator[str]:
    """The monitor of the served model, started afresh through the actor as `xraylab monitor start` does."""
    from serve_app.monitor_actor import start_monitor, stop_monitor

    version = resolve_version(settings.model_dir)
    stop_monitor(mariadb, version)  # one left running (detached) would keep its own settings and schedule
    with mariadb.session() as session:  # a fresh monitor: no streaks, alerts or figures of an earlier run
        for table in (MonitorRow, MonitorAlert, MonitorResult):
            session.execute(delete(table).where(table.model_version == version))
    saved = {k: os.environ.get(k) for k in MONITOR_ENV}
    os.environ.update(MONITOR_ENV)  # handed to the actor's worker (Settings.env_for_workers)
    try:
        state, message = start_monitor(settings, mariadb, version, "mariadb")
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    assert (state, message) == ("active", "")
    yield version
    stop_monitor(mariadb, version)


def window(settings, s3, bucket: str, mariadb, version: str, *, drift: str | None = None,
           hospitals: tuple[str, ...] = ("st-mary", "northgate", "riverside"), n: int = WINDOW,
           label_fraction: float = 0.0, error_rate: float = 0.0, seed: int = 0,
           extra: list | None = None) -> dict[str, Any]:
    """Upload a window, wait until all of it is scored, label some, and run the monitor once."""
    from serve_app.monitor_actor import run_monitor_now

    injected = Drift(drift, 1.0) if drift else None
    uploads = upload_generated(s3, bucket, n, seed=seed, drift=injected, hospitals=hospitals,
                               prefix=f"w{seed}/") + list(extra or [])
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        scored = {k for k, count in rows_for(mariadb, bucket) if count}
        if all(u.key in scored for u in uploads):
            break
        time.sleep(1)
    else:
        pytest.fail(f"window {seed}: {len(uploads) - len(scored)} of {len(uploads)} uploads not scored in time")
    if label_fraction:
        report = record_standin_verdicts(mariadb, bucket, uploads, fraction=label_fraction, error_rate=error_rate,
                                         seed=seed, timeout_s=60)
        assert report.not_scored == 0
    summary = run_monitor_now(version, "drift")
    assert summary["ran"], summary
    return summary


def alerts_on_kafka(settings, version: str, since: datetime) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer

    from xraylab.kafka_security import client_config

    consumer = KafkaConsumer(settings.ALERT_TOPIC, **client_config(settings, "admin"),
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        docs = [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    return [d for d in docs if d["model_version"] == version and datetime.fromisoformat(d["at"]) >= since]


def keep(settings, name: str, value: Any) -> None:
    """Add a measured figure to ``<state dir>/monitor-e2e.json``."""
    path = settings.STATE_DIR / "monitor-e2e.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2, default=str))


def _events(summary: dict[str, Any], metric: str = "image", hospital: str = "all") -> list[tuple[str, str]]:
    return [(e["event"], e["severity"]) for e in summary["events"]
            if e["metric"] == metric and e["hospital"] == hospital]


def test_drift_alerts_fire_once_and_resolve(monitor, settings, s3, monitor_bucket, mariadb) -> None:
    since = datetime.now(UTC).replace(microsecond=0)
    run = lambda **kw: window(settings, s3, monitor_bucket, mariadb, monitor, **kw)  # noqa: E731
    measured: dict[str, list[float]] = {}

    for seed in (101, 102, 103):  # clean windows: no drift alert of any kind
        summary = run(seed=seed)
        assert "image" in summary["figures"], summary
        measured.setdefault("clean", []).append(summary["figures"]["image"])
        assert summary["n_images"] == WINDOW
        assert summary["figures"]["image"] < 0.42 and summary["figures"]["prediction"] < 0.2, summary["figures"]
        assert [e for e in summary["events"] if e["metric"] in ("image", "prediction")] == []

    t0 = time.perf_counter()
    blurred = run(seed=104, drift="blur")
    measured["blur"] = [blurred["figures"]["image"]]
    assert blurred["figures"]["image"] > 0.55 and _events(blurred) == [("fired", "critical")]
    still = run(seed=105, drift="blur")  # still bad: no second alert
    assert still["figures"]["image"] > 0.55 and _events(still) == []
    back = run(seed=106)
    assert back["figures"]["image"] < 0.42 and _events(back) == [("resolved", "critical")]
    for seed, kind in ((107, "transpose"), (109, "brightness"), (111, "noise")):
        drifted = run(seed=seed, drift=kind)
        measured[kind] = [drifted["figures"]["image"]]
        assert drifted["figures"]["image"] > 0.55 and _events(drifted) == [("fired", "critical")], kind
        clean = run(seed=seed + 1)
        assert _events(clean) == [("resolved", "critical")], kind
    keep(settings, "image_drift_scores", {"window": WINDOW, **measured})
    keep(settings, "drift_run_seconds", {"images": WINDOW, "seconds": round(blurred["seconds"], 2),
                                         "ten_windows_s": round(time.perf_counter() - t0)})

    kafka = [(d["event"], d["severity"]) for d in alerts_on_kafka(settings, monitor, since)
             if d["metric"] == "image" and d["hospital"] == "all"]
    assert kafka == [("fired", "critical"), ("resolved", "critical")] * 4
    with mariadb.session() as session:
        image_alerts = [a for a in store.alerts(session, monitor) if a["metric"] == "image" and a["hospital"] == "all"]
        [row] = [m for m in store.list_monitors(session) if m["model_version"] == monitor]
    assert len(image_alerts) == 4 and all(a["resolved_at"] is not None for a in image_alerts)
    assert row["state"] == "active" and row["last_drift_at"] is not None
    status = xraylab("monitor", "status", "--database", "mariadb", "--json", timeout=120)
    assert status.returncode == 0, status.stderr
    [shown] = [m for m in json.loads(status.stdout) if m["model_version"] == monitor]
    assert shown["state"] == "active" and shown["latest"]["image"] < 0.42


def test_one_hospitals_drift_shows_in_its_own_figure(monitor, settings, s3, monitor_bucket, mariadb) -> None:
    clean = upload_generated(s3, monitor_bucket, 50, seed=120, hospitals=("st-mary",), prefix="w120/")
    summary = window(settings, s3, monitor_bucket, mariadb, monitor, seed=121, n=50, drift="brightness",
                     hospitals=("riverside",), extra=clean)
    with mariadb.session() as session:
        riverside = store.latest_results(session, monitor, "riverside")["image"]
        st_mary = store.latest_results(session, monitor, "st-mary")["image"]
    assert riverside["status"] == "critical" and riverside["n"] == 50
    assert "brightness" in [m["name"] for m in riverside["detail"]["moved"]]
    assert st_mary["status"] == "ok" and st_mary["n"] == 50
    assert ("fired", "critical") in _events(summary, hospital="riverside")
    assert _events(summary, hospital="st-mary") == []
    atypical = {a["study_id"] for a in riverside["detail"]["atypical"]}
    assert atypical, "the run keeps the most atypical images"
    back = window(settings, s3, monitor_bucket, mariadb, monitor, seed=122, hospitals=("riverside",))
    assert ("resolved", "critical") in _events(back, hospital="riverside")


def test_performance_from_verdicts_and_its_estimate(monitor, settings, s3, monitor_bucket, mariadb) -> None:
    honest = window(settings, s3, monitor_bucket, mariadb, monitor, seed=130, label_fraction=1.0)
    with mariadb.session() as session:
        latest = store.latest_results(session, monitor)
    accuracy = latest["accuracy"]
    assert accuracy["n"] == WINDOW and accuracy["detail"]["coverage"] == 1.0
    estimated = {m: latest[m]["detail"]["estimated"] for m in ("accuracy", "recall", "specificity", "f1_score")
                 if latest[m]["value"] is not None}
    keep(settings, "performance_clean", {m: {"realised": latest[m]["value"], "estimated": e}
                                         for m, e in estimated.items()})
    # The headline figures within their 99 % intervals (recall and specificity are kept for the record: four
    # intervals at once would fail a calibrated model one window in 30).
    for metric in ("accuracy", "f1_score"):
        assert estimated[metric]["low"] <= latest[metric]["value"] <= estimated[metric]["high"], (metric, latest)
    assert [e for e in honest["events"] if e["metric"] == "accuracy"] == []

    wrong = window(settings, s3, monitor_bucket, mariadb, monitor, seed=131, label_fraction=1.0, error_rate=0.6)
    keep(settings, "accuracy_with_wrong_verdicts", wrong["figures"]["accuracy"])
    assert wrong["figures"]["accuracy"] < 0.7, wrong["figures"]
    assert ("fired", "critical") in _events(wrong, metric="accuracy")
    with mariadb.session() as session:
        after = store.latest_results(session, monitor)["accuracy"]
    assert after["detail"]["disagrees"], "the realised accuracy leaves the interval the scores promise"


def choose_hospital(page, hospital: str) -> None:
    """Pick a hospital in the Monitor tab's dropdown, as a doctor does, until the tab says it shows it: a click
    that lands while the tab redraws its tables (Gradio re-renders the dropdown with the answer) is tried again."""
    from playwright.sync_api import expect

    for attempt in range(3):
        page.locator("#monitor-hospital input").click()
        page.get_by_role("option", name=hospital).click()
        try:
            expect(page.locator("#monitor-state")).to_contain_text(f"showing hospital {hospital}", timeout=15000)
            return
        except AssertionError:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def test_the_monitor_tab_in_chromium_during_a_drift(monitor, pipeline, settings, s3, monitor_bucket, mariadb,
                                                     browser) -> None:
    """A doctor logs in, clicks the Monitor tab and sees the drift: the image-drift tile red, the open alert,
    the plots, the most atypical images drawn and the delivery of results; the view of one hospital follows the
    dropdown."""
    from playwright.sync_api import expect

    from tests.accounts import new_account
    from tests.e2e.browser import log_in

    clean = upload_generated(s3, monitor_bucket, 50, seed=140, prefix="w140/", hospitals=("northgate",))
    window(settings, s3, monitor_bucket, mariadb, monitor, seed=141, n=100, drift="blur", hospitals=("riverside",),
           extra=clean)
    name, password = new_account(mariadb, network=True)  # the monitor over all hospitals is a network reader's
    page = browser.new_context(viewport={"width": 1600, "height": 1200}).new_page()
    log_in(page, pipeline.url, name, password)
    page.get_by_role("tab", name="Monitor").click()
    expect(page.locator("#monitor-state")).to_contain_text(f"Monitor of model {monitor}: active", timeout=30000)
    expect(page.locator("#synthetic-notice")).to_contain_text("synthetic")  # above both tabs
    image_tile = page.locator("#monitor-tiles .mon-tile[data-metric='image']")
    expect(image_tile).to_have_attribute("data-status", "critical")
    expect(page.locator("#monitor-alerts")).to_contain_text("critical")
    expect(page.locator("#monitor-alerts")).to_contain_text("open")
    # The delivery of these studies' results to the local stack's demo RIS (cluster/local/ris.sh), per destination.
    expect(page.locator("#monitor-delivery")).to_contain_text("ris/demo")
    expect(page.locator("#monitor-delivery")).to_contain_text("Median delay")
    for plot in ("#plot-drift", "#plot-performance", "#plot-hospitals", "#plot-health"):
        expect(page.locator(f"{plot} img")).to_be_visible(timeout=30000)
    first = page.locator("#atypical img").first
    expect(first).to_be_visible()
    page.wait_for_function("() => [...document.querySelectorAll('#atypical img')].every(i => i.naturalWidth > 0)")
    shots = settings.STATE_DIR / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "monitor-tab.png"), full_page=True)

    choose_hospital(page, "northgate")
    expect(image_tile).to_have_attribute("data-status", "ok")
    choose_hospital(page, "riverside")
    expect(image_tile).to_have_attribute("data-status", "critical", timeout=30000)
