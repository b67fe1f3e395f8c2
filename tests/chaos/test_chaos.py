"""The chaos suite: faults injected mid-stream into the whole pipeline on the real local services, and bad
inputs mixed into a clean stream. Each test prints uploaded / rows / duplicates / dead letters / lost and
the recovery time, and asserts exactly one row per good image, a dead letter with the right reason per bad
input, and nothing lost.

``make test`` runs it with ``XRAYLAB_CHAOS_UPLOADS`` images per test (150 by default); ``make chaos``
with 1,000. The table is written to ``<state dir>/chaos.txt`` and printed at the end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.dlq import read_dead_letters
from ingest.kafka_io import make_producer
from serve_app.app import AppArgs
from tests.stream import DRAIN_S, Uploader, drain, jpegs, rows_for
from xraylab.events import make_s3_event
from xraylab.messages import ObjectToProcess, StudyMetadata
from xraylab.registry import list_cards

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]
ROOT = Path(__file__).resolve().parents[2]
UPLOADS = int(os.environ.get("XRAYLAB_CHAOS_UPLOADS", "150"))
NOTIFIER_PAUSE_S = 30.0
REPORTS: list[Report] = []


@dataclass
class Report:
    fault: str
    uploaded: int
    rows: int
    duplicates: int
    dead_letters: int
    lost: int
    recovered_s: float | None  # from the end of the fault to the first row written after it
    caught_up_s: float | None  # from the end of the fault until every good image had its row
    refused_uploads: int = 0  # puts the store refused during the fault (the uploader tried again)

    HEADER = (f"{'fault':<28} {'uploaded':>8} {'rows':>6} {'dups':>5} {'dead letters':>12} {'lost':>5} "
              f"{'recovered s':>11} {'caught up s':>11}  refused uploads (retried)")

    def line(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return (f"{self.fault:<28} {self.uploaded:>8} {self.rows:>6} {self.duplicates:>5} {self.dead_letters:>12} "
                f"{self.lost:>5} {seconds(self.recovered_s):>11} {seconds(self.caught_up_s):>11}  "
                f"{self.refused_uploads}")


@pytest.fixture(scope="module")
def pipeline(settings, mariadb, request):
    from serve_app.launch import start_pipeline

    if not list_cards(settings.model_dir):
        from train.bootstrap import train_bootstrap_model

        train_bootstrap_model(settings.model_dir)
    pipe = start_pipeline(settings, AppArgs(database="mariadb"))
    yield pipe
    pipe.stop()
    table = "\n".join([f"chaos suite, {UPLOADS} uploads per test", Report.HEADER, *(r.line() for r in REPORTS)])
    (settings.STATE_DIR / "chaos.txt").write_text(table + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n" + table)


def dead_letters_for(settings, bucket: str, markers: set[str] = frozenset()) -> list[dict]:
    return [e.doc for e in read_dead_letters(settings)
            if e.doc.get("bucket") == bucket or (e.doc.get("source") or {}).get("key") in markers]


def service(name: str, command: str) -> None:
    subprocess.run(["bash", str(ROOT / "cluster" / "local" / f"{name}.sh"), command], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=240)


def restart(name: str, pause_s: float = 0.0) -> Callable[[object], None]:
    def fault(_pipeline: object) -> None:
        service(name, "stop")
        time.sleep(pause_s)
        service(name, "start")
    return fault


def kill_ingest_actor(pipeline) -> None:
    import ray

    os.kill(ray.get(pipeline.ingest[0].pid.remote(), timeout=30), signal.SIGKILL)


def kill_classifier_replica(_pipeline) -> None:
    from ray._private import state

    [replica] = [a for a in state.actors(actor_state_name="ALIVE").values()
                 if a["ActorClassName"].endswith("Classifier")]
    os.kill(replica["Pid"], signal.SIGKILL)


FAULTS = {
    "kill an ingest actor": kill_ingest_actor,
    "kill a classifier replica": kill_classifier_replica,
    "restart Kafka": restart("kafka"),
    "restart MariaDB": restart("mariadb"),
    "restart SeaweedFS": restart("seaweedfs"),
    f"stop the notifier {NOTIFIER_PAUSE_S:.0f} s": restart("notifier", NOTIFIER_PAUSE_S),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_mid_stream_loses_nothing_and_stores_nothing_twice(fault, pipeline, settings, s3, bucket,
                                                                   mariadb) -> None:
    uploader = Uploader(s3, bucket, UPLOADS, jpegs(), pace_s=0.01)
    uploader.start()
    while len(uploader.uploaded) < UPLOADS // 3 and uploader.is_alive():
        time.sleep(0.05)
    FAULTS[fault](pipeline)
    fault_over = time.time()
    uploader.join(timeout=600)
    assert len(uploader.uploaded) == UPLOADS, "every image reached the store in the end"
    recovered, caught_up = drain(mariadb, bucket, UPLOADS, fault_over)
    rows = rows_for(mariadb, bucket)
    letters = dead_letters_for(settings, bucket)
    report = Report(fault, len(uploader.uploaded), len(rows), sum(n - 1 for n in rows.values() if n > 1),
                    len(letters), len(set(uploader.uploaded) - set(rows)), recovered, caught_up, uploader.refused)
    REPORTS.append(report)
    print(Report.HEADER, report.line(), sep="\n")
    assert sorted(rows) == sorted(uploader.uploaded), "exactly the uploaded images have rows: nothing lost"
    assert set(rows.values()) == {1}, "one prediction each: nothing stored twice"
    assert letters == [], "a fault dead-letters no good image"


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_bad_inputs_are_dead_lettered_with_their_reason_and_hold_back_no_good_image(pipeline, settings, s3,
                                                                                      bucket, mariadb) -> None:
    from xraylab.synthetic import encode_jpeg

    good = jpegs(4)
    mark = uuid.uuid4().hex[:8]
    producer = make_producer(settings, job="notifier", max_request_size=2 * 1024 * 1024)

    def send(key: str, value: bytes | None) -> None:
        producer.send(settings.KAFKA_TOPIC, key=f"{mark}-{key}".encode(), value=value).get(30)

    def event(*keys: str, bucket_name: str = bucket, source: str = "xraylab:chaos") -> bytes:
        records = [make_s3_event(ObjectToProcess(bucket=bucket_name, key=k, endpoint_id="local"), source=source)
                   ["Records"][0] for k in keys]
        return json.dumps({"Records": records}).encode()

    meta = StudyMetadata("st-mary", "P1", "Chaos Test", "2026-12-01")
    giant = Image.new("L", (12_600, 12_600), 0)
    giant.paste(255, (0, 0, 6_300, 12_600))
    bad_objects = {
        "bad/giant.png": (png(giant), {}, "too_many_pixels"),
        "bad/one-pixel.png": (png(Image.new("L", (1, 1), 90)), {}, "not_radiograph"),
        "bad/uniform-grey.jpeg": (encode_jpeg(np.full((512, 512), 128, np.uint8)), {}, "not_radiograph"),
        "bad/broken-name.jpeg": (good[0], {"patient-name": "=?utf-8?b?/w==?="}, "bad_metadata"),
        # 200 characters: more than the studies.hospital column holds, so MariaDB refuses the row every time
        # (an error no check foresaw): it fails alone the same way while others go through, so it is
        # dead-lettered at once, not retried for minutes (issue 27).
        "bad/poison-hospital.jpeg": (good[1], {"hospital": "H" * 200}, "fails_alone"),
    }
    missing = [f"bad/missing-{i}.jpeg" for i in range(50)]
    uploader = Uploader(s3, bucket, UPLOADS, good, pace_s=0.01)
    uploader.start()
    while len(uploader.uploaded) < UPLOADS // 3:
        time.sleep(0.05)
    started = time.time()
    for key, (data, extra, _) in bad_objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={**meta.to_s3_metadata(), **extra})
    send("tombstone", None)
    send("bad-bucket", event("x.jpeg", bucket_name="test-Bad Bucket!"))  # a source by its prefix, an invalid name
    send("research", event("x.jpeg", bucket_name=settings.RESEARCH_BUCKET))  # never a source: never read
    send("big-text", ("é" * 100_000 + "不是事件" * 33_000).encode())  # ~600 KB of non-ASCII text, not JSON
    send("fan-out", event(*[f"fanout/{i:04d}.jpeg" for i in range(2_413)]))
    send("missing", event(*missing))
    # Keys as stores send them: an event from a store that does not say whether it URL-encodes.
    s3.put_object(Bucket=bucket, Key="raw/chest+01 a.jpeg", Body=good[2], Metadata=meta.to_s3_metadata())
    send("raw-key", json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "eventSource": "unnamed:store",
                                             "s3": {"bucket": {"name": bucket},
                                                    "object": {"key": "raw/chest+01 a.jpeg"}}}]}).encode())
    s3.put_object(Bucket=bucket, Key="st-mary/.uploads/kept.jpeg", Body=good[3], Metadata=meta.to_s3_metadata())
    producer.close()
    uploader.join(timeout=600)
    good_keys = [*uploader.uploaded, "raw/chest+01 a.jpeg", "st-mary/.uploads/kept.jpeg"]
    expected_letters = len(bad_objects) + len(missing) + 5  # + tombstone, bad bucket, research, big text, fan-out
    deadline, letters = time.time() + DRAIN_S, []
    markers = {f"{mark}-{k}" for k in ("tombstone", "bad-bucket", "research", "big-text", "fan-out", "missing",
                                       "raw-key")}
    while time.time() < deadline:
        letters = dead_letters_for(settings, bucket, markers)
        if len(rows_for(mariadb, bucket)) >= len(good_keys) and len(letters) >= expected_letters:
            break
        time.sleep(1)
    caught_up = time.time() - started
    rows = rows_for(mariadb, bucket)
    by_object = {d["object_key"]: d for d in letters if d.get("bucket") == bucket}
    by_event = {name: d for d in letters for name in ("tombstone", "bad-bucket", "research", "big-text", "fan-out")
                if d["source"]["key"] == f"{mark}-{name}"}
    report = Report("bad inputs mixed in", len(good_keys), len(rows), sum(n - 1 for n in rows.values() if n > 1),
                    len(letters), len(set(good_keys) - set(rows)), None, caught_up)
    REPORTS.append(report)
    print(Report.HEADER, report.line(), sep="\n")

    assert sorted(rows) == sorted(good_keys) and set(rows.values()) == {1}, "every good image once, no bad one"
    assert {k: by_object[k]["reason"] for k in bad_objects if k in by_object} == {
        k: reason for k, (_, _, reason) in bad_objects.items()}
    # refused on its first failure alone, or its second where nothing else had been answered since its batch
    # failed (it may be the last object in flight): seconds, never the minutes of retries_exhausted
    assert by_object["bad/poison-hospital.jpeg"]["attempts"] <= 2, "refused at once, not retried for minutes"
    assert caught_up < 60, "every good row and dead letter within a minute: no partition waited on the poison"
    assert "too long" in by_object["bad/poison-hospital.jpeg"]["detail"].lower()
    assert all(by_object[k]["reason"] == "missing_object" for k in missing)
    assert sum(len(json.dumps(by_object[k])) for k in missing) < len(missing) * 4096, "small, one object each"
    assert {k: d["reason"] for k, d in by_event.items()} == {
        "tombstone": "malformed_event", "bad-bucket": "invalid_name", "research": "source_not_allowed",
        "big-text": "malformed_event", "fan-out": "too_many_records"}
    assert by_event["big-text"]["original"]["truncated"] is True
    assert len(json.dumps(by_event["big-text"], ensure_ascii=False).encode()) <= settings.DLQ_MAX_BYTES
    assert "2413 object records" in by_event["fan-out"]["detail"]
    assert not any(k.startswith(("fanout/", "raw/")) for k in by_object), "no fan-out; the raw key was found"
    assert len(letters) == expected_letters

    from tests.e2e.observe import scrape_until

    counters = ["ray_xraylab_ingest_dead_letters_total{", 'reason="too_many_records"', 'reason="fails_alone"',
                "ray_xraylab_ingest_transient_errors_total{"]
    text = scrape_until(counters)
    assert [p for p in counters if p not in text] == [], "dead letters and failed calls are counted for Prometheus"
