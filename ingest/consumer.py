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
* A failure that cannot heal is no outage: an object that fails alone on a healthy pipeline with the same
  error as its previous try while other objects went through since (a row the database always refuses), or
  with an error that says the call itself can never succeed (a message over a gRPC hop's limit), is
  dead-lettered at once as ``fails_alone`` with that error, not retried for minutes while its partition waits.
  A connection's error, a timeout or a store's 5xx is an outage's, never the object's, however it repeats:
  a store that restarts lets some objects through while others still fail.
* Serve's back-pressure (``BackPressureError``) is neither: the loop waits and sends again.

So a bad message holds back the messages behind it for about a second (its batch call, then its own call),
and the messages beside it are done in the first round; only an object whose failures look like an outage
that ``check_ready`` cannot see (nothing else goes through) is tried over minutes.

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
from dataclasses import dataclass
from typing import Any

import ray

from ingest.lag import LagTracker
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
    slow_backoff_s: float = 10.0
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
    first_failed: float = 0.0
    last_error: str = ""
    repeated: bool = False  # its last failure had the same error as the one before
    cannot_heal: bool = False  # its last failure says the call can never succeed
    outage: bool = False  # its last failure was a connection's, a timeout's or a store's 5xx: never its fault


@dataclass(frozen=True)
class _DeadLetter:
    record: Any
    reason: RejectReason
    detail: str
    item: ObjectToProcess | None = None
    study_uid: str | None = None
    attempts: int | None = None
    index: int | None = None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors behind it, outermost first: a database error's DBAPI ``orig``, a Ray task
    error's ``cause``, ``__cause__``."""
    chain = [exc]
    while True:
        inner = getattr(exc, "orig", None) or getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException) or any(inner is seen for seen in chain):
            return chain
        chain.append(inner)
        exc = inner


def _overloaded(exc: BaseException) -> bool:
    """Serve refused the call for now (its queue is full): wait and send again, charge nothing."""
    return any(type(e).__name__ == "BackPressureError" for e in _causes(exc))


# What gRPC says of a message over a hop's size limit (Serve's calls between replicas): the same object makes the
# same message every time, so no retry can heal it.
_NEVER_FITS = ("Received message larger than max", "Sent message larger than max")


def _cannot_heal(exc: BaseException) -> bool:
    return any(marker in str(e) for e in _causes(exc) for marker in _NEVER_FITS)


# Errors that say a store, the database or a replica is out of reach: an outage's, never an object's fault,
# however often one object meets them (during a restart some objects go through and others still fail).
# Matched by the names in each error's class hierarchy, as Ray re-raises a replica's error as a subclass.
_OUTAGE_TYPES = frozenset({
    "ConnectionError", "TimeoutError", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "HTTPClientError", "ResponseStreamingError", "ProtocolError", "IncompleteRead", "OperationalError",
    "DisconnectionError", "InterfaceError", "RayActorError", "ActorDiedError", "ActorUnavailableError",
    "GetTimeoutError", "OrthancError", "ConnectError", "NetworkError", "TimeoutException"})


def _outage(exc: BaseException) -> bool:
    """Whether ``exc`` is a sign of an outage: a connection, a timeout, a lost database or replica, or a store's
    own 5xx answer."""
    for e in _causes(exc):
        if any(t.__name__ in _OUTAGE_TYPES for t in type(e).__mro__):
            return True
        status = (getattr(e, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") \
            if isinstance(getattr(e, "response", None), dict) else None
        if isinstance(status, int) and status >= 500:
            return True
    return False


def _describe(exc: BaseException) -> str:
    """The innermost error behind ``exc``: its type and the first line of its message. That is what a dead
    letter's reader needs, and it leaves out Ray's traceback and SQLAlchemy's statement parameters (patient
    data)."""
    root = _causes(exc)[-1]
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0][:300] if lines else ''}"


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
        self.lag = LagTracker(self.config.stall_s, self.config.lag_window_s)
        self._next_lag = 0.0
        self._last_answer = 0.0  # when the pipeline last answered for an object (written, duplicate, rejected)

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
            except Exception as exc:  # MalformedEventError, or whatever else a hostile message provokes
                detail = str(exc) if isinstance(exc, MalformedEventError) else _describe(exc)
                log.warning("malformed event at %s: %s", where, detail)
                letters.append(_DeadLetter(record, RejectReason.MALFORMED_EVENT, detail))
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
            self._tick()  # lag and health stay current while a batch takes long (an outage, retries)
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
            refused = [w for w, exc in failed if _overloaded(exc)]  # Serve's back-pressure: send again as it was
            failed = [(w, exc) for w, exc in failed if not _overloaded(exc)]
            if refused:
                self.stats["overloaded"] += 1
            if not failed:
                self.stop_event.wait(min(outage_backoff, 2.0))
                continue
            for w, exc in failed:
                error = _describe(exc)
                w.repeated, w.last_error = error == w.last_error, error
                w.cannot_heal, w.outage = _cannot_heal(exc), _outage(exc)
                w.first_failed = w.first_failed or time.monotonic()
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
            refused = self._refuse_unhealable(alone, letters)
            pending = self._charge([w for w in alone if id(w) not in refused],
                                   [w for w in pending if id(w) not in refused], letters)
        return True

    def _refuse_unhealable(self, failed: list[_Work], letters: list[_DeadLetter]) -> set[int]:
        """Dead letters (``fails_alone``) for the objects whose failure cannot heal, on a healthy pipeline: the
        same error twice while other objects went through since the first (unless it is an outage's error: a
        store restarting lets some objects through while others still fail), or an error that says so itself."""
        refused = set()
        for w in failed:
            if w.cannot_heal or (w.repeated and not w.outage and self._last_answer > w.first_failed):
                self.stats["refused_at_once"] += 1
                log.warning("object %s fails alone on a healthy pipeline (%s): dead-lettered without retries",
                            w.item.key, w.last_error)
                letters.append(_DeadLetter(w.record, RejectReason.FAILS_ALONE, w.last_error, w.item,
                                           attempts=w.attempts + 1, index=w.index))
                refused.add(id(w))
        return refused

    def _charge(self, failed: list[_Work], pending: list[_Work], letters: list[_DeadLetter]) -> list[_Work]:
        """One attempt more for each object that failed alone on a healthy pipeline; dead letters for those
        out of attempts; the pending list without them.

        The next try comes after ``backoff_s`` doubling when the pipeline has answered for another object
        since this one first failed (the object is surely to blame). When nothing has succeeded since, the
        pipeline may be failing in a way ``check_ready`` cannot see (a volume server down behind a live S3
        gateway, a read-only database): then the tries are spread over minutes (``slow_backoff_s``
        doubling), so that such an outage has time to pass before anything is dead-lettered."""
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
                continue
            base = self.config.backoff_s if self._last_answer > w.first_failed else self.config.slow_backoff_s
            w.not_before = time.monotonic() + min(base * 2 ** (w.attempts - 1), 10 * self.config.max_backoff_s)
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
        size = min(self.config.batch_size, self.config.max_in_flight)
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
        self._last_answer = time.monotonic()
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
        a broker that is down is waited for, and only what it has not acknowledged is sent again."""
        unsent = [(letter, self._dead_letter(letter)) for letter in letters]
        backoff = self.config.backoff_s
        while unsent:
            futures = []
            try:
                for letter, payload in unsent:
                    futures.append(self.producer.send(self.dlq_topic, key=letter.record.key, value=payload))
            except Exception as exc:
                log.warning("dead letters not all sent (%s)", _describe(exc))
            acknowledged = set()
            for i, future in enumerate(futures):
                try:
                    future.get(30)
                    acknowledged.add(i)
                except Exception as exc:
                    log.warning("dead letter not acknowledged (%s)", _describe(exc))
            for i, (letter, _) in enumerate(unsent):
                if i in acknowledged:
                    self.stats["dead_lettered"] += 1
                    self.stats[f"dlq_{letter.reason}"] += 1
            unsent = [pair for i, pair in enumerate(unsent) if i not in acknowledged]
            if unsent:
                self.stats["dlq_send_errors"] += 1
                log.warning("%d dead letters wait for the broker; again in %.1fs", len(unsent), backoff)
                if (backoff := self._wait_for_broker(backoff)) is None:
                    return False
        return True

    def _wait_for_broker(self, backoff: float) -> float | None:
        """Wait ``backoff`` seconds (lag and metrics kept current); the next, doubled wait, or None when
        stopped meanwhile."""
        self._tick()
        if self.stop_event.wait(backoff):
            return None
        return min(backoff * 2, self.config.max_backoff_s)

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
        from kafka.errors import CommitFailedError, RebalanceInProgressError
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
            except (CommitFailedError, RebalanceInProgressError) as exc:  # the group is (being) rebalanced
                self.stats["commit_failed"] += 1
                log.warning("commit refused after a rebalance (%s); the partitions' new owner reads them again",
                            _describe(exc))
                return
            except Exception as exc:  # the broker is down: the rows are in, the commit waits for it
                self.stats["commit_errors"] += 1
                log.warning("commit failed (%s); again in %.1fs", _describe(exc), backoff)
                if (backoff := self._wait_for_broker(backoff)) is None:
                    return

    # -- lag and health -------------------------------------------------------------------------------

    def _tick(self) -> None:
        """Every ``lag_every_s``: measure the lag of this consumer's partitions and export the metrics.
        Never raises: a broker that does not answer leaves the last figures in place."""
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + self.config.lag_every_s
        try:
            parts = list(self.consumer.assignment())
            ends = self.consumer.end_offsets(parts, timeout_ms=5000) if parts else {}
            lag = {f"{tp.topic}/{tp.partition}": max(0, ends[tp] - (self.consumer.committed(tp, timeout_ms=5000) or 0))
                   for tp in parts if tp in ends}
            if not lag or sum(lag.values()) == 0:
                self.lag.last_commit = now  # nothing waiting counts as progress
            self.lag.record(lag, now)
            if self.on_tick is not None:
                self.on_tick(self)
        except Exception as exc:
            log.warning("lag not measured: %s", _describe(exc))

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
            # Static membership (the actor's name as group.instance.id): an actor that Ray restarts takes its
            # partitions back at once, with no rebalance of the group; a dead one's go to the others after
            # the session timeout.
            consumer=make_consumer(settings, settings.KAFKA_TOPIC, job="ingest", max_poll_records=config.max_in_flight,
                                   group_instance_id=name or None, session_timeout_ms=10000,
                                   heartbeat_interval_ms=2000),
            producer=make_producer(settings, job="ingest"), dlq_topic=settings.KAFKA_DLQ_TOPIC, config=config,
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
        self.metrics.set_consuming(False)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        return ray.get_runtime_context().get_node_id()

    def stats(self) -> dict[str, Any]:
        return {**self.loop.stats, **self.loop.health(), "uptime_s": round(time.time() - self.started, 1),
                "consuming": self.thread.is_alive()}
