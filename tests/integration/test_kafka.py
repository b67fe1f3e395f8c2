"""Apache Kafka (KRaft, from Maven Central jars) as started by cluster/local/kafka.sh: SASL/SCRAM over TLS, one
user per job, each allowed its own job only (xraylab/kafka_security.py)."""

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from ingest.kafka_io import dead_letter
from xraylab.errors import RejectReason
from xraylab.kafka_security import client_config

pytestmark = pytest.mark.integration
KAFKA_SH = Path(__file__).resolve().parents[2] / "cluster" / "local" / "kafka.sh"


@pytest.fixture()
def topic(settings) -> str:
    name = f"test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(**client_config(settings, "admin"))
    admin.create_topics([NewTopic(name=name, num_partitions=4, replication_factor=1)])
    admin.close()
    return name


def produce(settings, topic: str, n: int, start: int = 0, job: str = "admin", value: bytes | None = None) -> None:
    producer = KafkaProducer(**client_config(settings, job), acks="all", max_block_ms=10000)
    try:
        for i in range(start, start + n):
            producer.send(topic, key=f"k{i}".encode(), value=value or f"v{i}".encode()).get(30)
    finally:
        producer.close(timeout=5)


def consume(settings, topic: str, group: str | None, limit: int, commit: bool, job: str = "admin") -> list[str]:
    consumer = KafkaConsumer(topic, **client_config(settings, job), group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=8000, max_poll_records=limit)
    values = []
    try:
        for message in consumer:
            values.append(message.value.decode())
            if len(values) >= limit:
                break
        if commit:
            consumer.commit()
    finally:
        consumer.close()
    return values


def test_topic_has_partitions_and_keys_spread(settings, topic) -> None:
    produce(settings, topic, 40)
    consumer = KafkaConsumer(topic, **client_config(settings, "admin"), auto_offset_reset="earliest",
                             consumer_timeout_ms=8000)
    messages = list(consumer)
    consumer.close()
    assert len(messages) == 40 and len({m.partition for m in messages}) > 1


def test_committed_offsets_survive_consumer_restart(settings, topic) -> None:
    produce(settings, topic, 10)
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = consume(settings, topic, group, limit=10, commit=True)
    assert sorted(first) == sorted(f"v{i}" for i in range(10))
    produce(settings, topic, 5, start=10)
    second = consume(settings, topic, group, limit=100, commit=True)
    assert sorted(second) == sorted(f"v{i}" for i in range(10, 15))


def test_messages_survive_broker_restart(settings, topic) -> None:
    produce(settings, topic, 12)
    subprocess.run(["bash", str(KAFKA_SH), "stop"], check=True, timeout=120)
    subprocess.run(["bash", str(KAFKA_SH), "start"], check=True, timeout=240)
    values = consume(settings, topic, f"g-{uuid.uuid4().hex[:6]}", limit=12, commit=False)
    assert sorted(values) == sorted(f"v{i}" for i in range(12))


def _refused(action) -> str:
    with pytest.raises(KafkaError) as caught:
        action()
    return type(caught.value).__name__


def test_no_client_without_tls_and_a_password(settings) -> None:
    """Plain TCP, TLS with a wrong password, or TLS without trusting the stack's CA: no metadata at all."""
    plain = {"bootstrap_servers": settings.KAFKA_BOOTSTRAP, "security_protocol": "PLAINTEXT",
             "request_timeout_ms": 4000, "bootstrap_timeout_ms": 4000}
    _refused(lambda: KafkaAdminClient(**plain).list_topics())
    wrong = {**client_config(settings, "notifier"), "sasl_plain_password": "not-the-password"}
    _refused(lambda: KafkaAdminClient(**wrong, request_timeout_ms=4000, bootstrap_timeout_ms=4000).list_topics())
    untrusted = {**client_config(settings, "notifier"), "ssl_cafile": None}
    _refused(lambda: KafkaAdminClient(**untrusted, request_timeout_ms=4000,
                                      bootstrap_timeout_ms=4000).list_topics())


def test_each_job_may_do_its_own_job_only(settings) -> None:
    """The ACLs kafka.sh set: the notifier writes uploads and reads nothing, ingest reads uploads and writes dead
    letters but never uploads or alerts, the monitor writes alerts only. An event someone writes into the upload
    topic therefore comes from a notifier's credentials."""
    marker = uuid.uuid4().hex
    # What each job may write, written as it would be (the pipeline's topics are shared with the other tests):
    # an event naming no object, a dead letter, an alert of no model.
    produce(settings, settings.KAFKA_TOPIC, 1, job="notifier", value=b'{"Records": []}')
    produce(settings, settings.KAFKA_DLQ_TOPIC, 1, job="ingest", value=dead_letter(
        reason=RejectReason.MALFORMED_EVENT, detail="ACL test", topic="acl-test", partition=0, offset=0,
        key=marker.encode(), value=b"{}"))
    produce(settings, settings.ALERT_TOPIC, 1, job="monitor", value=json.dumps(
        {"model_version": f"acl-test-{marker}", "at": "2000-01-01T00:00:00+00:00"}).encode())
    for job, topic in (("notifier", settings.KAFKA_DLQ_TOPIC), ("notifier", settings.ALERT_TOPIC),
                       ("ingest", settings.KAFKA_TOPIC), ("ingest", settings.ALERT_TOPIC),
                       ("monitor", settings.KAFKA_TOPIC), ("monitor", settings.KAFKA_DLQ_TOPIC)):
        name = _refused(lambda job=job, topic=topic: produce(settings, topic, 1, job=job))
        assert "Authorization" in name, (job, topic, name)
    for job in ("notifier", "monitor"):  # cannot read the upload topic, even in the ingest group
        name = _refused(lambda job=job: _read_strict(settings, settings.KAFKA_TOPIC, settings.KAFKA_GROUP, job))
        assert "Authorization" in name, (job, name)
    name = _refused(lambda: _read_strict(settings, settings.KAFKA_TOPIC, f"other-{marker}", "ingest"))
    assert "GroupAuthorization" in name  # ingest reads only in its own group


def _read_strict(settings, topic: str, group: str, job: str) -> None:
    consumer = KafkaConsumer(topic, **client_config(settings, job), group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=6000)
    try:
        consumer.poll(timeout_ms=6000)
        consumer.poll(timeout_ms=2000)
    finally:
        consumer.close()
