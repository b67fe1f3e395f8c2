"""Apache Kafka (KRaft, from Maven Central jars) as started by cluster/local/kafka.sh."""

import subprocess
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

pytestmark = pytest.mark.integration
KAFKA_SH = Path(__file__).resolve().parents[2] / "cluster" / "local" / "kafka.sh"


@pytest.fixture()
def topic(settings) -> str:
    name = f"test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP)
    admin.create_topics([NewTopic(name=name, num_partitions=4, replication_factor=1)])
    admin.close()
    return name


def produce(settings, topic: str, n: int, start: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BOOTSTRAP, acks="all")
    for i in range(start, start + n):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode()).get(30)
    producer.close()


def consume(settings, topic: str, group: str, limit: int, commit: bool) -> list[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.KAFKA_BOOTSTRAP, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest", consumer_timeout_ms=8000,
                             max_poll_records=limit)
    values = []
    for message in consumer:
        values.append(message.value.decode())
        if len(values) >= limit:
            break
    if commit:
        consumer.commit()
    consumer.close()
    return values


def test_topic_has_partitions_and_keys_spread(settings, topic) -> None:
    produce(settings, topic, 40)
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.KAFKA_BOOTSTRAP, auto_offset_reset="earliest",
                             consumer_timeout_ms=8000)
    messages = list(consumer)
    consumer.close()
    assert len(consumer.partitions_for_topic(topic) or []) == 4 or len({m.partition for m in messages}) > 1
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
