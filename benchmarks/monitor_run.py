"""Monitor benchmark: how long one drift run takes over 1,000 live images, and the drift scores it gives.

    make bench-monitor                       # on its own stack (.xraylab-bench): SeaweedFS for the images
    python benchmarks/monitor_run.py --images 1000 --kinds clean blur

For each kind (clean, or a drift the uploader injects), ``--images`` generated X-rays are uploaded to a bucket
of the benchmark's own and stored as scored studies (the served model's calibrated scores) in a SQLite
database of its own; then one ``MonitorRunner.drift_run`` covers them all, as the monitor's actor runs it:
reading the images back from S3, the embeddings and readable statistics, image drift with its MMD
permutation test, prediction drift, the performance window, the per-hospital slices, storing the figures.
Prints and writes (default benchmarks/results/monitor.json) the seconds per run and the scores.

Its uploads are not work for the pipeline: the notifier puts their events on the stack's topic like any
upload's, so once they are all there the benchmark moves the ingest consumer group past them (on the
benchmark's own stack, where nothing else consumes), lest the next `make bench` drain 5,000 dead letters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from serving import TopicEnd  # the serving benchmark's count of events on the topic

KINDS = ("clean", "blur", "transpose", "brightness", "noise")


def store_window(settings: Any, db: Any, s3: Any, bucket: str, model: Any, card: Any, kind: str, n: int,
                 seed: int) -> None:
    """Upload ``n`` generated images (``kind`` of drift) and store them as studies scored by ``model``."""
    from ingest.uploader import Drift, upload_generated
    from xraylab.bands import Bands
    from xraylab.calibration import apply_platt
    from xraylab.db.models import Prediction, Study, utcnow
    from xraylab.imaging import inference_transforms

    uploads = upload_generated(s3, bucket, n, seed=seed, prefix=f"{kind}/",
                               drift=None if kind == "clean" else Drift(kind, 1.0))
    transform = inference_transforms(card.preprocess_spec())
    pixels = np.stack([transform(s3.get_object(Bucket=bucket, Key=u.key)["Body"].read()) for u in uploads])
    scores = apply_platt(np.asarray(model.predict(pixels, batch_size=64, verbose=0)).reshape(-1), card.calibration)
    bands = Bands.from_card(card.bands)
    with db.session() as session:
        for upload, score in zip(uploads, scores, strict=True):
            study = Study(study_uid=uuid.uuid4().hex, endpoint_id=settings.S3_ENDPOINT_ID, bucket=bucket,
                          object_key=upload.key, hospital=upload.metadata.hospital, received_at=utcnow())
            session.add(study)
            session.flush()
            session.add(Prediction(study_id=study.id, model_version=card.version, score=float(score),
                                   band=bands.band(float(score))))


def skip_own_events(settings: Any, start: int, expected: int, timeout_s: float = 120.0) -> int:
    """Wait until ``expected`` more events than ``start`` (the topic's end before) are on it, then commit the ingest
    consumer group at the topic's end. Returns how many events were on the topic beyond the start."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from xraylab.kafka_security import client_config

    consumer = KafkaConsumer(**client_config(settings, "ingest"), group_id=settings.KAFKA_GROUP,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.KAFKA_TOPIC, p) for p in consumer.partitions_for_topic(settings.KAFKA_TOPIC)]
        deadline = time.time() + timeout_s
        ends = consumer.end_offsets(parts)
        while sum(ends.values()) - start < expected and time.time() < deadline:
            time.sleep(1)
            ends = consumer.end_offsets(parts)
        consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in ends.items()})
        return sum(ends.values()) - start
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "monitor.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from xraylab.db.session import Database, upgrade_schema
    from xraylab.monitor.reference import REFERENCE_FILE
    from xraylab.monitor.run import MonitorRunner
    from xraylab.registry import list_cards, load_model, open_registry, resolve_version
    from xraylab.settings import load_settings
    from xraylab.storage import make_s3_client

    settings = load_settings(MONITOR_MIN_IMAGES=2, MONITOR_MAX_IMAGES=args.images, MONITOR_SETTLE_S=0)
    registry = open_registry(settings)
    if not list_cards(registry) or not (registry.local_dir(resolve_version(registry))
                                                  / REFERENCE_FILE).exists():
        from train.bootstrap import train_bootstrap_model

        train_bootstrap_model(registry)
    model, card = load_model(registry)
    s3 = make_s3_client(settings.s3_endpoint(None, "admin"))
    topic_end = TopicEnd(settings)
    events_before = topic_end()
    topic_end.close()
    bucket = f"bench-monitor-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'monitor.db'}")
        upgrade_schema(db.engine)
        runner = MonitorRunner(settings, db, card.version, sinks=[])
        t0 = time.perf_counter()
        runner.prepare()
        prepare_s = time.perf_counter() - t0
        try:
            for i, kind in enumerate(args.kinds):
                store_window(settings, db, s3, bucket, model, card, kind, args.images, seed=500 + i)
                summary = runner.drift_run()
                runs.append({"kind": kind, "images": summary.n_images, "seconds": round(summary.seconds, 2),
                             "image_drift": summary.figures.get("image"),
                             "prediction_drift": summary.figures.get("prediction")})
                print(f"{kind:11s} {summary.n_images:5d} images  drift run {summary.seconds:6.2f} s  "
                      f"image drift {summary.figures.get('image'):.3f}  "
                      f"prediction drift {summary.figures.get('prediction'):.3f}")
        finally:
            db.dispose()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            s3.delete_bucket(Bucket=bucket)
            skipped = skip_own_events(settings, events_before, args.images * len(args.kinds))
            print(f"ingest group moved past the benchmark's {skipped} upload events")
    result = {"model_version": card.version, "prepare_seconds": round(prepare_s, 2), "runs": runs,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "permutations": settings.MONITOR_PERMUTATIONS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"model and reference loaded in {prepare_s:.2f} s; written to {args.out}")


if __name__ == "__main__":
    main()
