"""The study pictures' routes (``ui/study_media.py``) under load, and what tells a replaced object: a flood of
heatmap requests is answered ``503 busy`` beyond a bounded queue, on threads of the routes' own, while the rest
of the app (its sync routes share anyio's 40 default threads) keeps answering. Served by uvicorn in a thread,
so that the requests really run concurrently."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI
from PIL import Image

from tests.accounts import reading_as
from ui.study_media import (
    BUSY_RETRY_AFTER_S,
    HEATMAP_CONCURRENCY,
    HEATMAP_QUEUE,
    BusyError,
    HeatmapMaker,
    RenderGate,
    StudyImages,
    heatmap_url,
    image_url,
    media_router,
)
from xraylab.db.crud import record_prediction
from xraylab.db.review import audit_trail
from xraylab.db.session import Database
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid
from xraylab.settings import load_settings

FLOOD = 40  # anyio's default thread limit: as many sync requests at once hold every thread of the app


def jpeg(side: int = 96, shade: int = 128) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side), shade).save(out, "JPEG")
    return out.getvalue()


class StoredImages(StudyImages):
    """The study's object from memory instead of its store."""

    def __init__(self, data: bytes) -> None:
        super().__init__(load_settings())
        self.data = data

    def original(self, study: dict[str, Any]) -> bytes:
        return self.data


class SlowHeatmaps(HeatmapMaker):
    """A map that takes until the test lets it go, counting how many are made at once."""

    def __init__(self, db: Database, images: StudyImages) -> None:
        super().__init__(db, Path("/nonexistent"), images)
        self.release = threading.Event()
        self.running = 0
        self.most_at_once = 0
        self._count = threading.Lock()

    def overlay_png(self, study: dict[str, Any]) -> bytes:
        with self._count:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.release.wait(30), "the test never let the maps go"
            return self.images.original(study)
        finally:
            with self._count:
                self.running -= 1


def add_study(db: Database) -> int:
    record = StudyRecord(study_uid=study_uid("local", "b", "k", "e"), endpoint_id="local", bucket="b",
                         object_key="k", etag="e", metadata=StudyMetadata(hospital="north", patient_name="A Name"))
    with db.session() as session:
        return record_prediction(session, record, Verdict(score=0.9, band="Pneumonia", model_version="m1",
                                                          synthetic_model=True, infer_ms=1.0)).study_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def serve() -> Iterator[Any]:
    """``serve(app)`` -> its base URL, uvicorn running it in a thread until the test ends."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_a_flood_of_heatmaps_is_bounded_answered_busy_and_stalls_nothing_else(db: Database, serve: Any) -> None:
    study_id = add_study(db)
    images = StoredImages(jpeg())
    heatmaps = SlowHeatmaps(db, images)
    app = FastAPI()
    app.include_router(media_router(db, images, heatmaps))

    @app.get("/ping")
    def ping() -> dict[str, bool]:  # sync, as login and most routes are: it needs one of anyio's default threads
        return {"ok": True}

    url = serve(reading_as(app))
    admitted = HEATMAP_CONCURRENCY + HEATMAP_QUEUE

    def get(path: str) -> tuple[requests.Response, float]:
        t0 = time.monotonic()
        response = requests.get(url + path, timeout=60)
        return response, time.monotonic() - t0

    with ThreadPoolExecutor(FLOOD) as pool:
        flood = [pool.submit(get, heatmap_url(study_id)) for _ in range(FLOOD)]
        deadline = time.monotonic() + 10
        while sum(f.done() for f in flood) < FLOOD - admitted and time.monotonic() < deadline:
            time.sleep(0.02)
        done = [f.result() for f in flood if f.done()]
        busy = [r for r, _ in done if r.status_code == 503]
        # (a) all but those admitted were refused at once, saying so, while the admitted ones are still held
        assert len(busy) == FLOOD - admitted == len(done), [r.status_code for r, _ in done]
        assert all(r.json()["error"] == "busy" and r.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)
                   for r in busy)
        assert max(seconds for _, seconds in done) < 5
        # (b) the rest of the app answers while the maps are still being made, and so do the images (a gate of
        # their own)
        pinged, seconds = get("/ping")
        assert pinged.status_code == 200 and seconds < 1.0, f"/ping took {seconds:.2f} s during the flood"
        shown, seconds = get(image_url(study_id))
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg" and seconds < 2.0
        assert heatmaps.running == HEATMAP_CONCURRENCY and sum(not f.done() for f in flood) == admitted
        heatmaps.release.set()
        served = [f.result(timeout=30)[0] for f in flood]
    assert sorted(r.status_code for r in served) == [200] * admitted + [503] * (FLOOD - admitted)
    assert heatmaps.most_at_once == HEATMAP_CONCURRENCY, "never more maps at once than the gate lets through"
    with db.session() as session:  # a request refused as busy looked nothing up: it is no view of the study
        views = [e for e in audit_trail(session, study_id) if e["action"] == "view_heatmap"]
    assert len(views) == admitted


def test_the_gate_counts_a_call_out_when_it_fails_and_admits_again() -> None:
    import anyio

    gate = RenderGate(1, 1)
    gate_open = threading.Event()

    def held() -> str:
        gate_open.wait(10)
        return "done"

    def fails() -> str:
        raise ValueError("boom")

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            results: list[str] = []

            async def call() -> None:
                results.append(await gate.run(held))

            group.start_soon(call)
            group.start_soon(call)
            await anyio.sleep(0.1)
            assert gate.admitted == 2
            with pytest.raises(BusyError):
                await gate.run(held)
            gate_open.set()
        assert results == ["done", "done"] and gate.admitted == 0
        with pytest.raises(ValueError):
            await gate.run(fails)
        assert gate.admitted == 0 and await gate.run(lambda: "again") == "again"

    anyio.run(scenario)
    with pytest.raises(ValueError):
        RenderGate(0, 4)


def test_a_picture_of_another_hospital_answers_as_one_that_does_not_exist(db: Database) -> None:
    from fastapi.testclient import TestClient

    from xraylab.db.scope import ReadScope

    study_id = add_study(db)  # a study of "north"
    images = StoredImages(jpeg())
    app = FastAPI()
    app.include_router(media_router(db, images, HeatmapMaker(db, Path("no-registry"), images)))
    south = TestClient(reading_as(app, ReadScope.of(["south"])))
    north = TestClient(reading_as(app, ReadScope.of(["north"])))
    for route in (image_url, heatmap_url):
        outside, missing = south.get(route(study_id)), south.get(route(study_id + 1000))
        assert outside.status_code == missing.status_code == 404
        assert outside.json() == {"error": "no_such_study",
                                  "detail": f"study {study_id} does not exist (or was deleted)"}
        assert missing.json()["detail"] == f"study {study_id + 1000} does not exist (or was deleted)"
    assert north.get(image_url(study_id)).status_code == 200
    with db.session() as session:
        assert [e["action"] for e in audit_trail(session, study_id=study_id)] == ["view_image"]  # refused: no view
