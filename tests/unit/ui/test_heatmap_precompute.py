"""Grad-CAM maps computed ahead (``ui/heatmap_precompute.py``): for Pneumonia and Unsure studies with no cached map
under their latest prediction's model, the highest risk and newest first; a study whose picture is gone is left out
without stopping the others."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from tests.unit.ui.test_study_media import jpeg
from tests.unit.ui.test_study_pixels import FakeMaps, Images
from ui.heatmap_precompute import HeatmapPrecomputer, missing_heatmaps
from ui.study_media import ImageGoneError
from xraylab.db.crud import record_prediction
from xraylab.db.models import Heatmap
from xraylab.db.session import Database
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid
from xraylab.settings import Settings


def add(db: Database, key: str, band: str, score: float, version: str = "m1") -> int:
    record = StudyRecord(study_uid=study_uid("local", "b", key, "e"), endpoint_id="local", bucket="b",
                         object_key=key, etag="e", metadata=StudyMetadata(hospital="north"))
    with db.session() as session:
        return record_prediction(session, record, Verdict(score=score, band=band, model_version=version,
                                                          synthetic_model=True)).study_id


class SomeGone(Images):
    """Objects by key; the keys in ``gone`` are no longer in the store."""

    def __init__(self, gone: set[str]) -> None:
        super().__init__(jpeg())
        self.gone = gone
        self.asked: list[str] = []

    def original(self, study: dict[str, Any]) -> bytes:
        self.asked.append(study["object_key"])
        if study["object_key"] in self.gone:
            raise ImageGoneError(f"study {study['id']}: gone")
        return self.data


def cached(db: Database) -> set[tuple[int, str]]:
    with db.session() as session:
        return set(session.execute(select(Heatmap.study_id, Heatmap.model_version)).all())


def test_maps_are_computed_for_pneumonia_and_unsure_only_and_a_gone_image_is_left_out(db: Database) -> None:
    unsure = add(db, "unsure", "Unsure", 0.7)
    pneumonia = add(db, "pneumonia", "Pneumonia", 0.9)
    normal = add(db, "normal", "Normal", 0.1)
    gone = add(db, "gone", "Pneumonia", 0.95)  # the newest Pneumonia study: tried first
    rescored = add(db, "rescored", "Normal", 0.2)
    add(db, "rescored", "Pneumonia", 0.85, version="m2")  # its latest prediction is Pneumonia, under m2
    images = SomeGone({"gone"})
    maps = FakeMaps(db, images)
    with db.session() as session:
        assert missing_heatmaps(session, 10) == [(rescored, "m2"), (gone, "m1"), (pneumonia, "m1"), (unsure, "m1")]
    precompute = HeatmapPrecomputer(db, maps, interval_s=0)
    assert precompute.run_once(10) == 3
    assert images.asked == ["rescored", "gone", "pneumonia", "unsure"]  # the gone one did not stop the round
    assert cached(db) == {(rescored, "m2"), (pneumonia, "m1"), (unsure, "m1")}
    assert normal not in {study for study, _ in cached(db)}
    images.asked.clear()
    assert precompute.run_once(10) == 0 and images.asked == []  # done; the gone one is not tried again
    with db.session() as session:
        assert missing_heatmaps(session, 10) == [(gone, "m1")]


def test_a_round_computes_at_most_its_limit_highest_risk_first(db: Database) -> None:
    pneumonia = add(db, "pneumonia", "Pneumonia", 0.9)
    add(db, "unsure-newer", "Unsure", 0.7)
    maps = FakeMaps(db, Images(jpeg()))
    precompute = HeatmapPrecomputer(db, maps, interval_s=0)
    assert precompute.run_once(1) == 1 and cached(db) == {(pneumonia, "m1")}
    assert precompute.run_once(0) == 0 and len(cached(db)) == 1


def test_a_failure_of_the_store_is_tried_again_then_left_out(db: Database) -> None:
    add(db, "k", "Pneumonia", 0.9)

    class Down(Images):
        def original(self, study: dict[str, Any]) -> bytes:
            self.fetched += 1
            raise ConnectionError("the store does not answer")

    images = Down(jpeg())
    precompute = HeatmapPrecomputer(db, FakeMaps(db, images), interval_s=0)
    assert [precompute.run_once(5) for _ in range(5)] == [0] * 5
    assert images.fetched == 3  # MAX_TRIES rounds, then left out


def test_the_thread_warms_the_model_then_fills_the_cache_and_stops(db: Database) -> None:
    study = add(db, "k", "Unsure", 0.7)

    class Warmed(FakeMaps):
        warmed = 0

        def warm(self, version: str = "") -> str:
            self.warmed += 1
            return "m1"

    maps = Warmed(db, Images(jpeg()))
    off = HeatmapPrecomputer.from_settings(db, maps, Settings(HEATMAP_PRECOMPUTE_INTERVAL_S=0))
    assert off.start() is False and not off.running and maps.warmed == 0
    precompute = HeatmapPrecomputer(db, maps, interval_s=0.05)
    assert precompute.start() is True and precompute.start() is False  # one thread
    deadline = time.monotonic() + 10
    while not cached(db) and time.monotonic() < deadline:
        time.sleep(0.02)
    precompute.stop()
    assert not precompute.running and maps.warmed == 1 and cached(db) == {(study, "m1")}
    with pytest.raises(ValueError):
        HeatmapPrecomputer(db, maps, interval_s=-1)


def test_reviewed_studies_are_left_to_be_made_on_demand(db: Database) -> None:
    from sqlalchemy import update

    from xraylab.db.models import Study

    reviewed = add(db, "reviewed", "Pneumonia", 0.9)
    waiting = add(db, "waiting", "Unsure", 0.6)
    with db.session() as session:  # as a verdict marks it
        session.execute(update(Study).where(Study.id == reviewed).values(reviewed=True))
    with db.session() as session:
        assert missing_heatmaps(session, 10) == [(waiting, "m1")]
    assert HeatmapPrecomputer(db, FakeMaps(db, Images(jpeg())), interval_s=0).run_once(10) == 1
    assert cached(db) == {(waiting, "m1")}
