"""Data-parallel training on Ray Train (``TensorflowTrainer``, Train v2) with a Keras 3 model.

Each worker reads its shard of the train split through the serving preprocessing chain, augments it,
and runs a custom training step under ``MultiWorkerMirroredStrategy``, because Keras 3 ``model.fit`` fails
under that strategy. Every epoch: validation AUC (averaged over workers so all ranks take the same
early-stopping decision), a checkpoint (weights of the last and of the best epoch, and the loop state),
and a report. A run restarted after a worker dies resumes from the latest checkpoint
(``FailureConfig(max_failures)``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xraylab.batches import predict_in_batches
from xraylab.imaging import PreprocessSpec

from .dataset import DEFAULT_VAL_FRACTION, load_images, scan_layout

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
    lr_schedule: str = "constant"  # or "cosine": from learning_rate down to 0 over ``epochs``
    patience: int = 3
    seed: int = 0  # initial weights, augmentation, shuffling, and the val split carved when the layout has none
    val_fraction: float = DEFAULT_VAL_FRACTION
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
    val_split: dict[str, Any] = field(default_factory=dict)


def _write_progress(progress_dir: str, rank: int, **info: Any) -> None:
    if progress_dir:
        path = Path(progress_dir) / f"rank{rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "rank": rank, **info}))
        os.replace(tmp, path)


@dataclass
class _Shard:
    """One worker's data: its shard of the train split (with per-example class weights) and the whole val
    split, plus the steps per epoch and the global batch size, the same on every rank."""

    x_train: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    steps: int
    global_batch: int


@dataclass
class _Worker:
    """One rank's training objects and its loop state (``state`` is what ``state.json`` checkpoints)."""

    cfg: TrainConfig
    rank: int
    shard: _Shard
    model: Any
    train_step: Callable[[Any, Any, Any], Any]  # distributed step on one batch per replica -> summed loss
    mean_over_workers: Callable[[Any], Any]  # a scalar averaged over all ranks
    optimizer: Any
    state: dict[str, Any] = field(default_factory=dict)
    best_weights: list[np.ndarray] | None = None


def _load_shard(cfg: TrainConfig, spec: PreprocessSpec, rank: int, world: int) -> _Shard:
    """This rank's shard of the train split (files ``rank::world``), the val split, and class weights turned
    into per-example weights."""
    index = scan_layout(cfg.data, ("train", "val"), val_fraction=cfg.val_fraction, seed=cfg.seed)
    x_train, y_train, _ = load_images(index.files["train"][rank::world], spec)
    x_val, y_val, _ = load_images(index.files["val"], spec)
    class_weights = index.class_weights("train")
    w_train = np.where(y_train > 0.5, class_weights[1], class_weights[0]).astype(np.float32)
    steps = max(1, len(index.files["train"]) // (world * cfg.batch_size))
    return _Shard(x_train, y_train, w_train, x_val, y_val, steps=steps, global_batch=cfg.batch_size * world)


LR_SCHEDULES = ("constant", "cosine")


def _learning_rate(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """Adam's learning rate: ``cfg.learning_rate`` throughout, or cosine-decayed to 0 over all ``cfg.epochs``."""
    import keras

    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps_per_epoch * cfg.epochs)
    raise ValueError(f"unknown learning-rate schedule {cfg.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")


def _build_worker(cfg: TrainConfig, spec: PreprocessSpec, strategy: Any, shard: _Shard, rank: int) -> _Worker:
    """Model, optimizer and augmenter under ``strategy``, and the distributed train step. The global seed is
    set first so that every rank starts from the same weights; the augmenter's seed differs per rank."""
    import keras
    import tensorflow as tf

    from .augment import build_augmenter
    from .models import build_model

    keras.utils.set_random_seed(cfg.seed)  # same initial weights on every rank
    with strategy.scope():
        model = build_model(cfg.arch, spec)
        optimizer = keras.optimizers.Adam(_learning_rate(cfg, shard.steps))
        augmenter = build_augmenter(cfg.seed + rank) if cfg.augment else None

    def replica_step(x: Any, y: Any, w: Any) -> Any:
        with tf.GradientTape() as tape:
            if augmenter is not None:
                x = augmenter(x, training=True)
            p = model(x, training=True)
            per_example = keras.losses.binary_crossentropy(tf.expand_dims(y, -1), p)
            loss = tf.reduce_sum(per_example * w) / shard.global_batch
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

    return _Worker(cfg, rank, shard, model, train_step, mean_over_workers, optimizer)


def _restore_checkpoint(model: Any, rank: int) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """The loop state and the best epoch's weights from Ray Train's latest checkpoint, with the last epoch's
    weights loaded into ``model``; a fresh state and no best weights when there is no checkpoint."""
    import ray.train

    state: dict[str, Any] = {"epoch": 0, "best_auc": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [],
                             "resumed_from": None}
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
    return state, best_weights


def _run_epoch(worker: _Worker, rng: np.random.Generator) -> tuple[float, float]:
    """``steps`` batches drawn from a fresh permutation of the shard (wrapping around): mean loss, seconds."""
    t0 = time.perf_counter()
    shard, batch_size = worker.shard, worker.cfg.batch_size
    order = rng.permutation(len(shard.x_train))
    losses = []
    for step in range(shard.steps):
        idx = order[(np.arange(batch_size) + step * batch_size) % len(order)]
        losses.append(float(worker.train_step(shard.x_train[idx], shard.y_train[idx], shard.w_train[idx])))
    return float(np.mean(losses)), time.perf_counter() - t0


def _validate(worker: _Worker) -> tuple[float, float]:
    """Val AUC averaged over all workers (so every rank takes the same early-stopping decision) and this
    rank's val accuracy at 0.5."""
    import tensorflow as tf

    from .metrics import roc_auc

    x_val, y_val = worker.shard.x_val, worker.shard.y_val
    scores = predict_in_batches(lambda x: worker.model(x, training=False), x_val, flatten=True)
    val_auc = float(worker.mean_over_workers(tf.constant(roc_auc(y_val, scores), tf.float32)))
    return val_auc, float(((scores >= 0.5) == (y_val > 0.5)).mean())


def _record_epoch(worker: _Worker, epoch: int, *, loss: float, train_seconds: float, val_auc: float,
                  val_acc: float, epoch_seconds: float) -> tuple[dict[str, Any], bool, bool]:
    """Early-stopping bookkeeping: keep the best weights on an improvement of the val AUC, count epochs
    without one, append the epoch's metrics to the history. Returns (metrics, improved, stop)."""
    state = worker.state
    improved = val_auc > state["best_auc"] + 1e-4
    if improved:
        state.update(best_auc=val_auc, best_epoch=epoch, bad_epochs=0)
        worker.best_weights = worker.model.get_weights()
    else:
        state["bad_epochs"] += 1
    state["epoch"] = epoch
    images = worker.shard.steps * worker.shard.global_batch
    metrics = {"epoch": epoch, "loss": loss, "val_auc": val_auc, "val_accuracy": val_acc,
               "epoch_seconds": round(epoch_seconds, 2),
               "train_images_per_second": round(images / train_seconds, 1),
               "best_epoch": state["best_epoch"], "resumed_from": state["resumed_from"]}
    state["history"].append(metrics)
    return metrics, improved, state["bad_epochs"] >= worker.cfg.patience


def _checkpoint_and_report(worker: _Worker, metrics: dict[str, Any], improved: bool) -> None:
    """``ray.train.report`` the epoch's metrics; rank 0 attaches a checkpoint (``last.weights.h5``,
    ``best.weights.h5``, ``state.json``) and logs the epoch."""
    import ray.train

    if worker.rank != 0:
        ray.train.report(metrics)
        return
    model = worker.model
    log.info("epoch %d/%d loss %.4f val_auc %.4f val_acc %.3f (%.1f img/s)%s", metrics["epoch"],
             worker.cfg.epochs, metrics["loss"], metrics["val_auc"], metrics["val_accuracy"],
             metrics["train_images_per_second"], " *" if improved else "")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(os.path.join(tmp, "last.weights.h5"))
        last_weights = model.get_weights()
        model.set_weights(worker.best_weights)
        model.save_weights(os.path.join(tmp, "best.weights.h5"))
        model.set_weights(last_weights)
        Path(tmp, "state.json").write_text(json.dumps(worker.state))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: load the shard, build, resume, then per epoch train, validate, record,
    checkpoint and report, until ``cfg.epochs`` or early stopping."""
    import ray.train
    import tensorflow as tf

    cfg = TrainConfig(**config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    spec = PreprocessSpec.from_dict(cfg.preprocess)
    worker = _build_worker(cfg, spec, strategy, _load_shard(cfg, spec, rank, world), rank)
    worker.state, worker.best_weights = _restore_checkpoint(worker.model, rank)
    if worker.state["epoch"]:  # a checkpoint holds weights, not Adam's state: its step count at least goes on,
        worker.optimizer.iterations.assign(worker.state["epoch"] * worker.shard.steps)  # so a schedule does too
    rng = np.random.default_rng(cfg.seed * 1000 + rank)
    for epoch in range(worker.state["epoch"] + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        _write_progress(cfg.progress_dir, rank, epoch=epoch, phase="train")
        loss, train_seconds = _run_epoch(worker, rng)
        val_auc, val_acc = _validate(worker)
        metrics, improved, stop = _record_epoch(worker, epoch, loss=loss, train_seconds=train_seconds,
                                                val_auc=val_auc, val_acc=val_acc,
                                                epoch_seconds=time.perf_counter() - t0)
        _checkpoint_and_report(worker, metrics, improved)
        _write_progress(cfg.progress_dir, rank, epoch=epoch, phase="reported")
        if stop:
            break


def run_training(cfg: TrainConfig) -> TrainOutcome:
    """Run the Ray Train job; the caller has ``ray.init``-ed (or it starts a local Ray)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    cfg.data = str(Path(cfg.data).resolve())  # the workers run in folders of their own
    index = scan_layout(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)  # a bad layout fails here
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
        counts=counts, val_split=dict(index.val_split),
    )
