"""Serving benchmark: how close the whole path gets to what this machine can do.

    make bench                                    # sets up its own stack (.xraylab-bench), runs all parts
    python benchmarks/serving.py --parts a,b      # parts alone (c and d need the stack: scripts/bench.sh)

Parts, all on one machine and one model (random weights: speed only), on generated 512 x 512 JPEGs of about 80 KB
(the small corpus) and, for (a) and (d), on two real-size corpora (``--real``): the 120 films of
``../shared/data/chest-xray/full-resolution`` (up to 2,890 x 2,534) as their own JPEGs, and as the uncompressed
16-bit DICOM a modality sends (up to 14.6 MB); where that folder is absent, generated 2,500 x 2,048 images
(and the results say so). Real-size figures are in images/s and MB/s.
  (a) limit    decode + preprocess + batched predict in one process, decoding in a pool of all cores,
               at the best batch size, for seed-cnn (served) and xray-resnet
  (b) seed     one image per request with the model loaded once; and the seed's service, which loaded
               the model for every event
  (c) serve    the Classifier through a DeploymentHandle and POST /v1/predict through HTTP, at 1, 8, 32,
               128 and 512 concurrent requests: images/s, p50/p95/p99, mean batch formed, rejected
  (d) path     uploads -> SeaweedFS -> notifier -> Kafka -> ingest -> Serve -> SQLite and MariaDB:
               drain (uploads wait on the topic, then ingest runs and is timed) and live (uploading at
               half the drain rate while consuming: upload-to-row latency)
Prints a table and writes JSON (default benchmarks/results/serving.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cpu_by_process import cpu_seconds_by_group, cpu_snapshot
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ARCH = "seed-cnn"
LEVELS = (1, 8, 32, 128, 512)
IMAGE_SIZE = 512


def cpu_ms_per_image(before: dict[int, tuple[str, float]], images: int) -> dict[str, float]:
    """CPU milliseconds per image that each process group spent since ``before`` (see cpu_by_process)."""
    spent = cpu_seconds_by_group(before, cpu_snapshot())
    return {group: round(seconds * 1000 / max(images, 1), 2) for group, seconds in spent.items()}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1)}


FULL_RESOLUTION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chest-xray" / "full-resolution"
REAL_CORPORA = {"jpeg": "image/jpeg", "dicom": "application/dicom"}  # name -> the uploads' content type


def real_size_corpus(kind: str, limit: int) -> tuple[list[bytes], str]:
    """The real-size corpus ``kind`` (``REAL_CORPORA``): up to ``limit`` films, and where they come from."""
    from ingest.uploader import full_size_dicom

    films = sorted(FULL_RESOLUTION.glob("*/*.jpeg"))[:limit]
    if films:
        source = f"{len(films)} real films, {FULL_RESOLUTION.name}/ (Kermany et al., CC BY 4.0)"
        if kind == "jpeg":
            return [film.read_bytes() for film in films], source
        return [full_size_dicom(film, "explicit", seed=i)[0] for i, film in enumerate(films)], \
            source + " as uncompressed 16-bit DICOM"
    from ingest.dicom_files import dicom_bytes
    from ingest.uploader import generated_studies, modality_study
    from xraylab.synthetic import encode_jpeg

    studies = list(generated_studies(min(limit, 24), seed=7))
    pictures = [np.asarray(Image.fromarray(s.pixels).resize((2048, 2500))) for s in studies]
    source = f"{len(pictures)} generated 2,048 x 2,500 images ({FULL_RESOLUTION} is absent)"
    if kind == "jpeg":
        return [encode_jpeg(p, quality=95) for p in pictures], source
    return [dicom_bytes(p, modality_study(s.metadata), bits=16) for p, s in zip(pictures, studies, strict=True)], \
        source + " as uncompressed 16-bit DICOM"


def make_images(n: int, seed: int = 0) -> list[bytes]:
    from xraylab.synthetic import encode_jpeg, generate_xray

    rng = np.random.default_rng(seed)
    return [encode_jpeg(generate_xray(rng, bool(i % 2), size=IMAGE_SIZE)) for i in range(n)]


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "gpu": gpu_name()}


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, or None where there is none."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip().splitlines()
        return out[0].strip() if out else None
    return None


def backend() -> dict[str, Any]:
    import keras

    return {"keras_backend": keras.backend.backend(), "keras": keras.__version__}


# --- (a) the limit -------------------------------------------------------------------------------------

def run_limit(arch: str, images: list[bytes], batch_sizes: tuple[int, ...], repeat: int,
              precision: str = "float32") -> dict[str, Any]:
    """Decode in a pool (all cores) one chunk ahead of the batched forward pass on the previous one.
    ``precision`` is a Keras dtype policy (``mixed_bfloat16`` on a GPU: bf16 compute, float32 weights)."""
    import keras

    from train.models import build_model
    from xraylab.imaging import PreprocessSpec, inference_transforms

    spec = PreprocessSpec()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(arch, spec)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    transform = inference_transforms(spec)
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    model.predict_on_batch(np.zeros((max(batch_sizes), spec.height, spec.width, 1), np.float32))  # trace
    by_batch = {}
    for batch in batch_sizes:
        for size in {batch, len(images) % batch or batch}:
            model.predict_on_batch(np.zeros((size, spec.height, spec.width, 1), np.float32))
        work = images * repeat
        chunks = [work[i:i + batch] for i in range(0, len(work), batch)]
        t0 = time.perf_counter()
        pending = pool.map(transform, chunks[0])
        for k in range(len(chunks)):
            arrays = np.stack(list(pending))
            if k + 1 < len(chunks):
                pending = pool.map(transform, chunks[k + 1])
            model.predict_on_batch(arrays)
        by_batch[batch] = round(len(work) / (time.perf_counter() - t0), 1)
    best = max(by_batch, key=by_batch.__getitem__)
    t0 = time.perf_counter()
    for data in images[:100]:
        transform(data)
    decode_ms = (time.perf_counter() - t0) / min(100, len(images)) * 1000
    mean_bytes = sum(map(len, images)) / len(images)
    return {"arch": arch, "precision": precision, "images_per_s": by_batch[best], "best_batch": best,
            "by_batch": by_batch, "mb_per_s": round(by_batch[best] * mean_bytes / 1e6, 1),
            "mean_image_mb": round(mean_bytes / 1e6, 2), "decode_preprocess_ms_per_image": round(decode_ms, 2)}


# --- (b) the seed's design -----------------------------------------------------------------------------

def run_seed(model_dir: Path, version: str, images: list[bytes], reload_events: int) -> dict[str, Any]:
    from xraylab.registry import load_model

    model, card = load_model(model_dir, version)
    from xraylab.imaging import inference_transforms

    transform = inference_transforms(card.preprocess_spec())
    model.predict_on_batch(transform(images[0])[np.newaxis])
    t0 = time.perf_counter()
    for data in images:
        model.predict_on_batch(transform(data)[np.newaxis])
    once = len(images) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for data in images[:reload_events]:
        fresh, card = load_model(model_dir, version)
        fresh.predict_on_batch(inference_transforms(card.preprocess_spec())(data)[np.newaxis])
    reload = reload_events / (time.perf_counter() - t0)
    return {"loaded_once_images_per_s": round(once, 1), "reload_per_event_images_per_s": round(reload, 2)}


# --- (c) Serve -----------------------------------------------------------------------------------------

async def _drive(call, images: list[bytes], concurrency: int, total: int,
                 max_s: float | None = None) -> dict[str, Any]:
    """``total`` calls from ``concurrency`` workers, or fewer where ``max_s`` seconds pass first."""
    latencies: list[float] = []
    rejected = 0
    counter = iter(range(total))
    stop_at = time.perf_counter() + max_s if max_s else float("inf")

    async def worker() -> None:
        nonlocal rejected
        for i in counter:
            if time.perf_counter() > stop_at:
                break
            t0 = time.perf_counter()
            ok = await call(images[i % len(images)])
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                rejected += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": len(latencies) + rejected,
            "images_per_s": round(len(latencies) / elapsed, 1), **percentiles(latencies), "rejected": rejected}


def bench_api_key(settings: Any) -> str:
    """An API key for the HTTP levels, as a PACS gateway has one: a ``bench`` account (made once) in the
    database the app reads, and a new key of it."""
    import secrets

    from xraylab.accounts import create_api_key, create_user
    from xraylab.db.models import User
    from xraylab.db.session import Database

    db = Database(settings.DATABASE_URL)
    with db.session() as session:
        if session.query(User.id).filter(User.name == "bench").first() is None:
            create_user(session, "bench", secrets.token_urlsafe(24), "doctor")
        key = create_api_key(session, "bench", "benchmarks/serving.py")
    db.dispose()
    return key


def run_serve(url: str, app_name: str, images: list[bytes], levels: tuple[int, ...], per_level_s: float,
              rate_hint: float, api_key: str) -> dict[str, list[dict[str, Any]]]:
    """Part (c) against the running app; shuts Serve down when done (see ``all_levels``)."""
    import aiohttp
    from ray import serve
    from ray.serve.exceptions import BackPressureError

    classifier = serve.get_deployment_handle("Classifier", app_name)
    auth = {"Authorization": f"Bearer {api_key}"}

    async def batch_stats() -> dict[str, int]:
        return await classifier.batch_stats.remote()

    async def via_handle(data: bytes) -> bool:
        try:
            await classifier.classify.remote(data)
            return True
        except BackPressureError:  # shed: a polite caller (as the ingest actor does) backs off before retrying
            await asyncio.sleep(1.0)
            return False

    async def http_batch(level: int, per_request: int = 32) -> dict[str, Any]:
        """POST /v1/predict/batch with ``per_request`` images each, ``level`` requests at a time."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300), headers=auth) as http:
            async def send(_: bytes) -> bool:
                form = aiohttp.FormData()
                for k in range(per_request):
                    form.add_field("files", images[k % len(images)], filename=f"{k}.jpeg", content_type="image/jpeg")
                async with http.post(f"{url}/v1/predict/batch", data=form) as response:
                    await response.read()
                    return response.status == 200

            before = await batch_stats()
            total = max(level * 2, int(rate_hint * per_level_s / per_request))
            row = await _drive(send, images, level, total, max_s=per_level_s * 2)
            after = await batch_stats()
        batches = after["batches"] - before["batches"]
        row.update(images_per_request=per_request, images_per_s=round(row["images_per_s"] * per_request, 1),
                   mean_batch=round((after["images"] - before["images"]) / batches, 1) if batches else 0.0)
        return row

    async def http_levels() -> list[dict[str, Any]]:
        out = []
        for level in levels:
            connector = aiohttp.TCPConnector(limit=level)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120),
                                             headers=auth) as http:
                async def via_http(data: bytes, http: aiohttp.ClientSession = http) -> bool:
                    async with http.post(f"{url}/v1/predict", data=data) as response:
                        await response.read()
                        if response.status == 503:  # shed: a polite client waits as told before its next request
                            await asyncio.sleep(min(2.0, float(response.headers.get("Retry-After", "1"))))
                        return response.status == 200

                out.append(await measure(via_http, level))
        return out

    async def measure(call, level: int) -> dict[str, Any]:
        await _drive(call, images, min(level, 8), min(level, 8) * 2)  # warm the path
        before = await batch_stats()
        cpu_before = cpu_snapshot()
        total = max(level * 2, int(rate_hint * per_level_s))
        row = await _drive(call, images, level, total, max_s=per_level_s * 2)
        after = await batch_stats()
        batches = after["batches"] - before["batches"]
        row["mean_batch"] = round((after["images"] - before["images"]) / batches, 1) if batches else 0.0
        if level == 128:  # where the time goes at the level the targets name
            row["cpu_ms_per_image"] = cpu_ms_per_image(cpu_before, row["requests"] - row["rejected"])
        return row

    async def handle_levels() -> list[dict[str, Any]]:
        return [await measure(via_handle, level) for level in levels]

    async def all_levels() -> dict[str, list[dict[str, Any]]]:
        # One event loop for all, and Serve shut down inside it: under Serve's throughput mode this process's
        # handle routes on this loop, and its router cannot be shut down once the loop has closed.
        try:
            return {"handle": await handle_levels(), "http": await http_levels(),
                    "http_batch": [await http_batch(level) for level in (1, 4)]}
        finally:
            await serve.shutdown_async()

    return asyncio.run(all_levels())


# --- (d) the whole path --------------------------------------------------------------------------------

class TopicEnd:
    """Sum of the topic's end offsets: how many events the notifier has produced."""

    def __init__(self, settings: Any) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from xraylab.kafka_security import client_config

        self.consumer = KafkaConsumer(**client_config(settings, "admin"), group_id=None,
                                      enable_auto_commit=False)
        topic = settings.KAFKA_TOPIC
        self.parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]

    def __call__(self) -> int:
        return sum(self.consumer.end_offsets(self.parts).values())

    def close(self) -> None:
        self.consumer.close()


def _upload(client: Any, bucket: str, keys: list[str], images: list[bytes], *, rate: float | None,
            threads: int = 8, content_type: str = "image/jpeg") -> dict[str, float]:
    """Put each key (image bytes round-robin) with study metadata; returns key -> time.time() when stored."""
    from ingest.uploader import upload_study
    from xraylab.messages import StudyMetadata

    done: dict[str, float] = {}
    start = time.time()

    def put(i: int) -> None:
        if rate:
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        meta = StudyMetadata(hospital="bench", patient_id=f"B{i:06d}", patient_name="Bench Patient",
                             study_date="2026-11-25")
        upload_study(client, bucket, keys[i], images[i % len(images)], meta, content_type=content_type)
        done[keys[i]] = time.time()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(len(keys))))
    return done


class RowWatcher:
    """Polls the studies table every 50 ms for rows newer than the last seen, and notes when each key's row
    first appears (the database's own timestamps are not precise enough everywhere: MariaDB's DATETIME keeps
    whole seconds). Reading only recent rows keeps the watcher's own load flat as the table grows."""

    MARGIN = 1024  # ids: more than the writes that can be in flight at once

    def __init__(self, db: Any, prefix: str) -> None:
        self.db, self.prefix, self.seen, self.stop = db, prefix, {}, threading.Event()
        self.last_id = self._max_id()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _max_id(self) -> int:
        from sqlalchemy import func, select

        from xraylab.db.models import Study

        with self.db.session() as session:
            return session.scalar(select(func.max(Study.id))) or 0

    def _run(self) -> None:
        from sqlalchemy import select

        from xraylab.db.models import Study

        while not self.stop.wait(0.05):
            with self.db.session() as session:
                # a margin below the last id seen: concurrent writers may commit a lower id after a higher one
                rows = session.execute(select(Study.id, Study.object_key)
                                       .where(Study.id > self.last_id - self.MARGIN)).all()
            now = time.time()
            for row_id, key in rows:
                self.last_id = max(self.last_id, row_id)
                if key.startswith(self.prefix):
                    self.seen.setdefault(key, now)

    def wait(self, n: int, timeout_s: float) -> dict[str, float]:
        deadline = time.time() + timeout_s
        while len(self.seen) < n and time.time() < deadline:
            time.sleep(0.1)
        self.stop.set()
        self.thread.join()
        if len(self.seen) < n:
            raise TimeoutError(f"only {len(self.seen)}/{n} rows for {self.prefix} after {timeout_s:.0f}s")
        return dict(self.seen)


def run_path(settings: Any, database: str, images: list[bytes], n: int, live_n: int,
             args_factory: Any, content_type: str = "image/jpeg") -> dict[str, Any]:
    from serve_app.launch import start_pipeline
    from xraylab.db.session import Database, upgrade_schema
    from xraylab.storage import make_s3_client

    db = Database(settings.database_url(database))
    upgrade_schema(db.engine)
    client = make_s3_client(settings.s3_endpoint(None, "upload"))
    pipeline = start_pipeline(settings, args_factory(database), ingest=False)
    try:
        # Drain: the uploads wait on the topic while ingest is paused.
        prefix = f"bench-{database}-{uuid.uuid4().hex[:6]}/"
        topic_end = TopicEnd(settings)
        before = topic_end()
        suffix = ".dcm" if content_type == "application/dicom" else ".jpeg"
        keys = [f"{prefix}drain/{i:05d}{suffix}" for i in range(n)]
        t_upload = time.time()
        _upload(client, settings.S3_BUCKET, keys, images, rate=None, content_type=content_type)
        upload_s = time.time() - t_upload
        deadline = time.time() + 300
        while topic_end() - before < n and time.time() < deadline:
            time.sleep(0.2)
        notified_s = time.time() - t_upload
        on_topic = topic_end() - before
        topic_end.close()
        if on_topic < n:
            raise RuntimeError(f"only {on_topic}/{n} upload events reached the topic: the notifier lost some")
        watcher = RowWatcher(db, prefix + "drain/")
        cpu_before = cpu_snapshot()
        t0 = time.time()
        pipeline.start_ingest()
        print(f"[{database}] drain of {n} events started", flush=True)
        while not watcher.seen and time.time() < t0 + 300:  # the ingest actors start and join the group
            time.sleep(0.01)
        t_first, rows_first, cpu_first = time.time(), len(watcher.seen), cpu_snapshot()
        end = max(watcher.wait(n, timeout_s=600).values())
        print(f"[{database}] drain done in {end - t0:.1f}s ({end - t_first:.1f}s from the first row)", flush=True)
        drain_rate = n / (end - t0)
        drain_cpu = cpu_ms_per_image(cpu_before, n)
        # Steady: from the first row on, without the ingest actors' start (a few seconds, and their imports'
        # CPU), which a short real-size drain would otherwise mostly measure.
        steady_rate = (n - rows_first) / max(end - t_first, 1e-6)
        steady_cpu = cpu_ms_per_image(cpu_first, n - rows_first)
        # Live: upload at half the drain rate while ingest consumes; latency from stored upload to row. (Half the
        # steady rate is too much on 2 cores at real size: there the uploads' own CPU, the driver's and
        # SeaweedFS's writes, competes with the pipeline, which a drain does not pay.)
        rate = max(1.0, drain_rate / 2)
        live_keys = [f"{prefix}live/{i:05d}{suffix}" for i in range(live_n)]
        watcher = RowWatcher(db, prefix + "live/")
        uploaded = _upload(client, settings.S3_BUCKET, live_keys, images, rate=rate, threads=16,
                           content_type=content_type)
        seen = watcher.wait(live_n, timeout_s=600)
        latencies = [seen[k] - uploaded[k] for k in live_keys]
        stats = pipeline.ingest_stats()
        drained_mb = sum(len(images[i % len(images)]) for i in range(n)) / 1e6
        return {"database": db.engine.dialect.name, "uploads": n, "upload_s": round(upload_s, 1),
                "all_on_topic_s": round(notified_s, 1), "drain_images_per_s": round(drain_rate, 1),
                "drain_mb_per_s": round(drained_mb / (end - t0), 1),
                "steady_images_per_s": round(steady_rate, 1),
                "steady_mb_per_s": round(drained_mb * (n - rows_first) / n / max(end - t_first, 1e-6), 1),
                "steady_cpu_ms_per_image": steady_cpu,
                "drain_cpu_ms_per_image": drain_cpu,
                "live": {"uploads": live_n, "upload_rate_per_s": round(rate, 1), **percentiles(latencies)},
                "ingest": {k: v for k, v in stats.items() if k != "uptime_s"}}
    finally:
        pipeline.stop()
        db.dispose()


# --- the run -------------------------------------------------------------------------------------------

def publish_random_model(model_dir: Path, arch: str) -> str:
    from train.models import build_model
    from xraylab.bands import DEFAULT_BANDS
    from xraylab.imaging import PreprocessSpec
    from xraylab.registry import ModelCard, publish

    version = f"bench-{arch}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    spec = PreprocessSpec()
    card = ModelCard(version=version, architecture=arch, preprocess=spec.to_dict(), bands=DEFAULT_BANDS.to_dict(),
                     trained_on="synthetic", notes="random weights: for the serving benchmark's speed figures only")
    publish(build_model(arch, spec), model_dir, card, promote_it=True)
    return version


def table(result: dict[str, Any]) -> str:
    gpu = result["machine"].get("gpu")
    lines = [f"xraylab serving benchmark, {result['machine']['cores']} cores ({result['machine']['cpu']})"
             + (f", {gpu}" if gpu else "") + f", Keras on {result.get('keras_backend', '?')}, "
             f"model {result['model']} (random weights), {IMAGE_SIZE}x{IMAGE_SIZE} JPEGs", ""]
    for arch, row in result.get("limit", {}).items():
        lines.append(f"(a) limit {arch:27s} {row['images_per_s']:8.1f} img/s  (batch {row['best_batch']}, "
                     f"decode+preprocess {row['decode_preprocess_ms_per_image']} ms/img)")
    if "seed" in result:
        s = result["seed"]
        lines.append(f"(b) one per request, loaded once {s['loaded_once_images_per_s']:8.1f} img/s; "
                     f"reload per event {s['reload_per_event_images_per_s']:6.2f} img/s")
    for via, rows in result.get("serve", {}).items():
        label = "http batch of 32 images/request" if via == "http_batch" else via
        lines.append(f"(c) {label}: conc  img/s    p50 ms   p95 ms   p99 ms  batch  rejected")
        for r in rows:
            lines.append(f"           {r['concurrency']:4d} {r['images_per_s']:7.1f} {r['p50_ms']:8.1f} "
                         f"{r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['mean_batch']:6.1f} {r['rejected']:6d}")
    for row in result.get("path", []):
        live = row["live"]
        lines.append(f"(d) {row['database']:7s} drain {row['drain_images_per_s']:7.1f} img/s ({row['uploads']} "
                     f"uploads; steady {row.get('steady_images_per_s', '-')}); live at {live['upload_rate_per_s']}/s: "
                     f"p50 {live['p50_ms']} ms, p95 {live['p95_ms']} ms, p99 {live['p99_ms']} ms")
    if result.get("ratios"):
        lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items()))
    for kind, corpus in result.get("real_size", {}).items():
        lines += ["", f"real size, {kind}: {corpus['source']}, mean {corpus['mean_image_mb']} MB"]
        if "limit" in corpus:
            a = corpus["limit"]
            lines.append(f"(a) limit {ARCH:27s} {a['images_per_s']:8.1f} img/s {a['mb_per_s']:7.1f} MB/s  (batch "
                         f"{a['best_batch']}, decode+preprocess {a['decode_preprocess_ms_per_image']} ms/img)")
        for row in corpus.get("path", []):
            live, ingest = row["live"], row["ingest"]
            lines.append(f"(d) {row['database']:7s} drain {row['drain_images_per_s']:6.1f} img/s, steady "
                         f"{row['steady_images_per_s']:6.1f} img/s {row['steady_mb_per_s']:6.1f} MB/s "
                         f"({row['uploads']} uploads); live at "
                         f"{live['upload_rate_per_s']}/s: p50 {live['p50_ms']} ms, p99 {live['p99_ms']} ms; "
                         f"retries {ingest.get('retries', 0)}, dead letters {ingest.get('dead_lettered', 0)}")
        if corpus.get("ratios"):
            lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in corpus["ratios"].items()))
    return "\n".join(lines)


def ratios(result: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    limit = result.get("limit", {}).get(ARCH, {}).get("images_per_s")
    http = {r["concurrency"]: r for r in result.get("serve", {}).get("http", [])}
    if limit and 128 in http:
        out["c_http128_over_a"] = round(http[128]["images_per_s"] / limit, 3)
    for row in result.get("path", []):
        if limit:
            out[f"d_{row['database']}_over_a"] = round(row["drain_images_per_s"] / limit, 3)
            out[f"d_{row['database']}_steady_over_a"] = round(row["steady_images_per_s"] / limit, 3)
        if "seed" in result:
            out[f"d_{row['database']}_over_b_reload"] = round(
                row["drain_images_per_s"] / result["seed"]["reload_per_event_images_per_s"], 1)
            out[f"d_{row['database']}_over_b_once"] = round(
                row["drain_images_per_s"] / result["seed"]["loaded_once_images_per_s"], 2)
    return out


def real_ratios(corpus: dict[str, Any]) -> dict[str, float]:
    limit = corpus.get("limit", {}).get("images_per_s")
    out: dict[str, float] = {}
    for row in corpus.get("path", []) if limit else []:
        out[f"d_{row['database']}_over_a"] = round(row["drain_images_per_s"] / limit, 3)
        out[f"d_{row['database']}_steady_over_a"] = round(row["steady_images_per_s"] / limit, 3)
    return out


def save(result: dict[str, Any], out: Path) -> None:
    """Write the result; a GPU machine's figures go under its name, beside the CPU machine's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(out.read_text()) if out.exists() else {}
    document = {**result, "gpus": earlier["gpus"]} if "gpus" in earlier else result
    if gpu := result["machine"]["gpu"]:
        document = earlier
        document.setdefault("gpus", {})[gpu] = result
    out.write_text(json.dumps(document, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--uploads", type=int, default=2000, help="(d) uploads per database for the drain")
    parser.add_argument("--live", type=int, default=1000, help="(d) uploads per database for the live run")
    parser.add_argument("--databases", default="default,mariadb")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--per-level-s", type=float, default=6.0, help="(c) about this long per level")
    parser.add_argument("--images", type=int, default=200, help="distinct generated JPEGs (reused round-robin)")
    parser.add_argument("--batch-sizes", default="8,16,32,64,128", help="(a) batch sizes to try")
    parser.add_argument("--repeat", type=int, default=3, help="(a) passes over the images per batch size")
    parser.add_argument("--precisions", default="float32",
                        help="(a) Keras dtype policies to try, e.g. float32,mixed_bfloat16 on a GPU")
    parser.add_argument("--classifier-gpus", type=float, default=0.0,
                        help="(c, d) GPUs per Classifier replica: 0.5 puts two replicas on one GPU")
    parser.add_argument("--classifier-replicas", type=int, default=1)
    parser.add_argument("--real", default=",".join(REAL_CORPORA),
                        help="(a, d) real-size corpora to run beside the small one: jpeg, dicom; '' for none")
    parser.add_argument("--real-images", type=int, default=120, help="films in each real-size corpus")
    parser.add_argument("--real-uploads", type=int, default=600, help="(d) real-size uploads per database (drain)")
    parser.add_argument("--real-live", type=int, default=120, help="(d) real-size uploads per database (live)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serving.json"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    logging.basicConfig(level=logging.WARNING)

    from xraylab.settings import load_settings

    settings = load_settings()
    images = make_images(args.images)
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "model": ARCH, "image_size": IMAGE_SIZE, "parts": sorted(parts), **backend(),
                              "classifier": {"num_gpus": args.classifier_gpus, "replicas": args.classifier_replicas}}
    model_dir = Path(tempfile.mkdtemp(prefix="xraylab-bench-models-"))
    os.environ["XRAYLAB_MODEL_DIR"] = str(model_dir)  # the Serve replicas load the benchmark's model
    os.environ["XRAYLAB_MODEL_REGISTRY"] = ""  # from that folder, whatever registry the env file names
    settings = load_settings()
    version = publish_random_model(model_dir, ARCH)
    if "a" in parts:
        batch_sizes = tuple(int(x) for x in args.batch_sizes.split(","))
        result["limit"] = {}
        for precision in args.precisions.split(","):
            for arch in (ARCH, "xray-resnet"):
                name = arch if precision == "float32" else f"{arch} {precision}"
                result["limit"][name] = run_limit(arch, images, batch_sizes, args.repeat, precision)
                print(f"(a) {name}: {result['limit'][name]}", flush=True)
        save(result, Path(args.out))  # kept should a later part fail
    if "b" in parts:
        result["seed"] = run_seed(model_dir, version, images[:100], reload_events=min(10, len(images)))
    if parts & {"c", "d"}:
        from serve_app.app import AppArgs
        from serve_app.launch import start_pipeline

        def app_args(database: str = "default") -> AppArgs:
            return AppArgs(database=database, mount_ui=False, model_version=version,
                           classifier_num_gpus=args.classifier_gpus, classifier_replicas=args.classifier_replicas)

        rate_hint = result.get("limit", {}).get(ARCH, {}).get("images_per_s", 200.0)
        if "c" in parts:
            from xraylab.db.session import make_engine, upgrade_schema

            upgrade_schema(make_engine(settings.DATABASE_URL))
            key = bench_api_key(settings)
            pipeline = start_pipeline(settings, app_args(), ingest=False)
            try:
                result["serve"] = run_serve(pipeline.url, settings.SERVE_APP_NAME, images,
                                            tuple(int(x) for x in args.levels.split(",")), args.per_level_s,
                                            rate_hint, api_key=key)
            finally:
                pipeline.stop()
        if "d" in parts:
            result["path"] = [run_path(settings, database, images, args.uploads, args.live, app_args)
                              for database in args.databases.split(",")]
    for kind in filter(None, args.real.split(",")):
        if not parts & {"a", "d"}:
            break
        corpus, source = real_size_corpus(kind, args.real_images)
        real: dict[str, Any] = {"source": source, "images": len(corpus),
                                "mean_image_mb": round(sum(map(len, corpus)) / len(corpus) / 1e6, 2)}
        result.setdefault("real_size", {})[kind] = real
        if "a" in parts:
            real["limit"] = run_limit(ARCH, corpus, (8, 16, 32), repeat=1)
            print(f"(a) real size, {kind}: {real['limit']}", flush=True)
        if "d" in parts:
            real["path"] = [run_path(settings, database, corpus, args.real_uploads, args.real_live, app_args,
                                     content_type=REAL_CORPORA[kind]) for database in args.databases.split(",")]
        real["ratios"] = real_ratios(real)
        del corpus
    result["ratios"] = ratios(result)
    print(table(result))
    save(result, Path(args.out))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
