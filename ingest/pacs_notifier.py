"""PACS -> Kafka: turns Orthanc's change log into the same S3-shaped events as the SeaweedFS notifier's.

Orthanc numbers every change (``Seq``) and replays them from any number (``GET /changes?since=N``), and the
numbers survive its restarts. This notifier reads them in pages, produces one event per ``NewInstance``
(endpoint ``ORTHANC_ENDPOINT_ID``, bucket ``instances``, key the instance id; ``acks=all``), waits for the broker
to acknowledge the page, and only then saves the page's last sequence number. After a crash it resumes from the
saved number: at-least-once, and the pipeline's idempotent writes absorb a repeated page. The results xraylab's
deliverer stores back (stored by ``XRAYLAB_DELIVERY_AET``: Orthanc's ``RemoteAET``) make no event. Should the
PACS's log start again below the saved number (a PACS reinstalled), it follows the new log from its start. Events
carry no patient data: an instance id is a hash of UIDs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from xraylab.events import make_s3_event
from xraylab.messages import ObjectToProcess
from xraylab.orthanc import PACS_BUCKET, OrthancClient
from xraylab.redact import redact_url
from xraylab.settings import Settings

__all__ = ["PacsNotifier", "change_to_object", "PACS_EVENT_SOURCE"]

log = logging.getLogger("xraylab.pacs_notifier")
PACS_EVENT_SOURCE = "xraylab:orthanc"


def change_to_object(change: dict[str, Any], endpoint_id: str) -> ObjectToProcess | None:
    """One ``/changes`` entry -> the instance to process, or None (series, studies, stability, deletions)."""
    if change.get("ChangeType") != "NewInstance" or change.get("ResourceType") != "Instance":
        return None
    instance_id = change.get("ID")
    if not isinstance(instance_id, str) or not instance_id:
        return None
    date = str(change.get("Date") or "")  # 20261202T190941, the PACS's local time
    event_time = f"{date[:4]}-{date[4:6]}-{date[6:8]}T{date[9:11]}:{date[11:13]}:{date[13:15]}" if len(date) == 15 \
        else None
    return ObjectToProcess(bucket=PACS_BUCKET, key=instance_id, endpoint_id=endpoint_id,
                           event_name="ObjectCreated:Put", event_time=event_time)


class PacsNotifier:
    def __init__(self, settings: Settings, *, client: OrthancClient | None = None, state_file: Path | None = None,
                 page: int = 200, poll_s: float = 1.0) -> None:
        self.settings = settings
        self.client = client or OrthancClient.from_settings(settings)
        self.state_file = state_file or settings.STATE_DIR / "pacs-notifier.seq"
        self.page = page
        self.poll_s = poll_s
        self.stop_event = threading.Event()

    def last_seq(self) -> int:
        try:
            return int(self.state_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return 0

    def _save_seq(self, seq: int) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.state_file)

    def run(self) -> None:
        from ingest.kafka_io import make_producer

        producer = make_producer(self.settings, job="notifier")
        log.info("pacs notifier following %s/changes from %d -> topic %s", redact_url(self.settings.ORTHANC_URL),
                 self.last_seq(), self.settings.KAFKA_TOPIC)
        backoff = 1.0
        try:
            while not self.stop_event.is_set():
                try:
                    more = self.publish_page(producer)
                    backoff = 1.0
                    if not more:  # caught up: look again in poll_s
                        self.stop_event.wait(self.poll_s)
                except Exception as exc:  # Orthanc or Kafka down: resume from the saved sequence number
                    log.warning("pacs notifier interrupted (%s: %s); resuming in %.0fs from the last acknowledged "
                                "change", type(exc).__name__, str(exc)[:200], backoff)
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            producer.close(timeout=10)

    def publish_page(self, producer: Any) -> bool:
        """Produce the events of one page of changes after the saved number, and save its last number once the
        broker has acknowledged them all; True when more pages wait."""
        since = self.last_seq()
        answer = self.client.changes(since, self.page)
        last, done = int(answer.get("Last") or 0), bool(answer.get("Done", True))
        changes = answer.get("Changes") or []
        if not changes and last < since:
            log.warning("the PACS change log ends at %d, before the saved %d (a new PACS?): following it from 0",
                        last, since)
            self._save_seq(0)
            return True
        futures, own = [], 0
        for change in changes:
            item = change_to_object(change, self.settings.ORTHANC_ENDPOINT_ID)
            if item is not None and self.client.remote_aet(item.key) == self.settings.DELIVERY_AET:
                own += 1  # a result xraylab's deliverer stored back (delivery/): never scored, never dead-lettered
                continue
            if item is not None:
                payload = json.dumps(make_s3_event(item, source=PACS_EVENT_SOURCE)).encode("utf-8")
                futures.append(producer.send(self.settings.KAFKA_TOPIC, key=item.key.encode(), value=payload))
        for future in futures:
            future.get(30)
        newest = max([int(c.get("Seq") or 0) for c in changes] + [since])
        if newest > since:
            self._save_seq(newest)
        if futures or own:
            log.info("pacs notifier: %d new instances, up to change %d (%d results of ours left alone)", len(futures),
                     newest, own)
        return not done and bool(changes)
