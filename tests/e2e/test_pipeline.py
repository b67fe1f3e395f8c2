"""The whole system: upload -> SeaweedFS -> notifier -> Kafka -> ingest actor -> Serve -> MariaDB,
plus the HTTP routes and the review UI in headless Chromium."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from sqlalchemy import select

from ingest.kafka_io import make_producer
from ingest.uploader import upload_generated
from tests.e2e.observe import rows_for
from xraylab.db.models import Study
from xraylab.events import make_s3_event
from xraylab.messages import ObjectToProcess

pytestmark = pytest.mark.e2e
N_IMAGES = 20
WAIT_S = 240


def dead_letters(settings, match) -> list[dict]:
    from ingest.dlq import read_dead_letters

    return [e.doc for e in read_dead_letters(settings) if match(e.doc)]


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[:1500]


def test_images_flow_once_and_bad_input_is_dead_lettered(pipeline, settings, s3, bucket, mariadb) -> None:
    uploads = upload_generated(s3, bucket, N_IMAGES, seed=11)
    s3.put_object(Bucket=bucket, Key="bad/not-an-image.jpeg", Body=b"this is a radiology report, not a picture")
    s3.put_object(Bucket=bucket, Key="bad/truncated.jpeg", Body=truncated_jpeg())
    marker = f"malformed-{uuid.uuid4().hex[:8]}"
    producer = make_producer(settings, job="notifier")
    producer.send(settings.KAFKA_TOPIC, key=marker.encode(), value=b'{"Records": [ this is not json').get(30)
    missing = make_s3_event(ObjectToProcess(bucket=bucket, key="bad/missing.jpeg", endpoint_id="local"))
    producer.send(settings.KAFKA_TOPIC, key=b"bad/missing.jpeg", value=json.dumps(missing).encode()).get(30)
    elsewhere = make_s3_event(ObjectToProcess(bucket=bucket, key=uploads[1].key,
                                              endpoint_id="no-such-hospital-store"))
    producer.send(settings.KAFKA_TOPIC, key=b"elsewhere", value=json.dumps(elsewhere).encode()).get(30)

    expected_dlq = {"bad/not-an-image.jpeg": "not_image", "bad/truncated.jpeg": "not_image",
                    "bad/missing.jpeg": "missing_object", uploads[1].key: "unknown_endpoint"}
    deadline = time.time() + WAIT_S
    rows, dlq = [], []
    while time.time() < deadline:
        rows = rows_for(mariadb, bucket)
        dlq = dead_letters(settings, lambda d: d.get("bucket") == bucket or d["source"]["key"] == marker)
        if len(rows) >= N_IMAGES and len(dlq) >= len(expected_dlq) + 1:
            break
        time.sleep(2)

    assert sorted(k for k, _ in rows) == sorted(u.key for u in uploads), "every image once, nothing else"
    assert all(n == 1 for _, n in rows), "one prediction per study"
    got = {d["object_key"]: d["reason"] for d in dlq if d.get("object_key")}
    assert got == expected_dlq
    [malformed] = [d for d in dlq if d["source"]["key"] == marker]
    assert malformed["reason"] == "malformed_event"
    assert malformed["original"]["value"] == '{"Records": [ this is not json'
    for doc in dlq:  # dead letters say where they came from; they never carry patient names
        assert doc["source"]["topic"] == settings.KAFKA_TOPIC and doc["source"]["offset"] >= 0
        assert not any(u.metadata.patient_name in json.dumps(doc) for u in uploads)

    # A redelivered event (same object, same eTag) makes no second row.
    before = pipeline.ingest_stats().get("duplicate", 0)
    again = make_s3_event(ObjectToProcess(bucket=bucket, key=uploads[0].key, endpoint_id="local"))
    producer.send(settings.KAFKA_TOPIC, key=uploads[0].key.encode(), value=json.dumps(again).encode()).get(30)
    producer.close()
    deadline = time.time() + 60
    while pipeline.ingest_stats().get("duplicate", 0) <= before and time.time() < deadline:
        time.sleep(1)
    assert pipeline.ingest_stats().get("duplicate", 0) > before
    assert len(rows_for(mariadb, bucket)) == N_IMAGES and all(n == 1 for _, n in rows_for(mariadb, bucket))

    # Study metadata came from the object, and the band matches the score.
    with mariadb.session() as session:
        study = session.scalars(select(Study).where(Study.object_key == uploads[0].key)).one()
        meta = uploads[0].metadata
        assert (study.hospital, study.patient_id, study.patient_name) == (
            meta.hospital, meta.patient_id, meta.patient_name)
        pred = study.predictions[0]
        assert pred.band == ("Pneumonia" if pred.score > 0.8 else "Unsure" if pred.score >= 0.6 else "Normal")


def test_no_secret_in_the_environment_of_ray_processes(pipeline, settings) -> None:
    """The env file's path travels to Ray's workers, never its values."""
    import os

    import ray

    @ray.remote(num_cpus=0)
    def environment() -> dict[str, str]:
        return dict(os.environ)

    env = ray.get(environment.remote(), timeout=60)
    assert env.get("XRAYLAB_ENV_FILE"), "the workers know where the settings are"
    from sqlalchemy.engine import make_url

    secrets = [settings.S3_SECRET_KEY.get_secret_value(), make_url(settings.MARIADB_URL.get_secret_value()).password]
    assert all(secrets), "the stack generated every secret"
    leaked = [name for name, value in env.items() if any(secret in value for secret in secrets)]
    assert leaked == [], f"secrets in the environment of a Ray worker: {leaked}"


def test_ingest_metrics_are_exported_for_prometheus(pipeline, s3, bucket, mariadb) -> None:
    """Ray's metrics agent serves the ingest actors' metrics in Prometheus' text format, beside Serve's.
    (Counters of retries and dead letters appear with their first increment: the chaos suite checks them.)"""
    from ingest.metrics import EXPORTED_NAMES
    from tests.e2e.observe import scrape_until

    upload_generated(s3, bucket, 3, seed=31)
    deadline = time.time() + WAIT_S
    while len(rows_for(mariadb, bucket)) < 3 and time.time() < deadline:
        time.sleep(0.5)
    expected = ["ray_xraylab_ingest_records_total{", "ray_xraylab_ingest_objects_total{", 'status="written"',
                'actor="xraylab-ingest-0"', "ray_xraylab_ingest_lag{", "ray_xraylab_ingest_consuming{",
                "ray_serve_deployment_request_counter"]
    text = scrape_until(expected)
    assert [p for p in expected if p not in text] == []
    lag = [line for line in text.splitlines() if line.startswith("ray_xraylab_ingest_lag{")]
    assert lag and all('partition="' in line and 'actor="' in line for line in lag), lag
    exported = {line.split("{")[0] for line in text.splitlines() if line.startswith("ray_xraylab_ingest")}
    assert exported <= set(EXPORTED_NAMES), "every series is one that ingest/metrics.py names"


def test_http_predict_and_health(pipeline, mariadb) -> None:
    from tests.accounts import new_api_key
    from xraylab.synthetic import encode_jpeg, generate_xray

    key = {"Authorization": f"Bearer {new_api_key(mariadb)}"}
    health = requests.get(f"{pipeline.url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["ingest"]["consuming"] is True
    image = encode_jpeg(generate_xray(np.random.default_rng(3), True))
    assert requests.post(f"{pipeline.url}/v1/predict", data=image, timeout=60).status_code == 401
    verdict = requests.post(f"{pipeline.url}/v1/predict", data=image, headers=key, timeout=60).json()
    assert 0.0 <= verdict["score"] <= 1.0 and verdict["band"] in ("Pneumonia", "Unsure", "Normal")
    assert verdict["model_version"] == health.json()["model_version"]
    assert "synthetic" in verdict["notice"]
    multipart = requests.post(f"{pipeline.url}/v1/predict", files={"file": ("x.jpeg", image)}, headers=key,
                              timeout=60).json()
    assert multipart["score"] == pytest.approx(verdict["score"], abs=1e-5)
    bad = requests.post(f"{pipeline.url}/v1/predict", data=b"not an image", headers=key, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"] == "not_image"


def test_an_oversized_chunked_body_is_refused_while_it_streams_in(pipeline, settings, mariadb) -> None:
    """A chunked body with no Content-Length: the answer is 413 once the limit is passed, not after the
    whole body was buffered (the client is still sending when it comes)."""
    import http.client
    import select

    limit = settings.MAX_IMAGE_BYTES
    conn = http.client.HTTPConnection(settings.SERVE_HTTP_HOST, settings.SERVE_HTTP_PORT, timeout=60)
    from tests.accounts import new_api_key

    key = new_api_key(mariadb)
    conn.putrequest("POST", "/v1/predict")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Authorization", f"Bearer {key}")
    conn.endheaders()
    chunk, sent = b"\0" * (1 << 20), 0
    try:
        while sent < 8 * limit:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            if select.select([conn.sock], [], [], 0)[0]:
                break  # the answer came while the body was still streaming
    except (BrokenPipeError, ConnectionResetError):
        pass
    # Refused at the limit plus what the sockets' buffers held (36 of 32 MiB here), not at the body's end:
    # Serve's proxy holds no more than the limit (serve_app/body_limit.py).
    assert sent < limit + 16 * 2**20, f"refused only after {sent / 2**20:.0f} MiB of a {limit / 2**20:.0f} MiB limit"
    declared = requests.post(f"{pipeline.url}/v1/predict", data=b"x" * (limit + 1), timeout=60,
                             headers={"Authorization": f"Bearer {key}"})
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"
    try:
        response = conn.getresponse()
    except (ConnectionResetError, BrokenPipeError):
        return  # the server closed before its answer could be read: cut off mid-stream all the same
    assert response.status == 413 and json.loads(response.read())["error"] == "too_large"
    conn.close()


def test_dead_letters_are_listed_and_replayed_after_a_fix_without_a_second_row(pipeline, settings, s3, bucket,
                                                                                mariadb) -> None:
    """An event for an object not there yet is dead-lettered; once the object is there, `xraylab dlq replay`
    makes its row, and a second replay adds none. (The notifier is stopped meanwhile, so that the replay is
    the only way the object's event comes back.)"""
    import subprocess

    from ingest.dlq import DeadLetterEntry, original_value, read_dead_letters

    root = Path(__file__).resolve().parents[2]
    xraylab = [str(root / ".venv" / "bin" / "xraylab")]

    def stack(command: str) -> None:
        subprocess.run(["bash", str(root / "cluster/local/notifier.sh"), command], check=True, capture_output=True)

    key = f"late/{uuid.uuid4().hex[:8]}.jpeg"
    stack("stop")
    try:
        producer = make_producer(settings, job="notifier")
        event = make_s3_event(ObjectToProcess(bucket=bucket, key=key, endpoint_id="local"))
        producer.send(settings.KAFKA_TOPIC, key=key.encode(), value=json.dumps(event).encode()).get(30)
        deadline, mine = time.time() + WAIT_S, []
        while not mine and time.time() < deadline:
            mine = [e for e in read_dead_letters(settings, reasons=["missing_object"]) if e.doc["object_key"] == key]
            time.sleep(1)
        [entry] = mine
        listed = subprocess.run([*xraylab, "dlq", "list", "--reason", "missing_object"], capture_output=True,
                                text=True, check=True).stdout
        assert entry.where in listed and key in listed and "dead letters: missing_object" in listed

        from ingest.uploader import upload_study
        from xraylab.messages import StudyMetadata
        from xraylab.synthetic import encode_jpeg, generate_xray

        upload_study(s3, bucket, key, encode_jpeg(generate_xray(np.random.default_rng(4), False)),
                     StudyMetadata("st-mary", "P7", "Late Arrival", "2026-12-01"), content_type="image/jpeg")
        for _ in range(2):  # the fix, then a replay again by mistake
            replayed = subprocess.run([*xraylab, "dlq", "replay", "--offset", entry.where], capture_output=True,
                                      text=True, check=True).stdout
            assert "sent 1 events for 1 of 1 dead letters" in replayed
        deadline = time.time() + WAIT_S
        while not rows_for(mariadb, bucket) and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # time for the second replay to come through
        assert rows_for(mariadb, bucket) == [(key, 1)], "one row, however often replayed"
        refused = subprocess.run([*xraylab, "dlq", "replay"], capture_output=True, text=True)
        assert refused.returncode == 2 and "--reason" in refused.stderr

        # A dead letter whose original was too large to keep is replayed from the source topic, checked.
        big = json.dumps({"Records": [], "pad": "x" * 300_000}).encode()
        sent = producer.send(settings.KAFKA_TOPIC, key=b"big", value=big).get(30)
        producer.close()
        from ingest.kafka_io import dead_letter

        doc = json.loads(dead_letter(reason="malformed_event", detail="test", topic=sent.topic,
                                     partition=sent.partition, offset=sent.offset, key=b"big", value=big,
                                     max_bytes=4096))
        assert doc["original"]["truncated"] and original_value(settings, DeadLetterEntry(0, 0, doc)) == big
    finally:
        stack("start")


def test_ingest_resumes_by_itself_after_its_worker_is_killed(pipeline, settings, s3, bucket, mariadb) -> None:
    """kill -9 of the ingest actor's process mid-stream: Ray restarts the actor, which consumes again by
    itself from the last committed offsets, and every image still becomes exactly one row. Then /healthz
    turns red once ingest stops consuming."""
    import os
    import signal

    import ray

    victim = pipeline.ingest[0]  # one of the group's actors; the others go on meanwhile
    pid = ray.get(victim.pid.remote(), timeout=30)
    before = upload_generated(s3, bucket, 10, seed=21, prefix="before-kill/")
    deadline = time.time() + WAIT_S
    while not rows_for(mariadb, bucket) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    after = upload_generated(s3, bucket, 10, seed=22, prefix="after-kill/")  # the group takes them: survivor or restart
    uploads = before + after
    deadline = time.time() + WAIT_S
    while len(rows_for(mariadb, bucket)) < len(uploads) and time.time() < deadline:
        time.sleep(1)
    rows = rows_for(mariadb, bucket)
    assert sorted(k for k, _ in rows) == sorted(u.key for u in uploads), "nothing lost"
    assert all(n == 1 for _, n in rows), "nothing stored twice"
    assert ray.get(victim.pid.remote(), timeout=60) != pid, "a new process took over"
    assert ray.get(victim.stats.remote(), timeout=30)["consuming"]
    health = requests.get(f"{pipeline.url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["ingest"]["consuming"] is True

    # An ingest actor that has stopped consuming turns the health check red.
    ray.get(victim.stop.remote(), timeout=30)
    deadline = time.time() + 60
    while requests.get(f"{pipeline.url}/healthz", timeout=30).status_code != 503 and time.time() < deadline:
        time.sleep(0.5)
    health = requests.get(f"{pipeline.url}/healthz", timeout=30)
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert health.json()["ingest"]["consuming"] is False and health.json()["ingest"]["problems"] == ["not_consuming"]
