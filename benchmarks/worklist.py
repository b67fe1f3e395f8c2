"""Worklist benchmark: how long the review app's worklist takes with 100,000 studies.

    make bench-worklist                               # MariaDB of its own stack (.xraylab-bench) and SQLite
    python benchmarks/worklist.py --databases sqlite --studies 2000   # SQLite alone, no stack needed

Fills a database with ``--studies`` studies (generated rows: hospitals, dates, scores, 1 % reviewed, as a
busy network's backlog), then times what the app asks of it, ``--repeat`` times each (median and p95 in ms):
the first page, a deep page, each filter, the live-refresh poll, and the whole handler that builds the
table (``ReviewActions.page``: query, reviewers, formatting). Also prints the query plan of the first page
on MariaDB, to show the index at work. Writes JSON (default benchmarks/results/worklist.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

HOSPITALS = [f"hospital-{i:02d}" for i in range(12)]
CHUNK = 5000


def fill(db: Any, studies: int, seed: int = 0) -> dict[str, Any]:
    """``studies`` new studies with one prediction each, and verdicts on 1 % of them."""
    from sqlalchemy import delete, insert, select, update

    from xraylab.accounts import create_user
    from xraylab.db.crud import band_rank
    from xraylab.db.models import Prediction, Study, User, VerdictRow

    rng = np.random.default_rng(seed)
    run = uuid.uuid4().hex[:8]
    with db.session() as session:  # an earlier run's rows (the bench stack keeps its database): the table holds
        session.execute(delete(Study).where(Study.bucket == "bench"))  # exactly --studies
    t0 = time.perf_counter()
    with db.session() as session:
        doctor = session.scalar(select(User.id).where(User.name == "bench-doctor"))
        if doctor is None:
            doctor = create_user(session, "bench-doctor", uuid.uuid4().hex, "doctor")
    first_id = None
    for start in range(0, studies, CHUNK):
        n = min(CHUNK, studies - start)
        scores = rng.beta(1.2, 2.5, n)
        bands = ["Pneumonia" if s > 0.8 else "Unsure" if s >= 0.6 else "Normal" for s in scores]
        days = rng.integers(0, 365, n)
        rows = [{"study_uid": f"{run}{start + i:024d}", "endpoint_id": "local", "bucket": "bench",
                 "object_key": f"bench/{run}/{start + i}.jpeg", "etag": "e", "size_bytes": 100_000,
                 "content_type": "image/jpeg", "hospital": HOSPITALS[int(rng.integers(len(HOSPITALS)))],
                 "patient_id": f"P{start + i}", "patient_name": f"Bench Patient {start + i}",
                 "study_date": (date(2026, 1, 1) + timedelta(days=int(d))).isoformat(),
                 "received_at": datetime.now(UTC), "band_rank": band_rank(b), "score": float(s)}
                for i, (s, b, d) in enumerate(zip(scores, bands, days, strict=True))]
        with db.session() as session:
            session.execute(insert(Study), rows)
            ids = session.scalars(select(Study.id).where(Study.study_uid.in_([r["study_uid"] for r in rows]))
                                  .order_by(Study.id)).all()
            first_id = first_id or ids[0]
            session.execute(insert(Prediction), [
                {"study_id": sid, "model_version": "bench-v1", "score": float(s), "band": b, "fetch_ms": 1.0,
                 "infer_ms": 1.0, "created_at": datetime.now(UTC)}
                for sid, s, b in zip(ids, scores, bands, strict=True)])
            reviewed = [sid for sid in ids if rng.random() < 0.01]
            if reviewed:
                session.execute(insert(VerdictRow), [{"study_id": sid, "user_id": doctor, "label": "Normal",
                                                      "created_at": datetime.now(UTC)} for sid in reviewed])
                session.execute(update(Study).where(Study.id.in_(reviewed)).values(
                    reviewed=True, verdict_count=Study.verdict_count + 1))
    return {"fill_s": round(time.perf_counter() - t0, 1), "first_id": first_id}


def timed(fn: Any, repeat: int) -> dict[str, float]:
    fn()  # warm (plans, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2)}


def measure(db: Any, settings: Any, repeat: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from ui.review_app import ReviewActions
    from xraylab.accounts import Principal
    from xraylab.db.models import Study, User
    from xraylab.db.review import WorklistFilter, worklist_page, worklist_version
    from xraylab.db.scope import EVERY_HOSPITAL, ReadScope

    with db.session() as session:
        total = session.scalar(select(func.count(Study.id))) or 0
    size = settings.WORKLIST_PAGE_SIZE
    deep = max(1, total // size // 2)

    def page(filters: WorklistFilter | None = None, number: int = 1, scope: ReadScope = EVERY_HOSPITAL) -> Any:
        def run() -> None:
            with db.session() as session:
                worklist_page(session, filters, number, size, scope=scope)
        return run

    def poll() -> None:
        with db.session() as session:
            worklist_version(session)

    actions = ReviewActions(db, settings, images=None)
    with db.session() as session:
        reader_id = session.scalar(select(User.id).where(User.name == "bench-doctor")) or 0
    reader = Principal(reader_id, "bench-doctor", "doctor", "session", EVERY_HOSPITAL)
    cases = {
        "first page": page(),
        f"page {deep} (middle)": page(None, deep),
        "one hospital": page(WorklistFilter(hospital=HOSPITALS[3])),
        "a doctor of two hospitals": page(None, 1, ReadScope.of(HOSPITALS[2:4])),
        "a doctor of two hospitals, middle": page(None, deep // 4 or 1, ReadScope.of(HOSPITALS[2:4])),
        "band Pneumonia": page(WorklistFilter(band="Pneumonia")),
        "unreviewed": page(WorklistFilter(status="unreviewed")),
        "reviewed": page(WorklistFilter(status="reviewed")),
        "study dates, one month": page(WorklistFilter(date_from=date(2026, 6, 1), date_to=date(2026, 6, 30))),
        "hospital + band + month": page(WorklistFilter(hospital=HOSPITALS[3], band="Unsure",
                                                       date_from=date(2026, 6, 1), date_to=date(2026, 6, 30))),
        "live-refresh poll": poll,
        "handler (query + table + audit)": lambda: actions.page(WorklistFilter(), 1, reader),
    }
    return {"studies": total, "page_size": size,
            "timings": {name: timed(fn, repeat) for name, fn in cases.items()}}


def plan(db: Any) -> list[str]:
    """EXPLAIN of the first page's query on MariaDB (which index it reads)."""
    from sqlalchemy import select, text

    from xraylab.db.models import Study

    query = (select(Study.id).where(Study.band_rank.is_not(None))
             .order_by(Study.reviewed, Study.band_rank, Study.score.desc(), Study.id).limit(50))
    compiled = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        return [" | ".join(str(v) for v in row) for row in conn.execute(text("EXPLAIN " + compiled))]


def run(database: str, studies: int, repeat: int) -> dict[str, Any]:
    from xraylab.db.session import Database, upgrade_schema
    from xraylab.settings import load_settings

    settings = load_settings()
    if database == "sqlite":
        folder = tempfile.mkdtemp(prefix="worklist-bench-")
        db = Database(f"sqlite:///{folder}/worklist.db")
    else:
        db = Database(settings.database_url(database))
    upgrade_schema(db.engine)
    filled = fill(db, studies)
    result = {"database": db.engine.dialect.name, **filled, **measure(db, settings, repeat)}
    if db.engine.dialect.name == "mysql":
        result["plan_first_page"] = plan(db)
    db.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,mariadb")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "worklist.json"))
    args = parser.parse_args()
    results = []
    for database in args.databases.split(","):
        print(f"[{database}] filling {args.studies} studies ...", flush=True)
        result = run(database, args.studies, args.repeat)
        results.append(result)
        print(f"[{database}] {result['studies']} studies in the table (filled in {result['fill_s']} s)")
        for name, t in result["timings"].items():
            print(f"  {name:28s} median {t['median_ms']:8.2f} ms   p95 {t['p95_ms']:8.2f} ms")
        for line in result.get("plan_first_page", []):
            print(f"  plan: {line}")
    document = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                "when": datetime.now(UTC).isoformat(timespec="seconds"), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
