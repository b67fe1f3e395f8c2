"""Training throughput (images/s) of Ray Train data-parallel training for 1 and 2 workers.

    python benchmarks/train_throughput.py [--arch seed-cnn] [--epochs 3] [--train 256] [--batch-size 16]

Generates a synthetic set, runs the same job with each worker count, and prints the median per-epoch
throughput (all workers together, first epoch excluded as warm-up) and the wall time of the job.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="seed-cnn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from train.distributed import TrainConfig, run_training
    from xraylab.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, {"train": args.train, "val": 32, "test": 8}, seed=0)
        ray.init(include_dashboard=False, log_to_driver=False)
        print(f"arch={args.arch} train_images={args.train} batch_per_worker={args.batch_size} "
              f"epochs={args.epochs} cpus={ray.cluster_resources().get('CPU')} "
              f"gpus={ray.cluster_resources().get('GPU', 0)}")
        print(f"{'workers':>7} {'images/s':>9} {'epoch s':>8} {'job s':>7}")
        for workers in (int(w) for w in args.workers.split(",")):
            cfg = TrainConfig(data=str(data), arch=args.arch, workers=workers, epochs=args.epochs,
                              batch_size=args.batch_size, learning_rate=1e-3, patience=args.epochs,
                              gpus_per_worker=args.gpus_per_worker, storage_path=str(Path(tmp) / "runs"))
            t0 = time.perf_counter()
            outcome = run_training(cfg)
            steady = outcome.history[1:] or outcome.history
            rates = sorted(h["train_images_per_second"] for h in steady)
            epoch_s = sorted(h["epoch_seconds"] for h in steady)
            print(f"{workers:>7} {rates[len(rates) // 2]:>9.1f} {epoch_s[len(epoch_s) // 2]:>8.1f} "
                  f"{time.perf_counter() - t0:>7.1f}")
        ray.shutdown()


if __name__ == "__main__":
    main()
