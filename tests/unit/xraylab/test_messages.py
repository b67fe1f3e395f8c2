"""The typed messages between stages: study metadata as S3 headers, and the study row built from them."""

import base64

import pytest

from xraylab.db.crud import STUDY_COLUMNS
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import FetchedObject, ObjectToProcess, StudyMetadata, StudyRecord, study_uid


def test_metadata_round_trips_through_ascii_headers() -> None:
    meta = StudyMetadata(hospital="st-mary", patient_id="P1", patient_name="Chloé Novak", study_date="2026-11-20")
    headers = meta.to_s3_metadata()
    assert set(headers) == {"hospital", "patient-id", "patient-name", "study-date"}
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
