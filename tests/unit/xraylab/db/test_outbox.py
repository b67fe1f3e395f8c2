"""The delivery outbox (xraylab.db.outbox): what the Writer queues with each new prediction, in order, per
destination; a row leaves ``queued`` only as ``sent`` or ``failed``; failed rows are queued again on request."""

from __future__ import annotations

from datetime import timedelta

from xraylab.db import outbox
from xraylab.db.crud import record_predictions
from xraylab.db.models import utcnow
from xraylab.delivery_config import DeliveryConfig
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid

CONFIG = DeliveryConfig.from_dict({
    "pacs": {"main": {"ae_title": "PACS1", "host": "127.0.0.1", "port": 104}},
    "ris": {"north": {"host": "127.0.0.1", "port": 2575}, "all": {"host": "127.0.0.1", "port": 2576}},
    "hospitals": {"northgate": {"pacs": "main", "ris": "north"}, "quiet": {}},
    "default": {"ris": "all"},
})


def study(i: int, hospital: str | None, endpoint: str = "local") -> StudyRecord:
    return StudyRecord(study_uid=study_uid(endpoint, "b", f"k{i}", "e"), endpoint_id=endpoint, bucket="b",
                       object_key=f"k{i}", etag="e", metadata=StudyMetadata(hospital=hospital))


def verdict(version: str = "v1") -> Verdict:
    return Verdict(score=0.9, band="Pneumonia", model_version=version, synthetic_model=False)


def write(db, rows) -> int:
    with db.session() as session:
        results = record_predictions(session, rows)
        return outbox.enqueue_results(session, CONFIG, rows, results, pacs_endpoint_id="pacs")


def destinations(db) -> list[tuple[int, str]]:
    with db.session() as session:
        return sorted((r["study_id"], r["destination"]) for r in outbox.list_deliveries(session, limit=1000))


def test_each_new_prediction_is_queued_for_its_hospitals_destinations_once(db) -> None:
    rows = [(study(1, "northgate", "pacs"), verdict(), None), (study(2, "northgate"), verdict(), None),
            (study(3, "quiet", "pacs"), verdict(), None), (study(4, None, "pacs"), verdict(), None),
            (study(5, "elsewhere"), verdict(), None)]
    assert write(db, rows) == 5
    # a PACS study of northgate: its PACS and its RIS; an upload: its RIS only; "quiet": nothing; the rest: default
    assert [d for _, d in destinations(db)] == ["pacs/main", "ris/north", "ris/north", "ris/all", "ris/all"]
    assert write(db, rows) == 0  # a redelivered batch: no prediction is new, nothing queued again
    assert write(db, [(study(1, "northgate", "pacs"), verdict("v2"), None)]) == 2  # a newer model: its own results


def test_rows_are_due_in_order_and_leave_queued_only_as_sent_or_failed(db) -> None:
    write(db, [(study(i, "northgate"), verdict(), None) for i in range(3)])
    with db.session() as session:
        first, second, third = [row.id for row in outbox.due(session, "ris/north")]
        assert outbox.due(session, "pacs/main") == []
        outbox.retry_later(session, first, "ConnectionRefusedError", utcnow() + timedelta(seconds=60))
        outbox.mark_sent(session, second, "XL2")
        outbox.mark_failed(session, third, "the RIS answered AE: unknown patient")
    with db.session() as session:
        assert outbox.due(session, "ris/north") == []  # the first waits its turn; the others are settled
        assert [r.id for r in outbox.due(session, "ris/north", now=utcnow() + timedelta(seconds=61))] == [first]
        outbox.mark_failed(session, first, "late")  # only a queued row changes
        outbox.mark_sent(session, third, "again")
    with db.session() as session:
        rows = {r["id"]: r for r in outbox.list_deliveries(session)}
        assert rows[second]["status"] == "sent" and rows[second]["message_id"] == "XL2"
        assert rows[third]["status"] == "failed" and "AE" in rows[third]["last_error"]
        assert rows[first]["attempts"] == 2
        [figure] = outbox.summary(session)
        assert (figure.destination, figure.queued, figure.sent, figure.failed) == ("ris/north", 0, 1, 2)
        assert figure.median_lag_s is not None and figure.median_lag_s >= 0
    with db.session() as session:
        assert outbox.requeue(session, ids=[third]) == 1
        assert [r.id for r in outbox.due(session, "ris/north")] == [third]
        assert outbox.requeue(session, destination="ris/north") == 1  # the other failed one
        assert outbox.pending_destinations(session) == ["ris/north"]
