"""Delivery benchmark: how fast the deliverer empties the outbox to a RIS and to a PACS.

    make bench-delivery                          # on a stack of its own (.xraylab-bench): Orthanc, SQLite outbox
    python benchmarks/deliveries.py --ris 2000 --pacs 20

- RIS: ``--ris`` results queued at once for one MLLP listener (the demo RIS, ``delivery/demo_ris.py``, on a port of
  its own): ORU^R01 messages per second, build + send + ACK, one destination's thread.
- PACS: ``--pacs`` generated DX studies C-STOREd to the stack's Orthanc, queued, delivered (fetch, Grad-CAM with the
  shipped model, SR and Secondary Capture built and stored); seconds per study with the maps computed, then again
  with them cached (a resend, as after a lost acknowledgement).

Writes JSON (default benchmarks/results/delivery.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _queue(db: Any, settings: Any, config: Any, rows: list[Any]) -> None:
    from xraylab.db.crud import record_predictions
    from xraylab.db.outbox import enqueue_results

    with db.session() as session:
        results = record_predictions(session, rows)
        enqueue_results(session, config, rows, results, pacs_endpoint_id=settings.ORTHANC_ENDPOINT_ID)


def _drain(deliverer: Any, destination: str) -> float:
    started = time.perf_counter()
    while True:
        settled = deliverer.deliver_due(destination)
        if not settled:
            return time.perf_counter() - started


def bench_ris(settings: Any, db: Any, registry: Any, count: int, version: str) -> dict[str, Any]:
    from delivery.demo_ris import serve_ris
    from delivery.worker import Deliverer
    from xraylab.delivery_config import DeliveryConfig
    from xraylab.messages import StudyMetadata, StudyRecord, Verdict, study_uid

    port, stop = _free_port(), threading.Event()
    log = Path(tempfile.mkdtemp()) / "ris.jsonl"
    threading.Thread(target=serve_ris, args=("127.0.0.1", port, log), kwargs={"stop_event": stop},
                     daemon=True).start()
    time.sleep(0.5)
    config = DeliveryConfig.from_dict({"ris": {"bench": {"host": "127.0.0.1", "port": port}},
                                       "default": {"ris": "bench"}})
    rows = [(StudyRecord(study_uid=study_uid("bench", "b", f"r{i}", "e"), endpoint_id="bench", bucket="b",
                         object_key=f"r{i}", etag="e",
                         metadata=StudyMetadata(hospital="bench", patient_id=f"P{i}", accession_number=f"A{i}")),
             Verdict(score=0.9, band="Pneumonia", model_version=version, synthetic_model=False), 1.0)
            for i in range(count)]
    _queue(db, settings, config, rows)
    deliverer = Deliverer(settings, db, config, registry=registry, batch=200)
    seconds = _drain(deliverer, "ris/bench")
    stop.set()
    received = sum(1 for line in log.read_text().splitlines() if line.strip())
    return {"messages": count, "received": received, "seconds": round(seconds, 2),
            "messages_per_s": round(count / seconds, 1)}


def bench_pacs(settings: Any, db: Any, registry: Any, count: int, version: str) -> dict[str, Any]:
    from sqlalchemy import update

    from delivery.worker import Deliverer
    from ingest.pacs_sender import PacsTarget
    from ingest.uploader import DicomOptions, send_generated_to_pacs
    from xraylab.db.models import Delivery
    from xraylab.delivery_config import DeliveryConfig
    from xraylab.messages import ObjectToProcess, StudyRecord, Verdict
    from xraylab.orthanc import PACS_BUCKET
    from xraylab.sources import Sources

    sent = send_generated_to_pacs(PacsTarget.from_settings(settings), count, seed=int(time.time()) % 100000,
                                  dicom=DicomOptions("explicit", bits=16))
    sources = Sources(settings)
    rows = []
    for upload in sent:
        fetched = sources.fetch(settings.ORTHANC_ENDPOINT_ID, PACS_BUCKET, upload.key)
        rows.append((StudyRecord.of(ObjectToProcess(bucket=PACS_BUCKET, key=upload.key), fetched),
                     Verdict(score=0.7, band="Unsure", model_version=version, synthetic_model=False), 1.0))
    config = DeliveryConfig.from_dict({
        "pacs": {"local": {"ae_title": settings.ORTHANC_AET, "host": "127.0.0.1", "port": settings.ORTHANC_DICOM_PORT}},
        "default": {"pacs": "local"}}, calling_ae_title=settings.DELIVERY_AET)
    _queue(db, settings, config, rows)
    deliverer = Deliverer(settings, db, config, registry=registry, batch=200)
    deliverer.heatmaps.model(version)  # the model loaded once, as a running deliverer has it
    cold = _drain(deliverer, "pacs/local")
    with db.session() as session:
        session.execute(update(Delivery).where(Delivery.destination == "pacs/local").values(status="queued"))
    cached = _drain(deliverer, "pacs/local")
    return {"studies": count, "pixels": "generated DX, 16-bit",
            "seconds_per_study_maps_computed": round(cold / count, 3),
            "seconds_per_study_maps_cached": round(cached / count, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ris", type=int, default=2000, help="ORU^R01 messages to one RIS")
    parser.add_argument("--pacs", type=int, default=20, help="studies delivered to the PACS (0: none)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "delivery.json")
    args = parser.parse_args()

    from xraylab.db.session import Database, upgrade_schema
    from xraylab.registry import ShippedRegistry, resolve_version
    from xraylab.settings import load_settings, project_root

    settings = load_settings()
    registry = ShippedRegistry(project_root() / "models")
    version = resolve_version(registry)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/outbox.db")
        upgrade_schema(db.engine)
        figures: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "model": version,
                                   "outbox": "SQLite"}
        figures["ris"] = bench_ris(settings, db, registry, args.ris, version)
        print(f"RIS: {figures['ris']}")  # noqa: T201
        if args.pacs:
            figures["pacs"] = bench_pacs(settings, db, registry, args.pacs, version)
            print(f"PACS: {figures['pacs']}")  # noqa: T201
        db.dispose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
