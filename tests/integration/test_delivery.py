"""Results delivered (delivery/worker.py) to the project's real Orthanc and to MLLP listeners on 127.0.0.1: the SR and
the Grad-CAM picture in the study's own PACS study, valid for dciodvfy and dsrdump, once however often sent; an
ORU^R01 per study through a RIS outage, none lost and none doubled (by control id); a refusal set aside with its
reason."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from delivery.demo_ris import serve_ris
from delivery.worker import Deliverer
from ingest.pacs_notifier import PacsNotifier
from ingest.pacs_sender import PacsTarget
from ingest.uploader import DicomOptions, send_generated_to_pacs
from xraylab.db import outbox
from xraylab.db.crud import record_predictions
from xraylab.db.models import Delivery
from xraylab.db.session import Database, upgrade_schema
from xraylab.delivery_config import DeliveryConfig
from xraylab.messages import ObjectToProcess, StudyMetadata, StudyRecord, Verdict, study_uid
from xraylab.orthanc import PACS_BUCKET, OrthancClient
from xraylab.registry import FolderRegistry, ShippedRegistry, resolve_version
from xraylab.settings import project_root
from xraylab.sources import Sources

pytestmark = pytest.mark.integration
SHIPPED = ShippedRegistry(project_root() / "models")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade_schema(database.engine)
    yield database
    database.dispose()


class Listener:
    """The demo RIS on a port of the test's own, started and stopped at will."""

    def __init__(self, log: Path, answer: str = "AA", port: int | None = None) -> None:
        self.log, self.answer, self.port = log, answer, port or free_port()
        self.stop_event: threading.Event | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> Listener:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=serve_ris, args=("127.0.0.1", self.port, self.log),
                                       kwargs={"answer": self.answer, "stop_event": self.stop_event}, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the listener did not start")

    def stop(self) -> None:
        assert self.stop_event is not None and self.thread is not None
        self.stop_event.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the listener did not stop"

    def control_ids(self) -> list[str]:
        if not self.log.exists():
            return []
        return [json.loads(line)["control_id"] for line in self.log.read_text().splitlines() if line.strip()]


def rows_for(settings, keys: list[str], *, version: str, hospital: str | None = None,
             endpoint: str | None = None) -> list[tuple[StudyRecord, Verdict, float | None]]:
    """Study rows as the pipeline writes them: PACS instances read through the Fetcher's own sources; other keys
    as uploads of an S3 endpoint that is not read here."""
    sources = Sources(settings)
    out = []
    for i, key in enumerate(keys):
        score = (0.95, 0.7, 0.1)[i % 3]
        band = ("Pneumonia", "Unsure", "Normal")[i % 3]
        if endpoint is None:
            fetched = sources.fetch(settings.ORTHANC_ENDPOINT_ID, PACS_BUCKET, key)
            record = StudyRecord.of(ObjectToProcess(bucket=PACS_BUCKET, key=key), fetched)
        else:
            record = StudyRecord(study_uid=study_uid(endpoint, "b", key, "e"), endpoint_id=endpoint, bucket="b",
                                 object_key=key, etag="e",
                                 metadata=StudyMetadata(hospital=hospital, patient_id=f"P{i}",
                                                        accession_number=f"ACC{i}"))
        out.append((record, Verdict(score=score, band=band, model_version=version, synthetic_model=False), 3.0))
    return out


def write(db: Database, config: DeliveryConfig, rows, settings) -> None:
    with db.session() as session:
        results = record_predictions(session, rows)
        outbox.enqueue_results(session, config, rows, results, pacs_endpoint_id=settings.ORTHANC_ENDPOINT_ID)


def statuses(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {f.destination: (f.queued, f.sent, f.failed) for f in outbox.summary(session)}  # type: ignore[misc]


def orthanc_series(client: OrthancClient, study_instance_uid: str) -> dict[str, dict]:
    """The PACS study's series by description, with their instances' ids."""
    found = client.session.post(f"{client.url}/tools/find", json={
        "Level": "Study", "Query": {"StudyInstanceUID": study_instance_uid}}, timeout=30).json()
    assert len(found) == 1, f"study not in the PACS: {found}"
    series = client.session.get(f"{client.url}/studies/{found[0]}/series", timeout=30).json()
    return {s["MainDicomTags"].get("SeriesDescription", ""): s for s in series}


@pytest.mark.skipif(not (shutil.which("dciodvfy") and shutil.which("dsrdump")),
                    reason="dicom3tools' dciodvfy and DCMTK's dsrdump are needed (scripts/system-deps.sh)")
def test_pacs_study_gets_its_sr_and_heatmap_series_once_each_and_a_newer_model_adds_series(settings, db,
                                                                                            tmp_path) -> None:
    version = resolve_version(SHIPPED)
    sent = send_generated_to_pacs(PacsTarget.from_settings(settings), 1, seed=31,
                                  dicom=DicomOptions("explicit", bits=16))
    config = DeliveryConfig.from_dict({
        "pacs": {"local": {"ae_title": settings.ORTHANC_AET, "host": "127.0.0.1", "port": settings.ORTHANC_DICOM_PORT}},
        "default": {"pacs": "local"}}, calling_ae_title=settings.DELIVERY_AET)
    rows = rows_for(settings, [sent[0].key], version=version)
    write(db, config, rows, settings)
    client = OrthancClient.from_settings(settings)
    before = int(client.session.get(f"{client.url}/changes", params={"last": ""}, timeout=30).json()["Last"])
    deliverer = Deliverer(settings, db, config, registry=SHIPPED)
    assert deliverer.deliver_due("pacs/local") == 1
    assert statuses(db) == {"pacs/local": (0, 1, 0)}

    study_instance_uid = rows[0][0].metadata.study_instance_uid
    series = orthanc_series(client, study_instance_uid)
    sr = next(s for d, s in series.items() if d.startswith("xraylab") and "Grad-CAM" not in d)
    heatmap = next(s for d, s in series.items() if "Grad-CAM" in d)
    assert version in sr["MainDicomTags"]["SeriesDescription"] and sr["MainDicomTags"]["Modality"] == "SR"
    assert len(sr["Instances"]) == 1 and len(heatmap["Instances"]) == 1

    for name, item in (("sr", sr), ("heatmap", heatmap)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(client.instance_file(item["Instances"][0], max_bytes=50 << 20))
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"dciodvfy on the {name}: {errors}"
    dumped = subprocess.run(["dsrdump", "+Pl", str(tmp_path / "sr.dcm")], capture_output=True, text=True, timeout=60)
    assert dumped.returncode == 0, dumped.stderr
    assert "Pneumonia" in dumped.stdout and version in dumped.stdout and "not a medical device" in dumped.stdout

    # Sent again (as after an acknowledgement lost on the way back): the same UIDs, so the PACS holds one of each.
    with db.session() as session:
        session.execute(update(Delivery).values(status="queued"))
    assert deliverer.deliver_due("pacs/local") == 1
    again = orthanc_series(client, study_instance_uid)
    assert {d: len(s["Instances"]) for d, s in again.items() if d.startswith("xraylab")} == \
        {d: len(s["Instances"]) for d, s in series.items() if d.startswith("xraylab")}

    # The results stored into the PACS make no event: the PACS notifier leaves instances of XRAYLAB_DELIVERY_AET alone.
    ours = [s["Instances"][0] for d, s in again.items() if d.startswith("xraylab")]
    assert {client.remote_aet(i) for i in ours} == {settings.DELIVERY_AET}
    sent_events: list[bytes] = []

    class Producer:  # what the notifier hands its events to: here, a list
        def send(self, topic, key, value):
            sent_events.append(value)
            return type("Acked", (), {"get": lambda self, timeout: None})()

    state = tmp_path / "seq"
    state.write_text(str(before))
    notifier = PacsNotifier(settings, client=client, state_file=state, page=1000)
    while notifier.publish_page(Producer()):
        pass
    changes = client.changes(before, 1000)["Changes"]
    assert {c["ID"] for c in changes if c["ChangeType"] == "NewInstance"} >= set(ours)
    assert not any(i.encode() in e for e in sent_events for i in ours), "a result of ours would be scored"

    # A newer model's score of the same study: new series beside the first, which stay.
    write(db, config, rows_for(settings, [sent[0].key], version=version + "-next"), settings)
    assert Deliverer(settings, db, config, registry=_registry_with(tmp_path, version + "-next")
                     ).deliver_due("pacs/local") == 1
    newer = orthanc_series(client, study_instance_uid)
    ours = [d for d in newer if d.startswith("xraylab")]
    assert len(ours) == 4 and sum(version + "-next" in d for d in ours) == 2


def _registry_with(tmp_path: Path, version: str) -> FolderRegistry:
    """The shipped model under a second version name: a newer model as far as the outbox is concerned (imported,
    so signed with the stack's training key)."""
    staging = tmp_path / "staging" / version
    shutil.copytree(SHIPPED.root / resolve_version(SHIPPED), staging, ignore=shutil.ignore_patterns("SHA256SUMS"))
    card = json.loads((staging / "card.json").read_text())
    card["version"] = version
    (staging / "card.json").write_text(json.dumps(card))
    registry = FolderRegistry(tmp_path / "registry")
    registry.import_dir(staging)
    return registry


def test_ris_outage_of_30s_mid_stream_loses_and_doubles_no_message_and_holds_up_no_other_ris(
        settings, db, tmp_path) -> None:
    down = Listener(tmp_path / "north.jsonl").start()
    other = Listener(tmp_path / "south.jsonl").start()
    config = DeliveryConfig.from_dict({
        "ris": {"north": {"host": "127.0.0.1", "port": down.port, "timeout_s": 2.0},
                "south": {"host": "127.0.0.1", "port": other.port, "timeout_s": 2.0}},
        "hospitals": {"northgate": {"ris": "north"}, "southgate": {"ris": "south"}}})
    fast = settings.model_copy(update={"DELIVERY_RETRY_BASE_S": 0.5, "DELIVERY_RETRY_MAX_S": 4.0,
                                       "DELIVERY_POLL_S": 0.2})
    deliverer = Deliverer(fast, db, config, registry=SHIPPED)
    stop = threading.Event()
    runner = threading.Thread(target=deliverer.run, args=(stop,), daemon=True)
    runner.start()
    version = resolve_version(SHIPPED)
    try:
        for start in range(0, 100, 10):  # 100 studies for each RIS, 10 at a time, as the Writer's batches come
            write(db, config, rows_for(settings, [f"n{i}" for i in range(start, start + 10)], version=version,
                                       hospital="northgate", endpoint="local"), settings)
            write(db, config, rows_for(settings, [f"s{i}" for i in range(start, start + 10)], version=version,
                                       hospital="southgate", endpoint="local"), settings)
            if start == 30:
                _wait(lambda: len(down.control_ids()) >= 20, 30, "the first messages")
                down.stop()
                outage = time.monotonic()
            time.sleep(0.3)
        # While the north RIS is down, the south one gets all of its messages.
        _wait(lambda: len(other.control_ids()) == 100, 30, "the south RIS's 100 messages")
        assert statuses(db)["ris/north"][0] > 0, "the north RIS's messages wait while it is down"
        time.sleep(max(0.0, 30 - (time.monotonic() - outage)))
        down.start()
        _wait(lambda: statuses(db).get("ris/north", (1, 0, 0))[0] == 0, 60, "the north RIS's backlog")
    finally:
        stop.set()
        runner.join(timeout=30)
        other.stop()
    received = down.control_ids()
    with db.session() as session:
        expected = {r["message_id"] for r in outbox.list_deliveries(session, destination="ris/north", limit=500)}
    # Counted by control id: every study's message arrived, and none as a second message. The one the RIS took in
    # just as it went down, without answering, may come again under its own control id: at least once, as a
    # receiver de-duplicates it.
    assert len(set(received)) == len(expected) == 100 and set(received) == expected
    assert len(received) - len(set(received)) <= 1, "only a message in flight at the outage is sent again"
    assert statuses(db) == {"ris/north": (0, 100, 0), "ris/south": (0, 100, 0)}
    down.stop()


def test_a_ris_answering_ae_sets_the_message_aside_with_its_reason_until_retried(settings, db, tmp_path) -> None:
    refusing = Listener(tmp_path / "ae.jsonl", answer="AE").start()
    config = DeliveryConfig.from_dict({"ris": {"r": {"host": "127.0.0.1", "port": refusing.port}},
                                       "default": {"ris": "r"}})
    write(db, config, rows_for(settings, ["a1", "a2"], version=resolve_version(SHIPPED), endpoint="local"), settings)
    deliverer = Deliverer(settings, db, config, registry=SHIPPED)
    try:
        assert deliverer.deliver_due("ris/r") == 2
        with db.session() as session:
            rows = outbox.list_deliveries(session)
        assert {r["status"] for r in rows} == {"failed"} and all("AE" in r["last_error"] for r in rows)
        assert deliverer.deliver_due("ris/r") == 0  # set aside: not tried again by itself
        with db.session() as session:
            assert outbox.requeue(session, destination="ris/r") == 2
        assert deliverer.deliver_due("ris/r") == 2  # tried again on request (refused again here)
        assert len(refusing.control_ids()) == 4
    finally:
        refusing.stop()


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_result_failing_on_its_own_waits_alone_and_is_set_aside_after_its_tries(settings, db, tmp_path,
                                                                                  monkeypatch) -> None:
    """One study's result that raises something of its own (not the RIS being down) is put back alone: the others
    of its destination go on, and after XRAYLAB_DELIVERY_MAX_ATTEMPTS it is set aside with its reason."""
    listener = Listener(tmp_path / "r.jsonl").start()
    config = DeliveryConfig.from_dict({"ris": {"r": {"host": "127.0.0.1", "port": listener.port}},
                                       "default": {"ris": "r"}})
    write(db, config, rows_for(settings, ["k0", "k1", "k2"], version=resolve_version(SHIPPED), endpoint="local"),
          settings)
    quick = settings.model_copy(update={"DELIVERY_RETRY_BASE_S": 0.01, "DELIVERY_MAX_ATTEMPTS": 3})
    deliverer = Deliverer(quick, db, config, registry=SHIPPED)
    scored = Deliverer._scored

    def first_is_broken(self, study, prediction):
        if study.object_key == "k0":
            raise KeyError("a value this study's row cannot give")
        return scored(self, study, prediction)

    monkeypatch.setattr(Deliverer, "_scored", first_is_broken)
    try:
        assert deliverer.deliver_due("ris/r") == 2  # k0 put back; k1 and k2 not held up behind it
        assert len(listener.control_ids()) == 2
        for _ in range(2):
            time.sleep(0.1)
            deliverer.deliver_due("ris/r")
        with db.session() as session:
            broken = [r for r in outbox.list_deliveries(session) if r["status"] == "failed"]
        assert len(broken) == 1 and broken[0]["attempts"] == 3 and "gave up after 3 attempts" in broken[0]["last_error"]
        assert statuses(db) == {"ris/r": (0, 2, 1)}
    finally:
        listener.stop()
