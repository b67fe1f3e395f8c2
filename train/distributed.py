"""Data-parallel training on Ray Train (``TensorflowTrainer``, Train v2) with a Keras 3 model.

Each worker reads its shard of the train split through the serving preprocessing chain, augments it,
and runs a custom training step under ``MultiWorkerMirroredStrategy`` (Keras 3 ``model.fit`` fails under
that strategy; see ``../shared/notes/stack.md``). Every epoch: validation AUC (averaged over workers so
all ranks take the same early-stopping decision), a checkpoint (weights of the last and of the best
epoch, and the loop state), and a report. A run restarted after a worker dies resumes from the latest
checkpoint (``FailureConfig(max_failures)``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.imaging import PreprocessSpec

from .dataset import load_images, scan_layout

__all__ = ["TrainConfig", "TrainOutcome", "train_loop_per_worker", "run_training"]

log = logging.getLogger("xraylab.train")


@dataclass
class TrainConfig:
    data: str
    arch: str = "seed-cnn"
    workers: int = 2
    gpus_per_worker: float = 0.0
    epochs: int = 10
    batch_size: int = 32  # per worker
    learning_rate: float = 1e-4
    patience: int = 3
    seed: int = 0
    augment: bool = True
    preprocess: dict[str, Any] = field(default_factory=lambda: PreprocessSpec().to_dict())
    storage_path: str = ""
    name: str = ""
    max_failures: int = 2
    progress_dir: str = ""  # workers write rank<N>.json (pid, epoch) here; used to watch or kill them


@dataclass
class TrainOutcome:
    config: TrainConfig
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_auc: float
    checkpoint_path: str
    resumed_from_epoch: int | None
    seconds: float
    images_per_second: float
    data_fingerprint: str
    counts: dict[str, dict[str, int]]


def _write_progress(progress_dir: str, rank: int, **info: Any) -> None:
    if progress_dir:
        path = Path(progress_dir) / f"rank{rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "rank": rank, **info}))
        os.replace(tmp, path)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import keras
    import ray.train
    import tensorflow as tf

    from .augment import build_augmenter
    from .models import build_model

    cfg = TrainConfig(**config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    spec = PreprocessSpec.from_dict(cfg.preprocess)
    index = scan_layout(cfg.data, ("train", "val"))
    x_train, y_train, _ = load_images(index.files["train"][rank::world], spec)
    x_val, y_val, _ = load_images(index.files["val"], spec)
    class_weights = index.class_weights("train")
    w_train = np.where(y_train > 0.5, class_weights[1], class_weights[0]).astype(np.float32)
    steps = max(1, len(index.files["train"]) // (world * cfg.batch_size))
    global_batch = cfg.batch_size * world

    keras.utils.set_random_seed(cfg.seed)  # same initial weights on every rank
    with strategy.scope():
        model = build_model(cfg.arch, spec)
        optimizer = keras.optimizers.Adam(cfg.learning_rate)
        augmenter = build_augmenter(cfg.seed + rank) if cfg.augment else None

    def replica_step(x: Any, y: Any, w: Any) -> Any:
        with tf.GradientTape() as tape:
            if augmenter is not None:
                x = augmenter(x, training=True)
            p = model(x, training=True)
            per_example = keras.losses.binary_crossentropy(tf.expand_dims(y, -1), p)
            loss = tf.reduce_sum(per_example * w) / global_batch
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(x: Any, y: Any, w: Any) -> Any:
        per_replica = strategy.run(replica_step, args=(x, y, w))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function
    def mean_over_workers(value: Any) -> Any:
        per_replica = strategy.run(lambda v: tf.identity(v), args=(value,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [], "resumed_from": None}
    best_weights = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            model.load_weights(os.path.join(ckpt_dir, "best.weights.h5"))
            best_weights = model.get_weights()
            model.load_weights(os.path.join(ckpt_dir, "last.weights.h5"))
            state = json.loads(Path(ckpt_dir, "state.json").read_text())
            state["resumed_from"] = state["epoch"]
        log.info("rank %d resumed from epoch %d", rank, state["epoch"])

    from .metrics import roc_auc

    rng = np.random.default_rng(cfg.seed * 1000 + rank)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        _write_progress(cfg.progress_dir, rank, epoch=epoch, phase="train")
        order = rng.permutation(len(x_train))
        losses = []
        for step in range(steps):
            idx = order[(np.arange(cfg.batch_size) + step * cfg.batch_size) % len(order)]
            losses.append(float(train_step(x_train[idx], y_train[idx], w_train[idx])))
        train_seconds = time.perf_counter() - t0
        scores = np.concatenate([np.asarray(model(x_val[i:i + 64], training=False)).reshape(-1)
                                 for i in range(0, len(x_val), 64)])
        local_auc = roc_auc(y_val, scores)
        val_auc = float(mean_over_workers(tf.constant(local_auc, tf.float32)))
        val_acc = float(((scores >= 0.5) == (y_val > 0.5)).mean())
        improved = val_auc > state["best_auc"] + 1e-4
        if improved:
            state.update(best_auc=val_auc, best_epoch=epoch, bad_epochs=0)
            best_weights = model.get_weights()
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)), "val_auc": val_auc, "val_accuracy": val_acc,
                   "epoch_seconds": round(time.perf_counter() - t0, 2),
                   "train_images_per_second": round(steps * global_batch / train_seconds, 1),
                   "best_epoch": state["best_epoch"], "resumed_from": state["resumed_from"]}
        state["history"].append(metrics)
        stop = state["bad_epochs"] >= cfg.patience
        if rank == 0:
            log.info("epoch %d/%d loss %.4f val_auc %.4f val_acc %.3f (%.1f img/s)%s", epoch, cfg.epochs,
                     metrics["loss"], val_auc, val_acc, metrics["train_images_per_second"],
                     " *" if improved else "")
            with tempfile.TemporaryDirectory() as tmp:
                model.save_weights(os.path.join(tmp, "last.weights.h5"))
                last_weights = model.get_weights()
                model.set_weights(best_weights)
                model.save_weights(os.path.join(tmp, "best.weights.h5"))
                model.set_weights(last_weights)
                Path(tmp, "state.json").write_text(json.dumps(state))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        _write_progress(cfg.progress_dir, rank, epoch=epoch, phase="reported")
        if stop:
            break


def run_training(cfg: TrainConfig) -> TrainOutcome:
    """Run the Ray Train job; the caller has ``ray.init``-ed (or it starts a local Ray)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    index = scan_layout(cfg.data)  # fail early, in the driver, on a bad layout
    counts = index.counts()
    cfg.name = cfg.name or f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = cfg.storage_path or str(Path(tempfile.gettempdir()) / "xraylab-train")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True)
    use_gpu = cfg.gpus_per_worker > 0
    resources = {"CPU": 1, **({"GPU": cfg.gpus_per_worker} if use_gpu else {})}
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.__dict__,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=cfg.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.error:
        raise RuntimeError(f"training failed: {result.error}")
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as ckpt_dir:
        state = json.loads(Path(ckpt_dir, "state.json").read_text())
    history = state["history"]
    resumed = next((h["resumed_from"] for h in history if h.get("resumed_from")), None)
    rates = [h["train_images_per_second"] for h in history]
    return TrainOutcome(
        config=cfg, history=history, best_epoch=state["best_epoch"], best_val_auc=state["best_auc"],
        checkpoint_path=result.checkpoint.path, resumed_from_epoch=resumed, seconds=seconds,
        images_per_second=float(np.median(rates)) if rates else 0.0, data_fingerprint=index.fingerprint(),
        counts=counts,
    )
