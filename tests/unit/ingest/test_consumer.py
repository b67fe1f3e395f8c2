"""The ingest loop with a stand-in Kafka consumer and producer and a stand-in pipeline step."""

import json
from dataclasses import dataclass

from ingest.consumer import IngestConfig, IngestLoop
from ingest.kafka_io import dead_letter
from ingest.lag import LagTracker
from xraylab.errors import RejectReason
from xraylab.events import make_s3_event, parse_s3_event
from xraylab.messages import ObjectToProcess, Outcome, OutcomeStatus
from xraylab.settings import Settings

TOPIC, DLQ = "images", "images.dlq"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def event(*keys: str) -> bytes:
    records = [make_s3_event(ObjectToProcess(bucket="b", key=key, endpoint_id="local"))["Records"][0] for key in keys]
    return json.dumps({"Records": records}).encode()


class FakeConsumer:
    """Serves the given polls one after another, then, after a few empty polls in a row, stops the loop."""

    def __init__(self, polls: list[list[Record]]) -> None:
        self.polls, self.commits, self.closed, self.loop = list(polls), [], False, None
        self.idle = 0
        self.refuse_commits = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        if not self.polls:
            self.idle += 1
            if self.idle >= 3:
                self.loop.stop_event.set()
            return {}
        self.idle = 0
        return {(TOPIC, 0): self.polls.pop(0)}

    def commit(self, offsets: dict) -> None:
        if self.refuse_commits:
            from kafka.errors import CommitFailedError

            self.refuse_commits -= 1
            raise CommitFailedError("group rebalanced")
        self.commits.append({(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()})

    def assignment(self) -> set:
        return set()

    def close(self) -> None:
        self.closed = True


class Sent:
    def get(self, timeout: float) -> None:
        return None


class Refused:
    def get(self, timeout: float) -> None:
        raise TimeoutError("broker did not acknowledge")


class FakeProducer:
    def __init__(self) -> None:
        self.sent, self.closed, self.refuse = [], False, 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> Sent | Refused:
        if self.refuse:
            self.refuse -= 1
            return Refused()
        self.sent.append((topic, key, json.loads(value)))
        return Sent()

    def close(self, timeout: float) -> None:
        self.closed = True


class BatchResponse:
    """The step's answer for a batch: one outcome per object, or the first transient error of the batch."""

    def __init__(self, answers: list, pipeline: "FakeStep") -> None:
        self.answers, self.pipeline = answers, pipeline
        pipeline.in_flight += len(answers)
        pipeline.most_in_flight = max(pipeline.most_in_flight, pipeline.in_flight)

    def result(self, timeout_s: float) -> list[Outcome]:
        self.pipeline.in_flight -= len(self.answers)
        for answer in self.answers:
            if isinstance(answer, Exception):
                raise answer
        return self.answers


class FakeStep:
    def __init__(self, step) -> None:
        self.step, self.calls, self.in_flight, self.most_in_flight = step, [], 0, 0

    def __call__(self, items: list[ObjectToProcess]) -> BatchResponse:
        self.calls.append([item.key for item in items])
        return BatchResponse([self.step(item) for item in items], self)


def make_loop(polls, step, *, ready=None, **config):  # backoffs of milliseconds
    consumer, producer, fake = FakeConsumer(polls), FakeProducer(), FakeStep(step)
    settings = Settings(_env_file=None)  # the defaults
    loop = IngestLoop(fake, consumer=consumer, producer=producer, dlq_topic=DLQ, check_ready=ready,
                      config=IngestConfig.from_settings(settings, **{"max_backoff_s": 0.01, "backoff_s": 0.001,
                                                                     "slow_backoff_s": 0.002, **config}))
    consumer.loop = loop
    return loop, consumer, producer, fake


def written(item: ObjectToProcess) -> Outcome:
    return Outcome(OutcomeStatus.WRITTEN, study_uid=f"uid-{item.key}")


def test_rows_written_rejections_dead_lettered_then_committed() -> None:
    records = [Record(TOPIC, 0, 0, b"a", event("a.jpeg")), Record(TOPIC, 0, 1, b"bad", b"{not json"),
               Record(TOPIC, 0, 2, b"c", event("c.jpeg")), Record(TOPIC, 0, 3, b"d", event("d.jpeg"))]

    def step(item: ObjectToProcess) -> Outcome:
        if item.key == "c.jpeg":
            return Outcome.rejected(RejectReason.NOT_IMAGE, "truncated", "uid-c")
        return Outcome(OutcomeStatus.DUPLICATE if item.key == "d.jpeg" else OutcomeStatus.WRITTEN, study_uid="u")

    loop, consumer, producer, fake = make_loop([records], step, batch_size=2)
    stats = loop.run()
    assert fake.calls == [["a.jpeg", "c.jpeg"], ["d.jpeg"]], "the three objects go to the step in sub-batches of 2"
    assert consumer.commits == [{(TOPIC, 0): 4}], "one commit, after the whole batch, of the offset after it"
    assert stats["written"] == 1 and stats["duplicate"] == 1 and stats["dead_lettered"] == 2
    assert stats["dlq_malformed_event"] == 1 and stats["dlq_not_image"] == 1
    reasons = {doc["source"]["offset"]: (topic, doc["reason"], doc["object_key"], doc["study_uid"], doc["attempts"])
               for topic, _, doc in producer.sent}
    assert reasons == {1: (DLQ, "malformed_event", None, None, None), 2: (DLQ, "not_image", "c.jpeg", "uid-c", 1)}
    assert consumer.closed and producer.closed


def test_a_failed_shared_call_is_split_and_nothing_is_charged() -> None:
    records = [Record(TOPIC, 0, 5, b"a", event("a.jpeg")), Record(TOPIC, 0, 6, b"b", event("b.jpeg"))]
    failures = [TimeoutError("Serve overloaded")]

    def step(item: ObjectToProcess):
        return failures.pop() if failures else written(item)

    loop, consumer, producer, fake = make_loop([records], step)
    stats = loop.run()
    assert fake.calls == [["a.jpeg", "b.jpeg"], ["a.jpeg"], ["b.jpeg"]], "then one call each"
    assert stats["transient_errors"] == 1 and "retries" not in stats
    assert consumer.commits == [{(TOPIC, 0): 7}] and stats["written"] == 2 and producer.sent == []


def test_a_poison_object_is_refused_at_once_and_holds_back_no_neighbour() -> None:
    """It fails its batch, then alone with the same error while its neighbours went through: a failure that
    cannot heal, dead-lettered without a retry (issue 27: not minutes while its partition waits)."""
    records = [Record(TOPIC, 0, 0, b"a", event("a.jpeg")), Record(TOPIC, 0, 1, b"p", event("poison.jpeg", "b.jpeg")),
               Record(TOPIC, 0, 2, b"c", event("c.jpeg"))]

    def step(item: ObjectToProcess):
        if item.key == "poison.jpeg":
            return ValueError("Data too long for column 'patient_name'")
        return written(item)

    checks: list[list[str]] = []
    loop, consumer, producer, fake = make_loop([records], step, max_attempts=3,
                                               ready=lambda endpoints: checks.append(endpoints))
    stats = loop.run()
    assert fake.calls[0] == ["a.jpeg", "poison.jpeg", "b.jpeg", "c.jpeg"]
    assert sorted(fake.calls[1:]) == [["a.jpeg"], ["b.jpeg"], ["c.jpeg"], ["poison.jpeg"]], \
        "the split round, and the poison object never again"
    assert checks == [["local"]], "its failure alone asked whether the pipeline was healthy"
    assert stats["written"] == 3 and "retries" not in stats and stats["dlq_fails_alone"] == 1
    assert stats["refused_at_once"] == 1
    [(topic, key, doc)] = producer.sent
    assert (doc["reason"], doc["attempts"], doc["object_key"], doc["source"]["record_index"]) == (
        "fails_alone", 1, "poison.jpeg", 0)
    assert "Data too long" in doc["detail"]
    assert [item.key for item in parse_s3_event(doc["original"]["value"])] == ["poison.jpeg"], \
        "the dead letter carries an event for that object alone, not its neighbour"
    assert consumer.commits == [{(TOPIC, 0): 3}]


def test_a_message_over_a_hops_limit_is_refused_on_its_first_failure_alone() -> None:
    """gRPC's own words for a message over the limit between replicas: no retry can make it fit."""
    records = [Record(TOPIC, 0, 0, b"k", event("big.dcm"))]
    grpc = RuntimeError("<AioRpcError: StatusCode.RESOURCE_EXHAUSTED, "
                        "Received message larger than max (5031039 vs. 4194304)>")
    loop, consumer, producer, fake = make_loop(
        [records], lambda item: grpc, max_attempts=5, ready=lambda e: None, slow_backoff_s=60)
    stats = loop.run()
    assert stats["refused_at_once"] == 1 and "retries" not in stats
    assert fake.calls == [["big.dcm"], ["big.dcm"]], "its batch call, then one call alone: no retry after"
    [(_, _, doc)] = producer.sent
    assert doc["reason"] == "fails_alone" and "larger than max" in doc["detail"]
    assert consumer.commits == [{(TOPIC, 0): 1}]


def test_an_object_whose_error_changes_is_retried_up_to_its_attempts() -> None:
    """Not the same error twice: it may yet heal, so it keeps the backoff and max_attempts."""
    records = [Record(TOPIC, 0, 0, b"a", event("a.jpeg", "flaky.jpeg"))]
    tries = iter(range(100))

    def step(item: ObjectToProcess):
        return ValueError(f"lost connection, try {next(tries)}") if item.key == "flaky.jpeg" else written(item)

    loop, consumer, producer, fake = make_loop([records], step, max_attempts=3, ready=lambda e: None)
    stats = loop.run()
    assert fake.calls.count(["flaky.jpeg"]) == 3 and stats["retries"] == 3
    [(_, _, doc)] = producer.sent
    assert (doc["reason"], doc["attempts"]) == ("retries_exhausted", 3) and stats["written"] == 1


def test_a_store_restarting_under_some_objects_is_an_outage_not_their_fault() -> None:
    """S3 restarting: the check already sees it up and other objects go through, yet one object meets the
    same connection error alone, twice. A connection's error is never the object's: it is retried, not
    refused as ``fails_alone`` (seen in the chaos suite's SeaweedFS restart)."""
    from botocore.exceptions import EndpointConnectionError

    records = [Record(TOPIC, 0, 0, b"a", event("a.jpeg", "b.jpeg", "late.jpeg"))]
    tries = {"late.jpeg": 0}
    failures = {"late.jpeg": 3}

    def step(item: ObjectToProcess):
        if item.key in failures and tries[item.key] < failures[item.key]:
            tries[item.key] += 1
            return EndpointConnectionError(endpoint_url=f"http://127.0.0.1:18333/bucket/{item.key}")
        return written(item)

    loop, consumer, producer, fake = make_loop([records], step, max_attempts=5, ready=lambda e: None)
    stats = loop.run()
    assert producer.sent == [] and "refused_at_once" not in stats, "no good image dead-lettered"
    assert stats["written"] == 3 and tries["late.jpeg"] == 3
    assert consumer.commits == [{(TOPIC, 0): 1}]


def test_errors_of_an_outage_are_told_from_an_objects_own() -> None:
    from botocore.exceptions import ClientError, ReadTimeoutError
    from sqlalchemy.exc import DataError, OperationalError

    from ingest.consumer import _outage

    server_error = ClientError({"Error": {"Code": "ServiceUnavailable"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                               "GetObject")
    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    assert _outage(ConnectionRefusedError()) and _outage(server_error)
    assert _outage(ReadTimeoutError(endpoint_url="http://s3"))
    assert _outage(OperationalError("SELECT 1", {}, Exception("(2013, 'Lost connection')")))
    wrapped = RuntimeError("Ray task failed")
    wrapped.__cause__ = TimeoutError("read timed out")
    assert _outage(wrapped), "the error behind a Ray task error counts"
    assert not _outage(DataError("INSERT", {}, Exception("(1406, 'Data too long')")))
    assert not _outage(denied) and not _outage(ValueError("cannot identify image file"))


def test_an_outage_charges_nothing_and_dead_letters_nothing() -> None:
    records = [Record(TOPIC, 0, i, b"k", event(f"{i}.jpeg")) for i in range(3)]
    state = {"down": True, "checks": 0}

    def step(item: ObjectToProcess):
        return ConnectionError("MariaDB restarting") if state["down"] else written(item)

    def ready(endpoints):
        state["checks"] += 1
        state["down"] = state["checks"] < 4  # back up after the fourth check (which still saw it down)
        raise ConnectionError("database does not answer")

    loop, consumer, producer, fake = make_loop([records], step, max_attempts=2, ready=ready)
    stats = loop.run()
    assert stats["outage_waits"] == 4, "the outage outlasted max_attempts rounds"
    assert "retries" not in stats and producer.sent == [], "an outage dead-letters nothing"
    assert stats["written"] == 3 and consumer.commits == [{(TOPIC, 0): 3}]


def test_back_pressure_is_waited_out_without_charging_or_splitting() -> None:
    class BackPressureError(Exception):
        pass

    records = [Record(TOPIC, 0, 0, b"a", event("a.jpeg", "b.jpeg"))]
    refusals = [BackPressureError("queue full"), BackPressureError("queue full")]
    loop, consumer, producer, fake = make_loop(
        [records], lambda item: refusals.pop() if refusals else written(item), ready=lambda e: False)
    stats = loop.run()
    assert fake.calls == [["a.jpeg", "b.jpeg"], ["a.jpeg", "b.jpeg"]], "sent again whole, not split"
    assert stats["overloaded"] == 1 and "retries" not in stats and stats["written"] == 2


def test_an_event_with_too_many_records_is_dead_lettered_whole() -> None:
    big = event(*[f"many/{i}.jpeg" for i in range(7)])
    records = [Record(TOPIC, 0, 0, b"big", big), Record(TOPIC, 0, 1, b"a", event("a.jpeg"))]
    loop, consumer, producer, fake = make_loop([records], written, max_records_per_event=5)
    stats = loop.run()
    assert fake.calls == [["a.jpeg"]], "none of the fan-out event's objects reached the pipeline"
    [(_, _, doc)] = producer.sent
    assert doc["reason"] == "too_many_records" and "7 object records > 5" in doc["detail"]
    assert json.loads(doc["original"]["value"]) == json.loads(big), "the event is kept for a replay"
    assert stats["written"] == 1 and consumer.commits == [{(TOPIC, 0): 2}]


def test_objects_in_flight_stay_under_the_limit() -> None:
    records = [Record(TOPIC, 0, i, b"k", event(*[f"{i}-{j}.jpeg" for j in range(5)])) for i in range(20)]
    loop, consumer, producer, fake = make_loop([records], written, batch_size=4, max_in_flight=10)
    stats = loop.run()
    assert stats["written"] == 100 and fake.most_in_flight <= 10
    assert len(fake.calls) == 25


def test_a_tombstone_is_dead_lettered_and_the_stream_goes_on() -> None:
    records = [Record(TOPIC, 0, 0, b"gone", None), Record(TOPIC, 0, 1, b"a", event("a.jpeg"))]
    loop, consumer, producer, _ = make_loop([records], written)
    stats = loop.run()
    assert stats["written"] == 1 and stats["dlq_malformed_event"] == 1 and "transient_errors" not in stats
    assert consumer.commits == [{(TOPIC, 0): 2}]
    [(topic, key, doc)] = producer.sent
    assert (topic, key, doc["original"]["value"]) == (DLQ, b"gone", None) and "tombstone" in doc["detail"]


def test_a_commit_refused_after_a_rebalance_is_counted_and_the_loop_goes_on() -> None:
    polls = [[Record(TOPIC, 0, 0, b"a", event("a.jpeg"))], [Record(TOPIC, 0, 1, b"b", event("b.jpeg"))]]
    loop, consumer, _, _ = make_loop(polls, written, linger_s=0)
    consumer.refuse_commits = 1
    stats = loop.run()
    assert stats["commit_failed"] == 1 and consumer.commits == [{(TOPIC, 0): 2}] and stats["written"] == 2


def test_ignored_events_are_counted_and_committed() -> None:
    removal = {"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {}}]}
    loop, consumer, _, _ = make_loop([[Record(TOPIC, 0, 9, None, json.dumps(removal).encode())]], written)
    stats = loop.run()
    assert stats["ignored_events"] == 1 and consumer.commits == [{(TOPIC, 0): 10}]


def test_small_polls_are_gathered_into_one_batch() -> None:
    polls = [[Record(TOPIC, 0, i, b"k", event(f"{i}.jpeg"))] for i in range(5)]
    loop, consumer, _, fake = make_loop(polls, written, linger_s=5.0)  # the stand-in answers at once
    stats = loop.run()
    assert len(fake.calls) == 1, "five one-record polls became one call of the step"
    assert consumer.commits == [{(TOPIC, 0): 5}] and stats["written"] == 5


def test_a_dead_letter_stays_under_its_size_cap_and_keeps_a_digest() -> None:
    import hashlib

    value = json.dumps({"Records": [], "note": "é" * 400_000}, ensure_ascii=False).encode()
    doc_bytes = dead_letter(reason=RejectReason.MALFORMED_EVENT, detail="x", topic=TOPIC, partition=0, offset=7,
                            key=b"k", value=value, max_bytes=64 * 1024)
    assert len(doc_bytes) <= 64 * 1024
    doc = json.loads(doc_bytes)
    assert doc["original"]["truncated"] is True and doc["original"]["size"] == len(value)
    assert doc["original"]["sha256"] == hashlib.sha256(value).hexdigest()
    assert doc["source"] == {"topic": TOPIC, "partition": 0, "offset": 7, "record_index": None, "key": "k"}
    small = json.loads(dead_letter(reason=RejectReason.MALFORMED_EVENT, detail="x", topic=TOPIC, partition=0,
                                   offset=8, key=None, value=b"\xff\x00", max_bytes=64 * 1024))
    assert small["original"] == {"encoding": "base64", "value": "/wA="}


def test_lag_health_tells_a_burst_from_sustained_growth_and_a_stall() -> None:
    burst = LagTracker(stall_s=60, window_s=100)
    for t, lag in enumerate([0, 500, 900, 700, 400, 100, 0, 0, 0, 0, 0]):
        burst.record({"t/0": lag}, t * 10.0)
    assert not burst.growing()
    rising = LagTracker(stall_s=60, window_s=100)
    for t in range(11):
        rising.record({"t/0": 100 * t + (50 if t % 2 else 0)}, t * 10.0)
    assert rising.growing()
    stalled = LagTracker(stall_s=60, window_s=100, last_commit=0.0)
    stalled.record({"t/0": 3}, 30.0)
    assert not stalled.stalled(30.0) and stalled.stalled(61.0)
    stalled.record({"t/0": 0}, 70.0)
    assert not stalled.stalled(200.0), "no lag, nothing stalled"


def test_a_record_that_makes_the_parser_fail_in_any_way_is_dead_lettered_not_fatal() -> None:
    records = [Record(TOPIC, 0, 0, b"x", b'{"specversion": "1.0", "data_base64": 123}'),
               Record(TOPIC, 0, 1, b"y", b"[" * 100_000 + b"]" * 100_000),
               Record(TOPIC, 0, 2, b"a", event("a.jpeg"))]
    loop, consumer, producer, _ = make_loop([records], written)
    stats = loop.run()
    assert stats["dlq_malformed_event"] == 2 and stats["written"] == 1 and consumer.commits == [{(TOPIC, 0): 3}]


def test_back_pressure_beside_a_real_failure_is_never_charged() -> None:
    class BackPressureError(Exception):
        pass

    refusals = {"a.jpeg": 3}

    def step(item: ObjectToProcess):
        if item.key == "p.jpeg":
            return ValueError("poison")
        if refusals.get(item.key):
            refusals[item.key] -= 1
            return BackPressureError("queue full")
        return written(item)

    loop, consumer, producer, fake = make_loop([[Record(TOPIC, 0, 0, b"k", event("a.jpeg", "p.jpeg"))]], step,
                                               max_attempts=2, ready=lambda e: None)
    stats = loop.run()
    assert stats["written"] == 1 and stats.get("dlq_retries_exhausted", 0) + stats.get("dlq_fails_alone", 0) == 1
    [(_, _, doc)] = producer.sent
    assert doc["object_key"] == "p.jpeg", "the object refused by back-pressure was written, not dead-lettered"


def test_with_no_answer_from_the_pipeline_the_tries_are_spread_over_minutes() -> None:
    """Every object fails alone and check_ready sees nothing wrong: maybe an outage it cannot see, so the
    tries wait slow_backoff_s (doubling) instead of backoff_s."""
    records = [Record(TOPIC, 0, 0, b"k", event("a.jpeg", "b.jpeg"))]
    loop, consumer, producer, fake = make_loop([records], lambda item: OSError("volume server down"),
                                               max_attempts=3, ready=lambda e: None, slow_backoff_s=0.2,
                                               max_backoff_s=1.0)
    t0 = __import__("time").monotonic()
    stats = loop.run()
    elapsed = __import__("time").monotonic() - t0
    assert stats["dlq_retries_exhausted"] == 2 and elapsed >= 0.2 + 0.4, "slow backoff: 0.2 s, then 0.4 s"
    assert all(doc["detail"] == "OSError: volume server down" for _, _, doc in producer.sent)


def test_dead_letters_the_broker_did_not_acknowledge_are_sent_again_and_only_they() -> None:
    records = [Record(TOPIC, 0, i, b"k", b"not json") for i in range(3)]
    loop, consumer, producer, _ = make_loop([records], written)
    producer.refuse = 1  # the first send is not acknowledged
    stats = loop.run()
    assert sorted(doc["source"]["offset"] for _, _, doc in producer.sent) == [0, 1, 2], "each once"
    assert stats["dlq_send_errors"] == 1 and stats["dead_lettered"] == 3 and consumer.commits == [{(TOPIC, 0): 3}]
