"""The monitor's reads and writes on a real (SQLite) database: its window of predictions joined with the
doctors' newest verdicts, its cursor, its alerts and its thresholds."""

from __future__ import annotations

from xraylab.accounts import create_user
from xraylab.db import monitoring as store
from xraylab.db.models import Prediction, Study, utcnow
from xraylab.db.review import record_verdict
from xraylab.db.scope import EVERY_HOSPITAL
from xraylab.monitor.alerts import AlertEvent
from xraylab.monitor.thresholds import Thresholds, default_thresholds


def _studies(db, n: int, version: str = "m1") -> list[int]:
    ids = []
    with db.session() as session:
        for i in range(n):
            study = Study(study_uid=f"uid{version}{i:04d}", endpoint_id="local", bucket="b", object_key=f"k{i}.jpeg",
                          hospital=("north", "south")[i % 2], received_at=utcnow())
            session.add(study)
            session.flush()
            session.add(Prediction(study_id=study.id, model_version=version, score=i / n, band="Normal"))
            ids.append(study.id)
    return ids


def test_window_takes_the_newest_verdict_of_each_study(db) -> None:
    ids = _studies(db, 6)
    with db.session() as session:
        doctor = create_user(session, "dr-a", "correct horse battery 1")
        record_verdict(session, ids[0], doctor, "Normal", scope=EVERY_HOSPITAL)
        record_verdict(session, ids[0], doctor, "Pneumonia", scope=EVERY_HOSPITAL)  # changed mind: newest counts
        record_verdict(session, ids[1], doctor, "Not diagnostic", scope=EVERY_HOSPITAL)  # no label
        record_verdict(session, ids[2], doctor, "Normal", scope=EVERY_HOSPITAL)
    with db.session() as session:
        window = store.performance_window(session, "m1", 5)  # the newest 5: ids[1..5]
        other = store.performance_window(session, "m2", 5)
    assert len(window.scores) == 5 and window.n_labelled == 1
    assert window.labels == [None, None, None, 0, None]  # newest first: ids[5], [4], [3], [2], [1]
    assert window.hospitals[0] == "south" and other.scores == []


def test_new_predictions_follow_the_cursor(db) -> None:
    _studies(db, 10)
    with db.session() as session:
        first = store.new_predictions(session, "m1", 0, 4)
        after = store.new_predictions(session, "m1", first[-1].prediction_id, 100)
    assert [p.prediction_id for p in first] == sorted(p.prediction_id for p in first)  # oldest first
    assert len(first) == 4 and first[-1].prediction_id == 10  # the newest four
    assert after == []


def test_alerts_open_and_close_and_thresholds_persist(db) -> None:
    fired = AlertEvent("fired", "m1", "image", "all", "critical", 0.9, 0.55)
    with db.session() as session:
        store.set_state(session, "m1", "active")
        store.record_alerts(session, [fired])
    with db.session() as session:
        [row] = store.list_monitors(session)
        assert row["state"] == "active" and row["open_alerts"] == 1
        store.record_alerts(session, [AlertEvent("resolved", "m1", "image", "all", "critical", 0.1, 0.55)])
    with db.session() as session:
        [alert] = store.alerts(session, "m1")
        assert alert["resolved_at"] is not None and alert["severity"] == "critical"
        assert store.get_thresholds(session) == default_thresholds()
        custom = Thresholds.parse({"image": {"type": "drift", "soft": 0.1, "hard": 0.2}})
        store.set_thresholds(session, custom)
    with db.session() as session:
        assert store.get_thresholds(session) == custom


def test_old_figures_are_pruned(db) -> None:
    from datetime import timedelta

    now = utcnow()
    old = [store.ResultRecord("image", "all", 0.1, 5, "ok", {})] * 3
    with db.session() as session:
        store.save_results(session, "m1", now - timedelta(days=100), old)
        store.save_results(session, "m1", now, [store.ResultRecord("image", "all", 0.2, 5, "ok", {})])
        store.save_results(session, "m2", now - timedelta(days=100), [store.ResultRecord("image", "all", 0.3, 5,
                                                                                          "ok", {})])
    with db.session() as session:
        assert store.prune_results(session, "m1", now - timedelta(days=90), batch=2) == 2
        assert store.prune_results(session, "m1", now - timedelta(days=90)) == 1
        assert [p["value"] for p in store.series(session, "m1", ["image"])] == [0.2]
        assert [p["value"] for p in store.series(session, "m2", ["image"])] == [0.3]  # another version's stay
