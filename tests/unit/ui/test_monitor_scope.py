"""The Monitor tab's figures, alerts and atypical images: only of the hospitals the reader may read."""

from pathlib import Path

from xraylab.db import monitoring as store
from xraylab.db.crud import record_predictions
from xraylab.db.models import MonitorAlert, utcnow
from xraylab.db.scope import EVERY_HOSPITAL, NO_PATIENTS, ReadScope
from xraylab.db.session import Database, upgrade_schema
from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid


def test_a_reader_sees_the_monitor_of_its_hospitals_only(tmp_path: Path) -> None:
    from ui.monitor_tab import MonitorView

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade_schema(db.engine)
    rows = [(StudyRecord(study_uid=study_uid("local", "b", f"k{h}", "e"), endpoint_id="local", bucket="b",
                         object_key=f"k{h}", etag="e", metadata=StudyMetadata(h, f"P{h}", f"Name {h}", "2026-11-02")),
             Verdict(score=0.9, band="Pneumonia", model_version="v1", synthetic_model=True, infer_ms=1.0), None)
            for h in ("north", "south")]
    with db.session() as session:
        north_id, south_id = (w.study_id for w in record_predictions(session, rows))
        store.monitor_row(session, "v1", create_state="ok")
        atypical = {"atypical": [{"study_id": north_id, "atypicality": 3.0, "score": 0.9},
                                 {"study_id": south_id, "atypicality": 2.0, "score": 0.9}]}
        store.save_results(session, "v1", utcnow(), [
            store.ResultRecord("image", hospital, 0.1, 10, "ok", atypical if hospital == store.ALL else {})
            for hospital in (store.ALL, "north", "south")])
        for hospital in ("north", "south", store.ALL):
            session.add(MonitorAlert(model_version="v1", metric="image", hospital=hospital, severity="warning",
                                     value=0.5, limit_value=0.2, message=f"drift at {hospital}", fired_at=utcnow()))
    view = MonitorView(db)
    north = view.snapshot(None, None, ReadScope.of(["north"]))
    assert north["hospitals"] == ["north"] and north["hospital"] == "north"
    assert [a["hospital"] for a in north["alerts"]] == ["north"] and list(north["per_hospital"]) == ["north"]
    asked_all = view.snapshot(None, store.ALL, ReadScope.of(["north"]))  # all hospitals: not theirs to see
    assert asked_all["hospital"] == "north"
    network = view.snapshot(None, store.ALL, EVERY_HOSPITAL)
    assert network["hospitals"] == [store.ALL, "north", "south"] and len(network["alerts"]) == 3
    assert [a["study_id"] for a in network["latest"]["image"]["detail"]["atypical"]] == [north_id, south_id]
    nobody = view.snapshot(None, None, NO_PATIENTS)
    assert nobody["hospitals"] == [] and nobody["alerts"] == [] and nobody["latest"] == {}
    db.dispose()
