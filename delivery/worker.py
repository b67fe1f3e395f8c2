"""The deliverer: takes the outbox's due results (``xraylab.db.outbox``) and sends them, each destination on a thread
of its own, so that a PACS or RIS that is down (or slow to time out) holds up neither the pipeline, which only
queues, nor the other destinations.

- ``pacs/<name>``: the study's instance is read from the PACS it came from, its Grad-CAM map taken from the cache
  or computed (``xraylab.heatmaps``), and the SR and the heatmap picture (``delivery.dicom_results``) stored by
  C-STORE in one association. Their UIDs derive from the study and the model version: a resend repeats them.
- ``ris/<name>``: an HL7 v2.5 ORU^R01 (``delivery.hl7_results``) over MLLP, its control id (``control_id``) the
  same on every resend; the ACK must name it.

A transient failure (connection refused, timeout, a PACS out of resources, a store or the database away) queues
the row again after a wait that doubles per consecutive failure of that destination (``DELIVERY_RETRY_BASE_S`` up
to ``DELIVERY_RETRY_MAX_S``), and the destination is left alone until then. A refusal for good (association
rejected permanently, an instance refused, an HL7 AE/AR ACK, a source no longer in the PACS, a destination no
longer configured) sets the row aside as ``failed`` with its reason, for ``xraylab outbox retry``. Nothing is
dropped: a row leaves ``queued`` only as ``sent`` or ``failed``.

One deliverer per system (the Serve app's detached actor, ``serve_app/delivery_actor.py``): two would each send a
row the other is sending, which receivers de-duplicate by its ids, but need not.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from delivery.dicom_results import result_datasets
from delivery.hl7_results import MllpError, build_oru, send_mllp
from delivery.pacs_store import RefusedDeliveryError, TransientDeliveryError, store_results
from delivery.result import ScoredStudy
from xraylab.db import outbox
from xraylab.db.models import Delivery, Prediction, Study, as_utc, utcnow
from xraylab.db.session import Database
from xraylab.delivery_config import DeliveryConfig, PacsDestination, RisDestination
from xraylab.errors import RejectedInputError
from xraylab.gradcam import overlay as gradcam_overlay
from xraylab.heatmaps import HEAT_COLOURS, HeatmapCache, overlay_base
from xraylab.imaging import InvalidImageError
from xraylab.orthanc import OrthancError
from xraylab.registry import ModelNotFoundError, RegistryLike, open_registry, read_card
from xraylab.registry.card import ModelCard
from xraylab.settings import Settings
from xraylab.sources import Sources

__all__ = ["Deliverer", "control_id"]

log = logging.getLogger("xraylab.delivery")
Publish = Callable[[str, str, float], None]  # (metric, destination, value)
_SETTLED, _LATER, _DOWN = "settled", "later", "down"
BACKLOG_EVERY_S = 15.0  # how often the backlog's gauges are refreshed
# What says the destination (or the PACS a study is read from) cannot take anything now: connections refused or
# timing out, an association not established, an MLLP exchange broken off, Orthanc or S3 answering errors.
_DESTINATION_DOWN: tuple[type[BaseException], ...] = (OSError, TransientDeliveryError, MllpError, OrthancError)


def control_id(result: ScoredStudy, destination: str) -> str:
    """The HL7 message control id (MSH-10, 20 characters) of one result for one destination: a hash of the study,
    the model version and the destination, so the same on every resend and unique across databases and runs."""
    digest = hashlib.sha256("|".join((result.study_uid, result.model_version, destination)).encode()).hexdigest()
    return "XL" + digest[:18].upper()


class Deliverer:
    def __init__(self, settings: Settings, db: Database, config: DeliveryConfig, *,
                 registry: RegistryLike | None = None, sources: Sources | None = None,
                 publish: Publish | None = None, batch: int = 20) -> None:
        self.settings, self.db, self.config = settings, db, config
        self.registry = registry if registry is not None else open_registry(settings)
        self.sources = sources or Sources(settings)
        self.heatmaps = HeatmapCache(db, self.registry, settings.image_limits())
        self.publish = publish or (lambda metric, destination, value: None)
        self.batch = batch
        self.failures: dict[str, int] = {}  # consecutive transient failures per destination
        self.resume_at: dict[str, datetime] = {}  # a failing destination is left alone until then
        self.sent: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self._cards: dict[str, ModelCard] = {}
        self._lock = threading.Lock()
        self._card_lock = threading.Lock()
        self.stopping = threading.Event()  # set by ``run``'s stop: each thread ends after the row in hand

    # --- one round -------------------------------------------------------------------------------------------

    def deliver_due(self, destination: str, *, now: datetime | None = None) -> int:
        """Send the destination's due rows, oldest first, until the destination fails (down, busy, no answer);
        returns the rows settled (sent or set aside). A row that fails on its own is put back and the others go on."""
        now = now or utcnow()
        if self.resume_at.get(destination, now) > now:
            return 0
        with self.db.session() as session:
            ids = [row.id for row in outbox.due(session, destination, now=now, limit=self.batch)]
        settled = 0
        for delivery_id in ids:
            if self.stopping.is_set():
                break
            outcome = self._deliver(delivery_id)
            if outcome == _DOWN:
                break
            settled += outcome == _SETTLED
        return settled

    def _deliver(self, delivery_id: int) -> str:
        """One row: ``_SETTLED`` (sent or set aside), ``_LATER`` (this row failed on its own: tried again later) or
        ``_DOWN`` (the destination or the PACS it is read from failed: the destination waits)."""
        with self.db.session() as session:
            job = outbox.delivery_job(session, delivery_id)
            if job is None or job["delivery"].status != outbox.QUEUED:
                return _SETTLED
            session.expunge_all()
        row: Delivery = job["delivery"]
        destination = self.config.destination(row.destination)
        try:
            if destination is None:
                raise RefusedDeliveryError(f"{row.destination} is no longer in XRAYLAB_DELIVERY_CONFIG", "unconfigured")
            result = self._scored(job["study"], job["prediction"])
            if isinstance(destination, PacsDestination):
                message_id = self._to_pacs(result, job["study"], destination)
            else:
                message_id = self._to_ris(result, destination)
        except RefusedDeliveryError as exc:
            self._settle(row, failed=str(exc), code=exc.code)
            return _SETTLED
        except (RejectedInputError, InvalidImageError, ModelNotFoundError) as exc:
            code = getattr(exc, "reason", None) or type(exc).__name__
            self._settle(row, failed=f"{code}: {exc}", code=str(code))
            return _SETTLED
        except _DESTINATION_DOWN as exc:  # the destination, or the PACS the study is read from: all its rows wait
            self._destination_later(row, exc)
            return _DOWN
        except Exception as exc:  # something of this row's own (a bug, a value a library refuses): it alone waits
            if row.attempts + 1 >= self.settings.DELIVERY_MAX_ATTEMPTS:
                self._settle(row, failed=f"gave up after {row.attempts + 1} attempts: {type(exc).__name__}: "
                                         f"{str(exc)[:300]}", code="gave_up")
                return _SETTLED
            self._row_later(row, exc)
            return _LATER
        self._settle(row, message_id=message_id)
        return _SETTLED

    def _settle(self, row: Delivery, *, message_id: str = "", failed: str = "", code: str = "") -> None:
        with self.db.session() as session:
            if failed:
                outbox.mark_failed(session, row.id, failed)
            else:
                outbox.mark_sent(session, row.id, message_id)
        with self._lock:
            self.failures.pop(row.destination, None)
            self.resume_at.pop(row.destination, None)
            counts = self.failed if failed else self.sent
            counts[row.destination] = counts.get(row.destination, 0) + 1
        if failed:  # the reason may quote a receiver's text: the log names its code only (xraylab outbox list has it)
            log.warning("delivery %d (study %d) to %s set aside: %s", row.id, row.study_id, row.destination, code)
            self.publish("failed", row.destination, 1)
        else:
            log.info("delivery %d (study %d) sent to %s as %s", row.id, row.study_id, row.destination, message_id)
            self.publish("sent", row.destination, 1)

    def _destination_later(self, row: Delivery, exc: Exception) -> None:
        with self._lock:
            failures = self.failures[row.destination] = self.failures.get(row.destination, 0) + 1
            wait = min(self.settings.DELIVERY_RETRY_MAX_S, self.settings.DELIVERY_RETRY_BASE_S * 2 ** (failures - 1))
            at = self.resume_at[row.destination] = utcnow() + timedelta(seconds=wait)
        log.warning("delivery %d (study %d) to %s failed (%s); that destination is tried again in %.0f s", row.id,
                    row.study_id, row.destination, type(exc).__name__, wait)
        self._retry_at(row, exc, at)

    def _row_later(self, row: Delivery, exc: Exception) -> None:
        wait = min(self.settings.DELIVERY_RETRY_MAX_S, self.settings.DELIVERY_RETRY_BASE_S * 2 ** row.attempts)
        log.warning("delivery %d (study %d) to %s failed on its own (%s, attempt %d of %d); tried again in %.0f s",
                    row.id, row.study_id, row.destination, type(exc).__name__, row.attempts + 1,
                    self.settings.DELIVERY_MAX_ATTEMPTS, wait)
        self._retry_at(row, exc, utcnow() + timedelta(seconds=wait))

    def _retry_at(self, row: Delivery, exc: Exception, at: datetime) -> None:
        try:
            with self.db.session() as session:
                outbox.retry_later(session, row.id, f"{type(exc).__name__}: {str(exc)[:300]}", at)
        except Exception as db_exc:  # the database away: the row stays queued and due, tried again after the wait
            log.warning("delivery %d: its retry time was not recorded (%s)", row.id, type(db_exc).__name__)

    # --- what is sent ----------------------------------------------------------------------------------------

    def _card(self, version: str) -> ModelCard:
        with self._card_lock:  # not the counters' lock: a slow registry holds up no other destination's bookkeeping
            if version not in self._cards:
                self._cards[version] = read_card(self.registry, version)
            return self._cards[version]

    def _scored(self, study: Study, prediction: Prediction) -> ScoredStudy:
        card = self._card(prediction.model_version)
        location = str(getattr(self.registry, "location", self.registry)).rstrip("/")
        return ScoredStudy(
            study_id=study.id, study_uid=study.study_uid, prediction_id=prediction.id, score=prediction.score,
            band=prediction.band, model_name=card.architecture, model_version=prediction.model_version,
            card_reference=f"{location}/{prediction.model_version}/card.json", notice=card.notice,
            research_only=True, scored_at=as_utc(prediction.created_at) or utcnow(), hospital=study.hospital,
            patient_id=study.patient_id, patient_name=study.patient_name, accession_number=study.accession_number,
            study_instance_uid=study.study_instance_uid, study_date=study.study_date, modality=study.modality)

    def _to_pacs(self, result: ScoredStudy, study: Study, destination: PacsDestination) -> str:
        import io

        import numpy as np
        import pydicom

        fetched = self.sources.fetch(study.endpoint_id, study.bucket, study.object_key)
        if study.etag and fetched.etag and fetched.etag != study.etag:
            raise RefusedDeliveryError("the study's instance was replaced in the PACS after it was scored", "replaced")
        source = pydicom.dcmread(io.BytesIO(fetched.data), stop_before_pixels=True)
        picture = overlay_base(fetched.data, self.settings.image_limits())
        heat = self.heatmaps.heat(study.id, result.model_version, fetched.data, study_uid=study.study_uid)
        overlay = np.asarray(gradcam_overlay(picture, heat, colours=HEAT_COLOURS).convert("RGB"))  # the app's scale
        try:
            datasets = result_datasets(source, result, overlay, institution_name=study.hospital)
        except Exception as exc:  # a source without the UIDs a result refers to, or not the study scored: for good
            raise RefusedDeliveryError(f"the results cannot be built on this instance: {type(exc).__name__}: {exc}",
                                       "build_failed") from exc
        store_results(datasets, destination)
        return str(datasets[0].SOPInstanceUID)

    def _to_ris(self, result: ScoredStudy, destination: RisDestination) -> str:
        message_control_id = control_id(result, destination.id)
        try:
            message = build_oru(result, destination, message_control_id, sent_at=utcnow())
        except ValueError as exc:  # nothing a resend would change (a score that is not a number)
            raise RefusedDeliveryError(f"the ORU^R01 cannot be built: {exc}", "build_failed") from exc
        ack = send_mllp(destination.host, destination.port, message, timeout_s=destination.timeout_s)
        if ack.control_id != message_control_id:
            raise MllpError(f"the ACK names message {ack.control_id!r}, not {message_control_id!r}")
        if ack.refused:
            raise RefusedDeliveryError(f"the RIS answered {ack.code}" + (f": {ack.text}" if ack.text else ""),
                                       f"ack_{ack.code}")
        if not ack.accepted:
            raise MllpError(f"the RIS answered {ack.code!r}")
        return message_control_id

    # --- the loop --------------------------------------------------------------------------------------------

    def destinations(self) -> list[str]:
        """Every destination configured, and any with queued rows (a removed one's rows are set aside)."""
        configured = [d.id for d in (*self.config.pacs.values(), *self.config.ris.values())]
        with self.db.session() as session:
            pending = outbox.pending_destinations(session)
        return sorted(set(configured) | set(pending))

    def publish_backlog(self) -> list[outbox.DestinationSummary]:
        """The outbox's figures per destination, as gauges: queued, failed (set aside), lag of the oldest."""
        with self.db.session() as session:
            figures = outbox.summary(session)
        for figure in figures:
            self.publish("queued", figure.destination, figure.queued)
            self.publish("failed_waiting", figure.destination, figure.failed)
            self.publish("lag_seconds", figure.destination, figure.oldest_queued_s or 0.0)
        return figures

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: one thread per destination, each reading its due rows every
        ``DELIVERY_POLL_S``, and the backlog's gauges refreshed every ``BACKLOG_EVERY_S``."""
        threads: dict[str, threading.Thread] = {}
        self.stopping = stop
        published = 0.0
        while not stop.is_set():
            try:
                for destination in self.destinations():
                    if destination not in threads or not threads[destination].is_alive():
                        threads[destination] = threading.Thread(target=self._follow, args=(destination, stop),
                                                                name=f"deliver:{destination}", daemon=True)
                        threads[destination].start()
                if time.monotonic() - published >= BACKLOG_EVERY_S:  # a scan of the outbox: not every poll
                    self.publish_backlog()
                    published = time.monotonic()
            except Exception as exc:  # the database away: carry on at the next poll
                log.warning("the outbox could not be read (%s: %s)", type(exc).__name__, str(exc)[:200])
            stop.wait(max(self.settings.DELIVERY_POLL_S, 1.0))
        for thread in threads.values():
            thread.join(timeout=30)

    def _follow(self, destination: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                settled = self.deliver_due(destination)
            except Exception as exc:
                log.warning("delivery to %s paused (%s: %s)", destination, type(exc).__name__, str(exc)[:200])
                settled = 0
            if not settled:
                stop.wait(self.settings.DELIVERY_POLL_S)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"sent": dict(self.sent), "failed": dict(self.failed),
                    "waiting": {d: t.isoformat() for d, t in self.resume_at.items()}}
