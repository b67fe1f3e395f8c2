"""The ingest loop with a stand-in Kafka consumer and producer and a stand-in pipeline step."""

import json
from dataclasses import dataclass

from ingest.consumer import IngestLoop
from xraylab.errors import RejectReason
from xraylab.events import make_s3_event
from xraylab.messages import ObjectToProcess, Outcome, OutcomeStatus

TOPIC, DLQ = "images", "images.dlq"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def event(key: str) -> bytes:
    return json.dumps(make_s3_event(ObjectToProcess(bucket="b", key=key, endpoint_id="local"))).encode()


class FakeConsumer:
    """Serves the given polls one after another (a rewind serves everything since the last commit again),
    then, after a few empty polls in a row, stops the loop."""

    def __init__(self, polls: list[list[Record]]) -> None:
        self.polls, self.commits, self.seeks, self.closed, self.loop = list(polls), [], [], False, None
        self.uncommitted: list[Record] = []
        self.idle = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        if self.seeks and self.seeks[-1][0] == "pending":
            self.seeks[-1] = ("done", self.seeks[-1][1])
            return {(TOPIC, 0): list(self.uncommitted)}
        if not self.polls:
            self.idle += 1
            if self.idle >= 3:
                self.loop.stop_event.set()
            return {}
        self.idle = 0
        records = self.polls.pop(0)
        self.uncommitted.extend(records)
        return {(TOPIC, 0): records}

    def seek(self, tp, offset: int) -> None:
        self.seeks.append(("pending", (tp.topic, tp.partition, offset)))

    def commit(self) -> None:
        self.commits.append([r.offset for r in self.uncommitted])
        self.uncommitted = []

    def close(self) -> None:
        self.closed = True


class Sent:
    def get(self, timeout: float) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent, self.flushed, self.closed = [], 0, False

    def send(self, topic: str, key: bytes | None, value: bytes) -> Sent:
        self.sent.append((topic, key, json.loads(value)))
        return Sent()

    def flush(self, timeout: float) -> None:
        self.flushed += 1

    def close(self, timeout: float) -> None:
        self.closed = True


class BatchResponse:
    """The step's answer for a batch: one outcome per object, or the first transient error of the batch."""

    def __init__(self, answers: list) -> None:
        self.answers = answers

    def result(self, timeout_s: float) -> list[Outcome]:
        for answer in self.answers:
            if isinstance(answer, Exception):
                raise answer
        return self.answers


def make_loop(polls, step, batch_size: int = 32) -> tuple[IngestLoop, FakeConsumer, FakeProducer]:
    consumer, producer = FakeConsumer(polls), FakeProducer()
    calls: list[int] = []

    def process(items: list[ObjectToProcess]) -> BatchResponse:
        calls.append(len(items))
        return BatchResponse([step(item) for item in items])

    loop = IngestLoop(process, consumer=consumer, producer=producer, dlq_topic=DLQ, max_backoff_s=0.01,
                      batch_size=batch_size)
    consumer.loop, loop.calls = loop, calls  # type: ignore[attr-defined]
    return loop, consumer, producer


def test_rows_written_rejections_dead_lettered_then_committed() -> None:
    records = [Record(TOPIC, 0, 0, b"a", event("a.jpeg")), Record(TOPIC, 0, 1, b"bad", b"{not json"),
               Record(TOPIC, 0, 2, b"c", event("c.jpeg")), Record(TOPIC, 0, 3, b"d", event("d.jpeg"))]

    def step(item: ObjectToProcess) -> Outcome:
        if item.key == "c.jpeg":
            return Outcome.rejected(RejectReason.NOT_IMAGE, "truncated", "uid-c")
        return Outcome(OutcomeStatus.DUPLICATE if item.key == "d.jpeg" else OutcomeStatus.WRITTEN, study_uid="u")

    loop, consumer, producer = make_loop([records], step, batch_size=2)
    stats = loop.run()
    assert loop.calls == [2, 1], "the three objects go to the step in sub-batches of 2"
    assert consumer.commits == [[0, 1, 2, 3]], "one commit, after the whole batch"
    assert stats["written"] == 1 and stats["duplicate"] == 1 and stats["dead_lettered"] == 2
    assert stats["dlq_malformed_event"] == 1 and stats["dlq_not_image"] == 1
    reasons = {doc["source"]["offset"]: (topic, doc["reason"], doc["object_key"], doc["study_uid"])
               for topic, _, doc in producer.sent}
    assert reasons == {1: (DLQ, "malformed_event", None, None), 2: (DLQ, "not_image", "c.jpeg", "uid-c")}
    assert producer.flushed == 1 and consumer.closed and producer.closed


def test_transient_failure_rewinds_retries_and_commits_only_after_success() -> None:
    records = [Record(TOPIC, 0, 5, b"a", event("a.jpeg")), Record(TOPIC, 0, 6, b"b", event("b.jpeg"))]
    attempts: list[str] = []

    def step(item: ObjectToProcess):
        attempts.append(item.key)
        if len(attempts) == 2:
            return TimeoutError("Serve overloaded")
        return Outcome(OutcomeStatus.WRITTEN)

    loop, consumer, producer = make_loop([records], step)
    stats = loop.run()
    assert stats["transient_errors"] == 1
    assert consumer.seeks == [("done", (TOPIC, 0, 5))], "rewound to the first offset of the batch"
    assert consumer.commits == [[5, 6]], "committed once, after the retry succeeded"
    assert attempts == ["a.jpeg", "b.jpeg", "a.jpeg", "b.jpeg"]
    assert stats["written"] == 2, "the failed sub-batch counted nothing; its repeat is absorbed downstream"
    assert producer.sent == []


def test_ignored_events_are_counted_and_committed() -> None:
    removal = {"Records": [{"eventName": "ObjectRemoved:Delete", "s3": {}}]}
    loop, consumer, _ = make_loop([[Record(TOPIC, 0, 9, None, json.dumps(removal).encode())]],
                                  lambda item: Outcome(OutcomeStatus.WRITTEN))
    stats = loop.run()
    assert stats["ignored_events"] == 1 and consumer.commits == [[9]]


def test_small_polls_are_gathered_into_one_batch() -> None:
    polls = [[Record(TOPIC, 0, i, b"k", event(f"{i}.jpeg"))] for i in range(5)]
    loop, consumer, _ = make_loop(polls, lambda item: Outcome(OutcomeStatus.WRITTEN), batch_size=32)
    loop.linger_s = 5.0  # the stand-in answers at once; the linger only bounds the wait
    stats = loop.run()
    assert loop.calls == [5], "five one-record polls became one call of the step"
    assert consumer.commits == [[0, 1, 2, 3, 4]] and stats["written"] == 5


def test_a_tombstone_is_dead_lettered_and_the_stream_goes_on() -> None:
    records = [Record(TOPIC, 0, 0, b"gone", None), Record(TOPIC, 0, 1, b"a", event("a.jpeg"))]
    loop, consumer, producer = make_loop([records], lambda item: Outcome(OutcomeStatus.WRITTEN, study_uid="u"))
    stats = loop.run()
    assert stats["written"] == 1 and stats["dlq_malformed_event"] == 1 and "transient_errors" not in stats
    assert consumer.commits == [[0, 1]]
    [(topic, key, doc)] = producer.sent
    assert (topic, key, doc["original"]["value"]) == (DLQ, b"gone", None) and "tombstone" in doc["detail"]
