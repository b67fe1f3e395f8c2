"""The Kafka ingest actors: S3 events in, pipeline-step calls out, offsets committed after the rows.

Delivery is at-least-once, and every record ends as rows or as dead letters before its offset is
committed; writes are idempotent, so a repeat never makes a second row. Per record and per object:

* An event that is not an S3 notification (bad JSON, a tombstone) or that names more objects than
  ``max_records_per_event`` is dead-lettered whole; each object of a good event goes through the
  pipeline step, and a rejected one (missing, not an image, ...) is dead-lettered alone, carrying a
  one-record event of its own (replayable), never the whole event again.
* A batch call that fails (a service down, a timeout) is tried again with each of its objects in a call
  of its own, so one poison object cannot fail its neighbours twice. An object that fails *alone*
  counts an attempt only when the pipeline is healthy at that moment (``check_ready``: database, S3,
  model), since then the object is to blame; it is retried with exponential backoff and, after
  ``max_attempts``, dead-lettered as ``retries_exhausted`` with the attempt count and the last error.
  When the pipeline is not healthy (an outage: MariaDB or S3 restarting) nothing is charged and the
  loop waits with backoff, however long the outage lasts: an outage dead-letters nothing.
* Serve's back-pressure (``BackPressureError``) is neither: the loop waits and sends again.

So a bad message holds back the messages behind it for at most its own retries (about 8 s with the
defaults), and the messages beside it are done in the first round.

Backpressure: at most ``max_in_flight`` objects are in the pipeline at once (sub-batches of
``batch_size``, one call each, so fetching one overlaps classifying another), and nothing more is polled
until the polled batch is done. Dead letters stay under ``dlq_max_bytes`` (``ingest.kafka_io.dead_letter``).
Several actors share one consumer group; each commits exactly the offsets of the records it handled
(a rebalance that takes a partition away mid-batch costs a repeat, absorbed downstream).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from xraylab.errors import RejectReason
from xraylab.events import MalformedEventError, make_s3_event, parse_s3_event
from xraylab.messages import ObjectToProcess, Outcome, OutcomeStatus
from xraylab.settings import Settings, get_settings

__all__ = ["KafkaIngestActor", "IngestLoop", "IngestConfig", "Process", "INGEST_NAMESPACE", "ingest_actor_name"]

log = logging.getLogger("xraylab.ingest")

# Where the ingest actors of a Serve app live, so that the Ingress can report on them (``/healthz``).
INGEST_NAMESPACE = "xraylab"


def ingest_actor_name(app_name: str, index: int | None) -> str:
    """The name of the app's ingest actor number ``index``; with ``None``, the prefix all of them share."""
    return f"{app_name}-ingest-" + ("" if index is None else str(index))


# The pipeline step as the loop sees it: a batch of objects in, something with
# ``.result(timeout_s=...) -> list[Outcome]`` out (a DeploymentResponse from ``handle.process_batch.remote``).
Process = Callable[[list[ObjectToProcess]], Any]
# Raises (or returns False) unless the pipeline can work for objects of these S3 endpoint ids.
CheckReady = Callable[[list[str]], Any]


@dataclass(frozen=True)
class IngestConfig:
    """The loop's limits: the first six come from settings (``from_settings``: their one definition is
    ``xraylab.settings.Settings.INGEST_*``), the rest are the loop's own."""

    max_in_flight: int
    max_attempts: int
    max_records_per_event: int
    dlq_max_bytes: int
    stall_s: float
    lag_window_s: float
    batch_size: int = 32
    linger_s: float = 0.05
    request_timeout_s: float = 120.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    lag_every_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IngestConfig:
        values: dict[str, Any] = {
            "max_in_flight": settings.INGEST_MAX_IN_FLIGHT, "max_attempts": settings.INGEST_MAX_ATTEMPTS,
            "max_records_per_event": settings.INGEST_MAX_RECORDS_PER_EVENT, "dlq_max_bytes": settings.DLQ_MAX_BYTES,
            "stall_s": settings.INGEST_STALL_S, "lag_window_s": settings.INGEST_LAG_WINDOW_S}
        return cls(**{**values, **overrides})


@dataclass(eq=False)
class _Work:
    """One object of one record, and how its tries went."""

    record: Any
    index: int
    item: ObjectToProcess
    attempts: int = 0  # failures charged to it: it failed alone while the pipeline was healthy
    alone: bool = False  # its last call failed: next time it goes in a call of its own
    not_before: float = 0.0
    last_error: str = ""


@dataclass(frozen=True)
class _DeadLetter:
    record: Any
    reason: RejectReason
    detail: str
    item: ObjectToProcess | None = None
    study_uid: str | None = None
    attempts: int | None = None
    index: int | None = None


def _overloaded(exc: BaseException) -> bool:
    """Serve refused the call for now (its queue is full): wait and send again, charge nothing."""
    return any(type(e).__name__ == "BackPressureError" for e in (exc, getattr(exc, "cause", None)))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


@dataclass
class _LagTracker:
    """Lag per partition and what it says about health: ``stalled`` (lag waiting with no commit for
    ``stall_s``) and ``lag_growing`` (over ``window_s`` the lag's low in the last third stayed above its
    high in the first third: sustained growth, not a burst being worked off)."""

    stall_s: float
    window_s: float
    by_partition: dict[str, int] = field(default_factory=dict)
    history: deque[tuple[float, int]] = field(default_factory=deque)
    last_commit: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(self.by_partition.values())

    def record(self, by_partition: dict[str, int], now: float) -> None:
        self.by_partition = by_partition
        self.history.append((now, self.total))
        while self.history and self.history[0][0] < now - self.window_s:
            self.history.popleft()

    def stalled(self, now: float) -> bool:
        return self.total > 0 and now - self.last_commit > self.stall_s

    def growing(self) -> bool:
        if len(self.history) < 6 or self.history[-1][0] - self.history[0][0] < 0.9 * self.window_s:
            return False
        third = len(self.history) // 3
        first, last = [v for _, v in list(self.history)[:third]], [v for _, v in list(self.history)[-third:]]
        return min(last) > max(first)


class IngestLoop:
    """The consume -> process -> commit loop, independent of Ray: the Kafka consumer and producer, the
    pipeline step and its readiness check are passed in (the actor builds real ones; tests pass stand-ins)."""

    def __init__(self, process: Process, *, consumer: Any, producer: Any, dlq_topic: str, config: IngestConfig,
                 check_ready: CheckReady | None = None,
                 on_tick: Callable[[IngestLoop], None] | None = None) -> None:
        self.process = process
        self.consumer = consumer
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.config = config
        self.check_ready = check_ready
        self.on_tick = on_tick
        self.stats: Counter[str] = Counter()
        self.stop_event = threading.Event()
        self.lag = _LagTracker(self.config.stall_s, self.config.lag_window_s)
        self._next_lag = 0.0

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, int]:
        while not self.stop_event.is_set():
            records = self._poll_batch()
            if records and self._handle(records):
                self._commit(records)
            self._tick()
        self.close()
        return dict(self.stats)

    def _poll_batch(self) -> list[Any]:
        """Records to handle together: the first poll's, topped up for up to ``linger_s`` (or until
        ``max_in_flight``), since one poll often returns only a few records of one partition."""
        limit = self.config.max_in_flight
        batch = self.consumer.poll(timeout_ms=500, max_records=limit)
        records = [r for part in batch.values() for r in part]
        deadline = time.monotonic() + self.config.linger_s
        while records and len(records) < limit:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = self.consumer.poll(timeout_ms=remaining_ms, max_records=limit - len(records))
            if not more:
                break
            records.extend(r for part in more.values() for r in part)
        self.stats["records"] += len(records)
        return records

    def _handle(self, records: list[Any]) -> bool:
        """Every record to rows or dead letters; False when stopped before all were done (nothing is
        committed then, and the records come again)."""
        work, letters = self._parse(records)
        if not self._process(work, letters):
            return False
        return self._send_dead_letters(letters)

    def _parse(self, records: list[Any]) -> tuple[list[_Work], list[_DeadLetter]]:
        work: list[_Work] = []
        letters: list[_DeadLetter] = []
        limit = self.config.max_records_per_event
        for record in records:
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            try:
                items = parse_s3_event(record.value)
            except MalformedEventError as exc:
                log.warning("malformed event at %s: %s", where, exc)
                letters.append(_DeadLetter(record, RejectReason.MALFORMED_EVENT, str(exc)))
                continue
            if len(items) > limit:
                log.warning("event at %s names %d objects (limit %d): dead-lettered whole", where, len(items), limit)
                letters.append(_DeadLetter(record, RejectReason.TOO_MANY_RECORDS,
                                           f"{len(items)} object records > {limit}; `xraylab dlq replay` sends them "
                                           "again as one event each"))
                continue
            if not items:
                self.stats["ignored_events"] += 1
            work.extend(_Work(record, i, item) for i, item in enumerate(items))
        return work, letters

    def _process(self, work: list[_Work], letters: list[_DeadLetter]) -> bool:
        pending, outage_backoff = work, self.config.backoff_s
        while pending:
            if self.stop_event.is_set():
                return False
            now = time.monotonic()
            ready = [w for w in pending if w.not_before <= now]
            if not ready:
                self.stop_event.wait(min(w.not_before for w in pending) - now)
                continue
            failed = self._run_round(ready, letters)
            pending = [w for w in pending if w.not_before > now] + [w for w, _ in failed]
            if not failed:
                outage_backoff = self.config.backoff_s
                continue
            self.stats["transient_errors"] += 1
            if all(_overloaded(exc) for _, exc in failed):
                self.stats["overloaded"] += 1
                self.stop_event.wait(min(outage_backoff, 2.0))
                continue
            for w, exc in failed:
                w.last_error = _describe(exc)
            alone = [w for w, _ in failed if w.alone]
            for w, _ in failed:
                w.alone = True  # retried in a call of its own, so a poison object fails no neighbour again
            if not alone:
                continue  # the first failure of a shared call: split it at once
            if not self._pipeline_ready(alone):
                self.stats["outage_waits"] += 1
                log.warning("pipeline not ready; %d objects wait %.1fs (not counted as attempts)",
                            len(pending), outage_backoff)
                for w in pending:
                    w.alone = False  # after the outage they go in batches again
                self.stop_event.wait(outage_backoff)
                outage_backoff = min(outage_backoff * 2, self.config.max_backoff_s)
                continue
            outage_backoff = self.config.backoff_s
            pending = self._charge(alone, pending, letters)
        return True

    def _charge(self, failed: list[_Work], pending: list[_Work], letters: list[_DeadLetter]) -> list[_Work]:
        """One attempt more for each object that failed alone on a healthy pipeline; dead letters for those
        out of attempts; the pending list without them."""
        exhausted = set()
        for w in failed:
            w.attempts += 1
            self.stats["retries"] += 1
            if w.attempts >= self.config.max_attempts:
                log.warning("object %s failed %d times on a healthy pipeline: dead-lettered (%s)",
                            w.item.key, w.attempts, w.last_error)
                letters.append(_DeadLetter(w.record, RejectReason.RETRIES_EXHAUSTED, w.last_error, w.item,
                                           attempts=w.attempts, index=w.index))
                exhausted.add(id(w))
            else:
                delay = min(self.config.backoff_s * 2 ** (w.attempts - 1), self.config.max_backoff_s)
                w.not_before = time.monotonic() + delay
        return [w for w in pending if id(w) not in exhausted]

    def _pipeline_ready(self, failed: list[_Work]) -> bool:
        if self.check_ready is None:
            return True
        endpoints = sorted({w.item.endpoint_id for w in failed if w.item.endpoint_id})
        try:
            return self.check_ready(endpoints) is not False
        except Exception as exc:
            log.warning("pipeline not ready: %s", _describe(exc))
            return False

    def _run_round(self, ready: list[_Work], letters: list[_DeadLetter]) -> list[tuple[_Work, BaseException]]:
        """Send ``ready`` through the pipeline with at most ``max_in_flight`` objects in it at once; record
        what came out; return the objects whose call failed, with the error."""
        size = self.config.batch_size
        shared = [w for w in ready if not w.alone]
        calls = [shared[i:i + size] for i in range(0, len(shared), size)] + [[w] for w in ready if w.alone]
        in_flight: deque[tuple[list[_Work], Any]] = deque()
        failed: list[tuple[_Work, BaseException]] = []
        for call in calls:
            while in_flight and sum(len(c) for c, _ in in_flight) + len(call) > self.config.max_in_flight:
                failed += self._collect(*in_flight.popleft(), letters)
            try:
                in_flight.append((call, self.process([w.item for w in call])))
            except Exception as exc:
                failed += [(w, exc) for w in call]
        while in_flight:
            failed += self._collect(*in_flight.popleft(), letters)
        return failed

    def _collect(self, call: list[_Work], response: Any,
                 letters: list[_DeadLetter]) -> list[tuple[_Work, BaseException]]:
        try:
            outcomes: list[Outcome] = response.result(timeout_s=self.config.request_timeout_s)
        except Exception as exc:
            return [(w, exc) for w in call]
        for w, outcome in zip(call, outcomes, strict=True):
            if outcome.status is OutcomeStatus.REJECTED:
                assert outcome.reason is not None
                log.warning("object %s (study %s) rejected: %s", w.item.key, outcome.study_uid, outcome.reason)
                letters.append(_DeadLetter(w.record, outcome.reason, outcome.detail, w.item, outcome.study_uid,
                                           attempts=w.attempts + 1, index=w.index))
            else:
                self.stats[outcome.status.value] += 1
        return []

    # -- dead letters and commits ---------------------------------------------------------------------

    def _send_dead_letters(self, letters: list[_DeadLetter]) -> bool:
        """Every dead letter acknowledged by the broker before the offsets that they cover are committed;
        a broker that is down is waited for."""
        backoff = self.config.backoff_s
        while letters:
            try:
                futures = [self.producer.send(self.dlq_topic, key=letter.record.key, value=self._dead_letter(letter))
                           for letter in letters]
                for future in futures:
                    future.get(30)
                break
            except Exception as exc:
                self.stats["dlq_send_errors"] += 1
                log.warning("dead letters not sent (%s); again in %.1fs", _describe(exc), backoff)
                if self.stop_event.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.config.max_backoff_s)
        for letter in letters:
            self.stats["dead_lettered"] += 1
            self.stats[f"dlq_{letter.reason}"] += 1
        return True

    def _dead_letter(self, letter: _DeadLetter) -> bytes:
        import json

        from ingest.kafka_io import dead_letter

        record, item = letter.record, letter.item
        # An object's own dead letter carries a one-record event for it alone (what a replay sends again),
        # not the whole event it came in: 271 missing objects of one event are 271 small dead letters.
        value = record.value if item is None else json.dumps(make_s3_event(item, source="xraylab:dlq")).encode()
        return dead_letter(reason=letter.reason, detail=letter.detail, topic=record.topic, partition=record.partition,
                           offset=record.offset, key=record.key, value=value, record_index=letter.index,
                           object_key=item.key if item else None, bucket=item.bucket if item else None,
                           study_uid=letter.study_uid, attempts=letter.attempts, max_bytes=self.config.dlq_max_bytes)

    def _commit(self, records: list[Any]) -> None:
        """Commit exactly the offsets after these records. When a rebalance gave a partition to another
        actor meanwhile, the commit is refused and that actor reads the records again (a repeat, no loss)."""
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        offsets: dict[Any, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        backoff = self.config.backoff_s
        while True:
            try:
                self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
                self.stats["batches_committed"] += 1
                self.lag.last_commit = time.monotonic()
                return
            except CommitFailedError as exc:
                self.stats["commit_failed"] += 1
                log.warning("commit refused after a rebalance (%s); the partitions' new owner reads them again",
                            _describe(exc))
                return
            except Exception as exc:  # the broker is down: the rows are in, the commit waits for it
                self.stats["commit_errors"] += 1
                log.warning("commit failed (%s); again in %.1fs", _describe(exc), backoff)
                if self.stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, self.config.max_backoff_s)

    # -- lag and health -------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + self.config.lag_every_s
        try:
            parts = list(self.consumer.assignment())
            ends = self.consumer.end_offsets(parts) if parts else {}
            lag = {f"{tp.topic}/{tp.partition}": max(0, ends[tp] - (self.consumer.committed(tp) or 0))
                   for tp in parts if tp in ends}
        except Exception as exc:
            log.warning("lag not measured: %s", _describe(exc))
            return
        if not lag or sum(lag.values()) == 0:
            self.lag.last_commit = now  # nothing waiting counts as progress
        self.lag.record(lag, now)
        if self.on_tick is not None:
            self.on_tick(self)

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"lag": self.lag.total, "lag_by_partition": dict(self.lag.by_partition),
                "stalled": self.lag.stalled(now), "lag_growing": self.lag.growing()}

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

    def __init__(self, app_name: str, name: str = "") -> None:
        from ray import serve

        from ingest.kafka_io import make_consumer, make_producer
        from ingest.metrics import IngestMetrics

        settings = get_settings()
        config = IngestConfig.from_settings(settings)
        handle = serve.get_app_handle(app_name)
        # This actor calls the handle from its own threads, with no event loop of theirs; under Serve's
        # throughput mode (serve_app.SERVE_ENV) a handle's router would run on the caller's loop, so this
        # one gets a loop of its own (a handle takes its options once, before its first call).
        handle._init(_run_router_in_separate_loop=True)
        self.metrics = IngestMetrics(name or app_name)
        self.loop = IngestLoop(
            lambda items: handle.process_batch.remote(items),
            consumer=make_consumer(settings, settings.KAFKA_TOPIC, max_poll_records=config.max_in_flight),
            producer=make_producer(settings), dlq_topic=settings.KAFKA_DLQ_TOPIC, config=config,
            check_ready=lambda endpoints: handle.check_ready.remote(endpoints).result(timeout_s=15),
            on_tick=self.metrics.update)
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
        return {**self.loop.stats, **self.loop.health(), "uptime_s": round(time.time() - self.started, 1),
                "consuming": self.thread.is_alive()}
