"""Grad-CAM maps computed ahead, so that a reader's first Grad-CAM toggle is served from the cache: for every
unreviewed study whose latest prediction is in the Pneumonia or Unsure band and has no cached map under that
prediction's model, the map is computed (``ui.study_media.HeatmapMaker``, the routes' own) and cached in the
``heatmaps`` table.

``HeatmapPrecomputer.start()`` starts a daemon thread that first warms the serving model (loads the registry's
promoted model and runs Grad-CAM once on a blank input, so that a first toggle, even of a Normal study, pays neither
the model's load nor its gradient model's building), then every ``XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S`` seconds
(0: no thread at all) computes up to ``batch`` missing maps, going on after ``BATCH_PAUSE_S`` while more are
waiting (the pause lets a doctor's own request take the one Grad-CAM lock between batches). ``stop()`` ends it.
``run_once(limit)`` is one such round.

Reviewed studies are left to be made on demand (a reader opens them rarely). Order: the highest risk band
(Pneumonia, then Unsure), then the newest: the studies a reader opens next. A study whose picture is gone, replaced
after scoring, over the image limits or unreadable is left out for as long as the process runs (its map would be
refused anyway); a failure of another kind (the store or the registry not answering) is tried again in later
rounds, up to ``MAX_TRIES`` times. Nothing is audited (no one looked at a picture), and the log names studies by
their row id only.

Every replica of the review app runs one: two replicas may compute the same map at once, and the cache keeps the
first (``store_heatmap``); the maps are equal.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from ui.study_media import HeatmapMaker, ImageChangedError, ImageGoneError
from xraylab.bands import BAND_ORDER, PNEUMONIA, UNSURE
from xraylab.db.crud import get_study
from xraylab.db.models import Heatmap, Prediction, Study
from xraylab.db.session import Database
from xraylab.errors import RejectedInputError
from xraylab.imaging import InvalidImageError

__all__ = ["HeatmapPrecomputer", "missing_heatmaps", "PRECOMPUTED_BANDS", "BATCH", "BATCH_PAUSE_S", "MAX_TRIES"]

log = logging.getLogger("xraylab.ui.heatmap_precompute")
PRECOMPUTED_BANDS = (PNEUMONIA, UNSURE)
BATCH = 8  # maps per round; with more waiting, the next round starts after BATCH_PAUSE_S
BATCH_PAUSE_S = 1.0
MAX_TRIES = 3  # rounds in which a study's map may fail for a reason other than its picture, before it is left out


def missing_heatmaps(session: Session, limit: int) -> list[tuple[int, str]]:
    """``(study id, model version)`` of up to ``limit`` unreviewed studies whose latest prediction is in a band of
    ``PRECOMPUTED_BANDS`` and has no cached map under its model version: by band (the highest risk first), then the
    newest."""
    latest = (select(func.max(Prediction.id)).where(Prediction.study_id == Study.id)
              .correlate(Study).scalar_subquery())
    cached = exists().where((Heatmap.study_id == Study.id) & (Heatmap.model_version == Prediction.model_version))
    ranks = [BAND_ORDER.index(band) for band in PRECOMPUTED_BANDS]
    query = (select(Study.id, Prediction.model_version)
             .join(Prediction, Prediction.id == latest)
             .where(Study.reviewed.is_(False), Study.band_rank.in_(ranks), Prediction.band.in_(PRECOMPUTED_BANDS),
                    ~cached)
             .order_by(Study.band_rank, Study.id.desc())
             .limit(limit))
    return [(int(study_id), str(version)) for study_id, version in session.execute(query)]


class HeatmapPrecomputer:
    """Computes the missing maps of Pneumonia and Unsure studies ahead (see the module)."""

    def __init__(self, db: Database, heatmaps: HeatmapMaker, *, interval_s: float = 10.0, batch: int = BATCH) -> None:
        if interval_s < 0 or batch < 1:
            raise ValueError("a HeatmapPrecomputer needs interval_s >= 0 (0: off) and batch >= 1")
        self.db = db
        self.heatmaps = heatmaps
        self.interval_s = interval_s
        self.batch = batch
        self._left_out: set[tuple[int, str]] = set()  # (study id, model version) whose map is not tried again
        self._failures: Counter[tuple[int, str]] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, db: Database, heatmaps: HeatmapMaker, settings: Any) -> HeatmapPrecomputer:
        return cls(db, heatmaps, interval_s=float(settings.HEATMAP_PRECOMPUTE_INTERVAL_S))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def warm(self) -> str:
        """Load the serving (promoted) model and build its Grad-CAM once; returns its version."""
        return self.heatmaps.warm()

    def run_once(self, limit: int) -> int:
        """Compute up to ``limit`` missing maps; returns how many were computed (and cached)."""
        if limit < 1:
            return 0
        with self.db.session() as session:
            todo = [key for key in missing_heatmaps(session, limit + len(self._left_out))
                    if key not in self._left_out][:limit]
        done = 0
        for study_id, version in todo:
            if self._stop.is_set():
                break
            done += self._compute(study_id, version)
        return done

    def _compute(self, study_id: int, version: str) -> int:
        try:
            with self.db.session() as session:
                row = get_study(session, study_id)
            if row is None or row.get("model_version") != version:  # deleted, or scored again, meanwhile
                return 0
            self.heatmaps.map_of(row)  # as the routes make it
            self._failures.pop((study_id, version), None)
            return 1
        except (ImageGoneError, ImageChangedError, InvalidImageError) as exc:
            why = exc.reason.value if isinstance(exc, InvalidImageError) else type(exc).__name__
            self._leave_out(study_id, version, why)
        except RejectedInputError as exc:  # the fetch refused it: too large; or the store failed
            self._failed(study_id, version, exc.reason.value)
        except Exception as exc:
            self._failed(study_id, version, type(exc).__name__)
        return 0

    def _leave_out(self, study_id: int, version: str, why: str) -> None:
        self._left_out.add((study_id, version))
        self._failures.pop((study_id, version), None)
        log.info("study %s: no Grad-CAM map computed ahead (%s); left out", study_id, why)

    def _failed(self, study_id: int, version: str, why: str) -> None:
        self._failures[(study_id, version)] += 1
        if why == "too_large" or self._failures[(study_id, version)] >= MAX_TRIES:
            self._leave_out(study_id, version, why)
        else:
            log.warning("study %s: Grad-CAM map not computed ahead (%s); tried again later", study_id, why)

    def start(self) -> bool:
        """Start the thread (warm the model, then a round every ``interval_s``); False when turned off
        (``interval_s`` 0) or already running."""
        if self.interval_s <= 0:
            log.info("Grad-CAM maps are not computed ahead (XRAYLAB_HEATMAP_PRECOMPUTE_INTERVAL_S=0)")
            return False
        if self.running:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="heatmap-precompute", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop (after the map it is computing) and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        try:
            log.info("Grad-CAM model %s warmed", self.warm())
        except Exception as exc:  # no promoted model yet, registry not reachable: maps are made on demand
            log.warning("Grad-CAM model not warmed: %s", type(exc).__name__)
        while not self._stop.is_set():
            try:
                done = self.run_once(self.batch)
            except Exception as exc:  # the database not answering: next round
                log.warning("Grad-CAM maps not computed ahead this round: %s", type(exc).__name__)
                done = 0
            self._stop.wait(BATCH_PAUSE_S if done >= self.batch else self.interval_s)
