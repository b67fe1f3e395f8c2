"""The PACS notifier against a stand-in of Orthanc's /changes (the real one is in tests/e2e/test_dicom_pipeline.py):
pages until Done, one event per new instance, the sequence number saved only once the broker acknowledged the
page, a resumed notifier repeating at most that page, and a change log that starts again followed from 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pacs_notifier import PacsNotifier, change_to_object
from xraylab.events import parse_s3_event
from xraylab.settings import load_settings


class Log:
    """Orthanc's change log: Seq 1..n, a NewInstance, NewSeries and StableStudy per instance, as it answers."""

    def __init__(self, instances: int) -> None:
        self.changes = []
        for i in range(instances):
            for kind, resource in (("NewInstance", "Instance"), ("NewSeries", "Series"), ("StableStudy", "Study")):
                self.changes.append({"ChangeType": kind, "ResourceType": resource, "ID": f"{i:08x}-0-0-0-0",
                                     "Seq": len(self.changes) + 1, "Date": "20261202T190941"})

    def changes_after(self, since: int, limit: int = 100) -> dict:
        page = [c for c in self.changes if c["Seq"] > since][:limit]
        last = page[-1]["Seq"] if page else (self.changes[-1]["Seq"] if self.changes else 0)
        return {"Changes": page, "Done": not [c for c in self.changes if c["Seq"] > last], "Last": last}


class Client:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.stored_by: dict[str, str] = {}  # instance id -> the calling AE title that stored it (else a modality)

    def changes(self, since: int, limit: int = 100) -> dict:
        return self.log.changes_after(since, limit)

    def remote_aet(self, instance_id: str) -> str | None:
        return self.stored_by.get(instance_id, "XRAYLAB_MOD")


class Future:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def get(self, timeout: float) -> None:
        if self.fail:
            raise TimeoutError("broker down")


class Producer:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.down = False

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        if not self.down:
            [item] = parse_s3_event(value)
            self.sent.append(item.key)
        return Future(self.down)


def notifier(tmp_path: Path, log: Log) -> PacsNotifier:
    return PacsNotifier(load_settings(STATE_DIR=tmp_path), client=Client(log), state_file=tmp_path / "seq",
                        page=10)


def test_only_new_instances_become_events() -> None:
    [instance, series, stable] = Log(1).changes
    item = change_to_object(instance, "pacs")
    assert (item.endpoint_id, item.bucket, item.key, item.event_time) == (
        "pacs", "instances", "00000000-0-0-0-0", "2026-12-02T19:09:41")
    assert change_to_object(series, "pacs") is None and change_to_object(stable, "pacs") is None


def test_pages_until_done_then_resumes_where_it_stopped(tmp_path: Path) -> None:
    log, producer = Log(12), Producer()
    first = notifier(tmp_path, log)
    while first.publish_page(producer):
        pass
    assert producer.sent == [f"{i:08x}-0-0-0-0" for i in range(12)] and first.last_seq() == 36
    log.changes += Log(3).changes  # more arrive (their ids repeat the first three: a resend, absorbed downstream)
    for n, change in enumerate(log.changes):
        change["Seq"] = n + 1
    again = notifier(tmp_path, log)  # a restarted notifier: from the saved number, not from 0
    assert not again.publish_page(producer)
    assert producer.sent[12:] == [f"{i:08x}-0-0-0-0" for i in range(3)] and again.last_seq() == 45


def test_results_xraylab_stored_back_make_no_event(tmp_path: Path) -> None:
    """The SR and Grad-CAM picture the deliverer stores (calling AE XRAYLAB_DELIVERY_AET) are not uploads."""
    log, producer = Log(4), Producer()
    pacs = notifier(tmp_path, log)
    pacs.client.stored_by = {"00000001-0-0-0-0": pacs.settings.DELIVERY_AET,
                             "00000003-0-0-0-0": pacs.settings.DELIVERY_AET}
    while pacs.publish_page(producer):
        pass
    assert producer.sent == ["00000000-0-0-0-0", "00000002-0-0-0-0"] and pacs.last_seq() == 12


def test_a_page_the_broker_did_not_acknowledge_is_not_saved(tmp_path: Path) -> None:
    log, producer = Log(4), Producer()
    pacs = notifier(tmp_path, log)
    producer.down = True
    with pytest.raises(TimeoutError):
        pacs.publish_page(producer)
    assert pacs.last_seq() == 0, "nothing saved: the page comes again"
    producer.down = False
    assert pacs.publish_page(producer), "a page of 10 changes, 2 more waiting"
    assert not pacs.publish_page(producer)
    assert len(producer.sent) == 4 and pacs.last_seq() == 12


def test_a_change_log_that_starts_again_is_followed_from_its_start(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("500")  # a PACS reinstalled: its log is shorter than what was saved
    log, producer = Log(2), Producer()
    pacs = notifier(tmp_path, log)
    assert pacs.publish_page(producer) and pacs.last_seq() == 0
    pacs.publish_page(producer)
    assert producer.sent == ["00000000-0-0-0-0", "00000001-0-0-0-0"] and pacs.last_seq() == 6
