"""The Kafka ingest actor: S3 events in, pipeline-step calls out, offsets committed after the rows.

Delivery is at-least-once: a polled batch is committed only when every object in it was
written (or dead-lettered). A transient failure (Serve overloaded, a service down) rewinds the
batch's partitions and retries with backoff, without committing; writes are idempotent, so a
repeat never makes a second row. Bad input (malformed JSON, a missing object, a non-image) goes
to the dead-letter topic with its reason and the stream goes on. Backpressure: at most
``max_in_flight`` records are in the pipeline at once, and nothing more is polled until they finish.
A polled batch goes to the pipeline step in sub-batches of ``batch_size`` objects, one call each, all
in flight together (so fetching one overlaps classifying another).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from xraylab.errors import RejectReason
from xraylab.events import MalformedEventError, parse_s3_event
from xraylab.messages import ObjectToProcess, Outcome, OutcomeStatus
from xraylab.settings import get_settings

__all__ = ["KafkaIngestActor", "IngestLoop", "Process", "INGEST_NAMESPACE", "ingest_actor_name"]

log = logging.getLogger("xraylab.ingest")

# Where the ingest actor of a Serve app lives, so that the Ingress can report on it (``/healthz``).
INGEST_NAMESPACE = "xraylab"


def ingest_actor_name(app_name: str) -> str:
    return f"{app_name}-ingest"


# The pipeline step as the loop sees it: a batch of objects in, something with
# ``.result(timeout_s=...) -> list[Outcome]`` out (a DeploymentResponse from ``handle.process_batch.remote``).
Process = Callable[[list[ObjectToProcess]], Any]


@dataclass(frozen=True)
class _DeadLetter:
    record: Any
    reason: RejectReason
    detail: str
    item: ObjectToProcess | None = None
    study_uid: str | None = None


class IngestLoop:
    """The consume -> process -> commit loop, independent of Ray: the Kafka consumer and producer are
    passed in (the actor builds real ones; tests pass stand-ins)."""

    def __init__(self, process: Process, *, consumer: Any, producer: Any, dlq_topic: str,
                 max_in_flight: int = 128, batch_size: int = 32, linger_s: float = 0.05,
                 request_timeout_s: float = 120.0, max_backoff_s: float = 30.0) -> None:
        self.process = process
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.consumer = consumer
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.max_in_flight = max_in_flight
        self.request_timeout_s = request_timeout_s
        self.max_backoff_s = max_backoff_s
        self.stats: Counter[str] = Counter()
        self.stop_event = threading.Event()

    def run(self) -> dict[str, int]:
        backoff = 0.5
        while not self.stop_event.is_set():
            records = self._poll_batch()
            if not records:
                continue
            try:
                self._handle(records)
            except Exception as exc:  # transient: rewind, do not commit, retry after a pause
                self.stats["transient_errors"] += 1
                log.warning("batch of %d not done (%s: %s); retrying in %.1fs",
                            len(records), type(exc).__name__, str(exc)[:200], backoff)
                self._rewind(records)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.consumer.commit()
            self.stats["batches_committed"] += 1
            backoff = 0.5
        self.close()
        return dict(self.stats)

    def _poll_batch(self) -> list[Any]:
        """Records to handle together: the first poll's, topped up for up to ``linger_s`` (or until
        ``max_in_flight``), since one poll often returns only a few records of one partition."""
        batch = self.consumer.poll(timeout_ms=500, max_records=self.max_in_flight)
        records = [r for part in batch.values() for r in part]
        deadline = time.monotonic() + self.linger_s
        while records and len(records) < self.max_in_flight:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = self.consumer.poll(timeout_ms=remaining_ms, max_records=self.max_in_flight - len(records))
            if not more:
                break
            records.extend(r for part in more.values() for r in part)
        return records

    def _rewind(self, records: list[Any]) -> None:
        from kafka import TopicPartition

        first: dict[Any, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            self.consumer.seek(tp, offset)

    def _handle(self, records: list[Any]) -> None:
        work: list[tuple[Any, ObjectToProcess]] = []
        dead_letters: list[_DeadLetter] = []
        for record in records:
            try:
                items = parse_s3_event(record.value)
            except MalformedEventError as exc:
                log.warning("malformed event at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
                dead_letters.append(_DeadLetter(record, RejectReason.MALFORMED_EVENT, str(exc)))
                continue
            if not items:
                self.stats["ignored_events"] += 1
            work.extend((record, item) for item in items)
        chunks = [work[i:i + self.batch_size] for i in range(0, len(work), self.batch_size)]
        responses = [(chunk, self.process([item for _, item in chunk])) for chunk in chunks]
        for chunk, response in responses:
            outcomes: list[Outcome] = response.result(timeout_s=self.request_timeout_s)
            for (record, item), outcome in zip(chunk, outcomes, strict=True):
                if outcome.status is OutcomeStatus.REJECTED:
                    assert outcome.reason is not None
                    log.warning("object %s (study %s) rejected: %s", item.key, outcome.study_uid, outcome.reason)
                    dead_letters.append(_DeadLetter(record, outcome.reason, outcome.detail, item, outcome.study_uid))
                else:
                    self.stats[outcome.status.value] += 1
        for letter in dead_letters:
            self._dead_letter(letter)
        if dead_letters:
            self.producer.flush(timeout=30)

    def _dead_letter(self, letter: _DeadLetter) -> None:
        from ingest.kafka_io import dead_letter

        record, item = letter.record, letter.item
        payload = dead_letter(reason=letter.reason, detail=letter.detail, topic=record.topic,
                              partition=record.partition, offset=record.offset, key=record.key, value=record.value,
                              object_key=item.key if item else None, bucket=item.bucket if item else None,
                              study_uid=letter.study_uid)
        self.producer.send(self.dlq_topic, key=record.key, value=payload).get(30)
        self.stats["dead_lettered"] += 1
        self.stats[f"dlq_{letter.reason}"] += 1

    def close(self) -> None:
        self.consumer.close()
        self.producer.close(timeout=10)


@ray.remote(num_cpus=0, max_concurrency=4, max_restarts=-1, max_task_retries=-1)
class KafkaIngestActor:
    """Runs ``IngestLoop`` against the Serve app ``app_name`` (its ``process_batch`` method).

    The loop starts in the constructor, on a thread of its own, so an actor that Ray restarts (its worker
    killed, its node lost) consumes again by itself, from the group's last committed offsets: nothing
    outside has to call anything. Should the loop itself die of an error it does not handle, the process
    exits, so that Ray restarts it the same way. ``run`` waits for the loop to end (after ``stop``)."""

    def __init__(self, app_name: str, max_in_flight: int = 128) -> None:
        from ray import serve

        from ingest.kafka_io import make_consumer, make_producer

        settings = get_settings()
        handle = serve.get_app_handle(app_name)
        # This actor calls the handle from its own threads, with no event loop of theirs; under Serve's
        # throughput mode (serve_app.SERVE_ENV) a handle's router would run on the caller's loop, so this
        # one gets a loop of its own (a handle takes its options once, before its first call).
        handle._init(_run_router_in_separate_loop=True)
        self.loop = IngestLoop(
            lambda items: handle.process_batch.remote(items),
            consumer=make_consumer(settings, settings.KAFKA_TOPIC, max_poll_records=max_in_flight),
            producer=make_producer(settings), dlq_topic=settings.KAFKA_DLQ_TOPIC, max_in_flight=max_in_flight)
        self.started = time.time()
        self.result: dict[str, int] = {}
        self.thread = threading.Thread(target=self._consume, name="ingest-loop", daemon=True)
        self.thread.start()
        log.info("ingest consuming %s as group %s", settings.KAFKA_TOPIC, settings.KAFKA_GROUP)

    def _consume(self) -> None:
        try:
            self.result = self.loop.run()
        except BaseException:
            log.exception("ingest loop died; exiting so that Ray restarts this actor")
            os._exit(1)

    def run(self) -> dict[str, int]:
        """Wait until the loop ends (``stop``); its counters."""
        self.thread.join()
        return self.result

    def stop(self) -> None:
        self.loop.stop_event.set()

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict[str, Any]:
        return {**self.loop.stats, "uptime_s": round(time.time() - self.started, 1),
                "consuming": self.thread.is_alive()}
