"""Issue 31, a worklist a radiologist expects (SQLite): search by name, patient ID or accession; every column's
sort in both directions with ties in id order; the patient's sex, age and the study's description from the DICOM
tags and from an upload's metadata; prior studies of the same patient within the reader's scope; the next
unreviewed study."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from xraylab.db.crud import record_prediction, record_predictions
from xraylab.db.models import Study
from xraylab.db.review import (
    SORT_KEYS,
    WorklistFilter,
    next_unreviewed,
    record_verdict,
    study_detail,
    worklist_page,
)
from xraylab.db.scope import EVERY_HOSPITAL, ReadScope
from xraylab.messages import ObjectToProcess, StudyMetadata, StudyRecord, Verdict, study_uid

NEW_KEYS = ("patient_sex", "patient_age", "study_description", "accession_number")


def record(key: str, **meta: Any) -> StudyRecord:
    return StudyRecord(study_uid=study_uid("local", "b", key, "e"), endpoint_id="local", bucket="b", object_key=key,
                       etag="e", metadata=StudyMetadata(**{"hospital": "north", **meta}))


def verdict(score: float) -> Verdict:
    band = "Pneumonia" if score > 0.8 else "Unsure" if score >= 0.6 else "Normal"
    return Verdict(score=score, band=band, model_version="v1", synthetic_model=True)


def write(db, *studies: tuple[StudyRecord, float]) -> list[int]:
    with db.session() as session:
        return [w.study_id for w in record_predictions(session, [(s, verdict(score), None) for s, score in studies])]


def listed(db, scope: ReadScope = EVERY_HOSPITAL, **filters: Any) -> list[int]:
    with db.session() as session:
        return [r["id"] for r in worklist_page(session, WorklistFilter(**filters), page_size=500, scope=scope).rows]


@pytest.fixture()
def people(db) -> dict[str, int]:
    """Five studies: names as the tags give them (Given Family) or as an upload wrote them (DICOM's ^)."""
    ids = write(db,
                (record("a", patient_id="P-1001", patient_name="John Doe", accession_number="ACC-77"), 0.5),
                (record("b", patient_id="P-1002", patient_name="DOE^JANE", accession_number="ACC-78"), 0.6),
                (record("c", patient_id="Q_7", patient_name="Johnny Doerr", accession_number="100%"), 0.7),
                (record("d", patient_id="QX7", patient_name="Ana Silva", accession_number="100x"), 0.8),
                (record("e", patient_id="R1", patient_name=None, accession_number=None), 0.9))
    return dict(zip("abcde", ids, strict=True))


@pytest.mark.parametrize("search", ["john doe", "doe john", "DOE^JOHN", "  Doe   JOHN ", "JoHn"])
def test_every_word_must_match_the_name_in_any_order_and_case(db, people, search: str) -> None:
    assert sorted(listed(db, search=search)) == [people["a"], people["c"]]  # John Doe, Johnny Doerr


def test_a_search_finds_dicom_style_names_and_ids_and_accessions(db, people) -> None:
    assert sorted(listed(db, search="doe")) == [people["a"], people["b"], people["c"]]
    assert listed(db, search="jane doe") == [people["b"]], "DOE^JANE: the ^ reads as a space"
    assert listed(db, search="p-1002") == [people["b"]]
    assert listed(db, search="acc-77") == [people["a"]]
    assert listed(db, search="doe acc-78") == [people["b"]], "one word in the name, another in the accession"
    assert listed(db, search="silva doe") == []
    assert listed(db, search="   ") == listed(db), "a blank search is none"


def test_percent_and_underscore_are_searched_as_themselves(db, people) -> None:
    assert listed(db, search="100%") == [people["c"]], "not 100x"
    assert listed(db, search="q_7") == [people["c"]], "not QX7"
    assert listed(db, search="%") == [people["c"]]
    assert listed(db, search="_") == [people["c"]]
    assert listed(db, search="!") == []


def test_a_search_keeps_to_the_readers_scope_and_the_other_filters(db, people) -> None:
    [south] = write(db, (record("s", hospital="south", patient_id="P-9", patient_name="John Doe"), 0.95))
    assert south in listed(db, search="john doe")
    assert south not in listed(db, ReadScope.of(["north"]), search="john doe")
    assert listed(db, ReadScope.of(["south"]), search="john doe") == [south]
    assert listed(db, search="john doe", band="Unsure") == [people["c"]]


def test_unknown_sort_keys_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="one of priority, score, study_date, received, hospital") as caught:
        WorklistFilter(sort="name")
    assert all(key in str(caught.value) for key in SORT_KEYS)
    assert WorklistFilter().sort == "priority" and not WorklistFilter().descending


@pytest.fixture()
def sortable(db) -> list[int]:
    """Six studies with ties and empty values in every column."""
    rows = [  # (score, hospital, name, patient id, accession, study date)
        (0.90, "north", "Bea Zed", "P3", "A2", "2026-11-03"),
        (0.40, "south", "ann Young", "P1", None, "2026-11-01"),
        (0.90, None, None, "P2", "A1", None),
        (0.40, "north", "Bea Zed", None, "A2", "2026-11-03"),
        (0.70, "east", "Cid Abel", "P1", "A3", "2026-11-02"),
        (0.70, "south", "ann Young", "P3", "A1", None),
    ]
    ids = write(db, *((record(f"s{i}", hospital=h, patient_name=n, patient_id=p, accession_number=a,
                                 study_date=d), score) for i, (score, h, n, p, a, d) in enumerate(rows)))
    with db.session() as session:  # received in an order of their own, two at the same instant
        base = datetime(2026, 11, 5, tzinfo=UTC)
        for study_id, minutes in zip(ids, [5, 1, 3, 3, 0, 9], strict=True):
            session.execute(update(Study).where(Study.id == study_id)
                            .values(received_at=base + timedelta(minutes=minutes)))
    return ids


# For each sort, ascending, as indexes into the ``sortable`` rows.
ASCENDING = {
    "score": [1, 3, 4, 5, 0, 2],
    "hospital": [4, 0, 3, 1, 5, 2],  # empty last
    "patient": [1, 5, 0, 3, 4, 2],  # case does not count; empty last
    "patient_id": [1, 4, 2, 0, 5, 3],
    "accession": [2, 5, 0, 3, 4, 1],
    "study_date": [1, 4, 0, 3, 2, 5],
    "received": [4, 1, 2, 3, 0, 5],
    "band": [0, 2, 4, 5, 1, 3],  # Pneumonia (0.9), Unsure (0.7), Normal (0.4): the highest score first in a band
}
DESCENDING = {  # the keys turned round, empty values still last, ties still by id (turned round too)
    "score": [2, 0, 5, 4, 3, 1],
    "hospital": [5, 1, 3, 0, 4, 2],
    "patient": [4, 3, 0, 5, 1, 2],
    "patient_id": [5, 0, 2, 4, 1, 3],
    "accession": [4, 3, 0, 5, 2, 1],
    "study_date": [3, 0, 4, 1, 5, 2],
    "received": [5, 0, 3, 2, 1, 4],
    "band": [3, 1, 5, 4, 2, 0],
}


@pytest.mark.parametrize("key", sorted(ASCENDING))
def test_each_column_sorts_both_ways_with_ties_by_id_and_empty_values_last(db, sortable, key: str) -> None:
    assert listed(db, sort=key) == [sortable[i] for i in ASCENDING[key]]
    assert listed(db, sort=key, descending=True) == [sortable[i] for i in DESCENDING[key]]


def test_the_priority_order_is_the_triage_order_and_turns_round_whole(db, sortable, doctors) -> None:
    triage = [0, 2, 4, 5, 1, 3]  # unreviewed first, band, score, id
    assert listed(db) == listed(db, sort="priority") == [sortable[i] for i in triage]
    with db.session() as session:
        record_verdict(session, sortable[0], doctors, "Pneumonia", scope=EVERY_HOSPITAL)
    reviewed_last = [2, 4, 5, 1, 3, 0]
    assert listed(db, sort="priority") == [sortable[i] for i in reviewed_last]
    assert listed(db, sort="priority", descending=True) == [sortable[i] for i in reversed(reviewed_last)]


def test_sorting_pages_without_gaps_or_repeats(db, sortable) -> None:
    with db.session() as session:
        pages = [worklist_page(session, WorklistFilter(sort="patient_id", descending=True), page=n, page_size=4,
                               scope=EVERY_HOSPITAL) for n in (1, 2)]
    assert [r["id"] for p in pages for r in p.rows] == [sortable[i] for i in DESCENDING["patient_id"]]


@pytest.fixture()
def doctors(db) -> int:
    from xraylab.accounts import create_user

    with db.session() as session:
        return create_user(session, "doc-a", "a long enough password")


def test_sex_age_and_description_are_stored_and_shown_in_the_worklist_and_the_study(db) -> None:
    [one, other] = write(db, (record("x", patient_id="P1", patient_sex="F", patient_age="034Y",
                                     study_description="XR CHEST PA", accession_number="A-1"), 0.9),
                         (record("y", patient_id="P2"), 0.1))
    with db.session() as session:
        row = worklist_page(session, scope=EVERY_HOSPITAL).rows[0]
        detail = study_detail(session, one, scope=EVERY_HOSPITAL)
        bare = study_detail(session, other, scope=EVERY_HOSPITAL)
        stored = session.get(Study, one)
        assert (stored.patient_sex, stored.patient_age) == ("F", "034Y"), "the column keeps DICOM's Age String"
    for shown in (row, detail):
        assert {k: shown[k] for k in NEW_KEYS} == {"patient_sex": "F", "patient_age": "34 y",
                                                   "study_description": "XR CHEST PA", "accession_number": "A-1"}
    assert {k: bare[k] for k in NEW_KEYS} == dict.fromkeys(NEW_KEYS)
    with db.session() as session:  # one at a time too (the Writer's path for a redelivered batch)
        written = record_prediction(session, record("z", patient_sex="m", patient_age="7"), verdict(0.5))
        again = study_detail(session, written.study_id, scope=EVERY_HOSPITAL)
    assert (again["patient_sex"], again["patient_age"]) == ("M", "7 y")


class FakeS3:
    """put_object and get_object, as boto3 gives them back: user metadata without its x-amz-meta- prefix."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, Metadata: dict[str, str],  # noqa: N803
                   ContentType: str) -> None:
        self.objects[Bucket, Key] = {"Body": Body, "Metadata": Metadata, "ContentType": ContentType}

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        stored = self.objects[Bucket, Key]
        return {"Body": io.BytesIO(stored["Body"]), "ContentLength": len(stored["Body"]), "ETag": '"e"',
                "ContentType": stored["ContentType"], "Metadata": dict(stored["Metadata"])}


@pytest.mark.parametrize("dicom", [False, True], ids=["jpeg-metadata", "dicom-tags"])
def test_the_simulated_hospitals_uploads_reach_the_worklist_with_sex_age_and_description(db, dicom: bool) -> None:
    """The uploader's invented patients as the Fetcher reads them back: a JPEG's S3 user metadata, a DICOM file's
    tags (its S3 metadata holding only the hospital); the same study says the same either way."""
    from ingest.uploader import DicomOptions, upload_generated
    from xraylab.dicom import with_tags
    from xraylab.storage import get_object

    s3 = FakeS3()
    [upload] = upload_generated(s3, "b", 1, seed=3, dicom=DicomOptions() if dicom else None)
    meta = upload.metadata
    assert meta.patient_sex in ("M", "F", "O") and meta.patient_age and meta.study_description and \
        meta.accession_number, "the demo shows them"
    headers = s3.objects["b", upload.key]["Metadata"]
    assert ("patient-sex" in headers) is not dicom, "a DICOM file carries them in its tags"
    fetched = with_tags(get_object(s3, "b", upload.key, max_bytes=10**8, endpoint_id="local"))
    written = write(db, (StudyRecord.of(ObjectToProcess(bucket="b", key=upload.key), fetched), 0.5))
    with db.session() as session:
        detail = study_detail(session, written[0], scope=EVERY_HOSPITAL)
    years = int(meta.patient_age[:3])
    assert (detail["patient_sex"], detail["patient_age"], detail["study_description"], detail["accession_number"]) \
        == (meta.patient_sex, f"{years} y", meta.study_description, meta.accession_number)


@pytest.fixture()
def family(db) -> dict[str, int]:
    """Patient P1 of north at three dates (one undated), north's other patient, P1 of south (another person)."""
    ids = write(db,
                (record("n-old", patient_id="P1", study_date="2025-01-10", accession_number="A-old",
                        study_description="XR CHEST 1 VIEW"), 0.2),
                (record("n-new", patient_id="P1", study_date="2026-11-20"), 0.9),
                (record("n-mid", patient_id="P1", study_date="2026-03-01"), 0.7),
                (record("n-undated", patient_id="P1"), 0.4),
                (record("n-other", patient_id="P2", study_date="2026-03-02"), 0.5),
                (record("s-p1", hospital="south", patient_id="P1", study_date="2026-06-01"), 0.5),
                (record("n-none", patient_id=None, study_date="2026-06-01"), 0.5))
    return dict(zip(["old", "new", "mid", "undated", "other", "south", "none"], ids, strict=True))


def prior_ids(db, study_id: int, scope: ReadScope = EVERY_HOSPITAL) -> list[int]:
    with db.session() as session:
        return [p["id"] for p in study_detail(session, study_id, scope=scope)["priors"]]


def test_priors_are_the_same_patient_of_the_same_hospital_newest_first(db, family, doctors) -> None:
    assert prior_ids(db, family["new"]) == [family["mid"], family["old"], family["undated"]], \
        "not the study itself, not P2, not south's P1; undated last"
    assert prior_ids(db, family["old"]) == [family["new"], family["mid"], family["undated"]]
    assert prior_ids(db, family["south"]) == [], "south's P1 is not north's"
    assert prior_ids(db, family["none"]) == [], "no Patient ID, no priors"
    with db.session() as session:
        record_verdict(session, family["old"], doctors, "Normal", scope=EVERY_HOSPITAL)
        [*_, old] = study_detail(session, family["mid"], scope=EVERY_HOSPITAL)["priors"][:2]
    assert old == {"id": family["old"], "study_date": "2025-01-10", "received_at": old["received_at"],
                   "band": "Normal", "score": 0.2, "reviewed": True, "accession_number": "A-old",
                   "study_description": "XR CHEST 1 VIEW", "modality": None}
    assert old["received_at"] is not None


def test_priors_keep_to_the_readers_scope(db) -> None:
    """A reader sees a patient's priors only within the hospitals it reads: the same patient's study moved to
    another hospital is gone from the list, and a study outside the scope shows no priors at all (not found)."""
    from xraylab.db.review import StudyNotFoundError

    ids = write(db, (record("a", hospital="north", patient_id="P1", study_date="2026-01-01"), 0.5),
                (record("b", hospital="north", patient_id="P1", study_date="2026-02-01"), 0.5))
    assert prior_ids(db, ids[1], ReadScope.of(["north"])) == [ids[0]]
    with pytest.raises(StudyNotFoundError):
        prior_ids(db, ids[1], ReadScope.of(["south"]))
    with db.session() as session:
        session.execute(update(Study).where(Study.id == ids[0]).values(hospital="elsewhere"))
    assert prior_ids(db, ids[1], ReadScope.of(["north", "elsewhere"])) == [], "another hospital's P1"
    assert prior_ids(db, ids[1], EVERY_HOSPITAL) == []


def test_the_next_unreviewed_study_follows_the_worklists_order(db, sortable, doctors) -> None:
    with db.session() as session:
        first = next_unreviewed(session, WorklistFilter(), None, scope=EVERY_HOSPITAL)
        after_first = next_unreviewed(session, WorklistFilter(), first, scope=EVERY_HOSPITAL)
        by_date = next_unreviewed(session, WorklistFilter(sort="study_date"), None, scope=EVERY_HOSPITAL)
        by_date_desc = next_unreviewed(session, WorklistFilter(sort="study_date", descending=True), None,
                                       scope=EVERY_HOSPITAL)
        south = next_unreviewed(session, WorklistFilter(), None, scope=ReadScope.of(["south"]))
        reviewed_view = next_unreviewed(session, WorklistFilter(status="reviewed", hospital="north"), None,
                                        scope=EVERY_HOSPITAL)
    assert (first, after_first) == (sortable[0], sortable[2])
    assert (by_date, by_date_desc) == (sortable[1], sortable[3])
    assert south == sortable[5], "south's riskiest unreviewed study, not north's"
    assert reviewed_view == sortable[0], "the status filter is taken as unreviewed; the hospital filter is kept"
    with db.session() as session:  # saved: the next is the one after it, never a reviewed one
        record_verdict(session, sortable[0], doctors, "Pneumonia", scope=EVERY_HOSPITAL)
        assert next_unreviewed(session, WorklistFilter(), sortable[0], scope=EVERY_HOSPITAL) == sortable[2]
        assert next_unreviewed(session, WorklistFilter(hospital="north"), sortable[0],
                               scope=EVERY_HOSPITAL) == sortable[3]
        assert next_unreviewed(session, WorklistFilter(search="zed"), sortable[3], scope=EVERY_HOSPITAL) is None
        assert next_unreviewed(session, WorklistFilter(), None, scope=ReadScope.of([])) is None
