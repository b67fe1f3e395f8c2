"""The typed messages between stages: study metadata as S3 headers, and the study row built from them."""

import base64

import pytest

from xraylab.db.crud import STUDY_COLUMNS
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import FetchedObject, ObjectToProcess, StudyMetadata, StudyRecord, study_uid


def test_metadata_round_trips_through_ascii_headers() -> None:
    meta = StudyMetadata(hospital="st-mary", patient_id="P1", patient_name="Chloé Novak", study_date="2026-11-20")
    headers = meta.to_s3_metadata()
    assert set(headers) == {"hospital", "patient-id", "patient-name", "study-date"}, "only what is known"
    assert all(v.isascii() for v in headers.values())
    assert headers["patient-name"] == "=?utf-8?b?" + base64.b64encode("Chloé Novak".encode()).decode() + "?="
    assert StudyMetadata.from_s3_metadata(headers) == meta
    # S3 returns header names in any case; absent ones stay None.
    assert StudyMetadata.from_s3_metadata({"Hospital": "northgate"}) == StudyMetadata(hospital="northgate")


@pytest.mark.parametrize("value", ["=?utf-8?b?/w==?=", "=?utf-8?b?not base64!?=", "=?UTF-8?B?/w==?=", "a\x00b"])
def test_undecodable_metadata_is_refused_with_its_reason_and_without_its_value(value: str) -> None:
    with pytest.raises(RejectedInputError) as info:
        StudyMetadata.from_s3_metadata({"hospital": "st-mary", "patient-name": value})
    assert info.value.reason is RejectReason.BAD_METADATA and "patient-name" in info.value.detail
    assert value not in info.value.detail, "the detail names the header, never its (patient) value"


def test_study_record_columns_are_the_studies_table() -> None:
    item = ObjectToProcess(bucket="b", key="k.jpeg", etag="from-event")
    fetched = FetchedObject(data=b"12345", etag=None, content_type="image/jpeg", endpoint_id="local",
                            metadata=StudyMetadata(patient_id="P9"))
    record = StudyRecord.of(item, fetched)
    assert record.study_uid == study_uid("local", "b", "k.jpeg", "from-event"), "the event's eTag when S3 gives none"
    columns = record.columns()
    assert tuple(sorted(columns)) == tuple(sorted(STUDY_COLUMNS))
    assert (columns["size_bytes"], columns["patient_id"], columns["patient_name"]) == (5, "P9", None)


def test_sex_age_and_description_travel_as_s3_metadata_checked_on_the_way_in() -> None:
    meta = StudyMetadata(hospital="st-mary", patient_id="P1", patient_sex="F", patient_age="034Y",
                         study_description="XR CHEST PA", accession_number="A1")
    headers = meta.to_s3_metadata()
    assert (headers["patient-sex"], headers["patient-age"], headers["study-description"]) == ("F", "034Y",
                                                                                              "XR CHEST PA")
    assert StudyMetadata.from_s3_metadata(headers) == meta
    # What an uploader outside the project may write: any case, an age in years without its unit, a description
    # too long; a sex that is none of M/F/O and an age that is no age are dropped, not stored.
    loose = StudyMetadata.from_s3_metadata({"Patient-Sex": "f", "patient-age": "7",
                                            "study-description": "D" * 80})
    assert (loose.patient_sex, loose.patient_age, loose.study_description) == ("F", "007Y", "D" * 64)
    bad = StudyMetadata.from_s3_metadata({"patient-sex": "unknown", "patient-age": "34 years old"})
    assert (bad.patient_sex, bad.patient_age) == (None, None)
    assert StudyMetadata(patient_age="200Y").patient_age is None, "no one is 200"
    assert StudyMetadata(patient_age="006m").patient_age == "006M"


def test_ages_are_shown_with_their_unit() -> None:
    from xraylab.messages import age_label

    assert [age_label(a) for a in ("034Y", "006M", "002W", "010D", None, "x")] == ["34 y", "6 m", "2 w", "10 d",
                                                                                  None, None]
