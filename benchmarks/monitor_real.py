"""The drift monitor against real X-rays: how often does a clean window of held-back real images raise an alarm,
and do generated or blurred images read as drift?

    python benchmarks/monitor_real.py                     # 50 clean windows of 100, 10 of each drift kind
    python benchmarks/monitor_real.py --windows 10 --drift-windows 3

The served model's reference statistics come from a sample of its training images. Held back from them: the
Kermany test split and the validation split carved from train (``../shared/data/chest-xray/kaggle-224``; never
copied). Each window is ``--window`` images drawn (seeded, without replacement) from the held-back pool, scored
and embedded as a drift run does (``MonitorRunner.features``, ``image_drift``, ``prediction_drift`` with the
card's bands), and graded with the monitor's default limits as they are: nothing here tunes a threshold.
Drift windows: generated X-rays (``xraylab.synthetic``), and held-back real images blurred (Gaussian, radius 3).
Needs no service. Writes benchmarks/results/monitor_real.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest-xray" / "kaggle-224"


def held_back(data: Path, card: Any) -> list[Path]:
    """The test split and the validation split the model's training carved (its card says how)."""
    from train.dataset import scan_layout

    split = card.metrics.get("val_split", {})
    index = scan_layout(data, ("val", "test"), val_fraction=float(split.get("fraction", 0.1)),
                        seed=int(split.get("seed", 0)))
    return [Path(p) for split_name in ("val", "test") for p, _ in index.files[split_name]]


def blurred(data: bytes) -> bytes:
    from PIL import Image, ImageFilter

    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").filter(ImageFilter.GaussianBlur(3)).save(out, "JPEG", quality=90)
    return out.getvalue()


def generated(n: int, seed: int) -> list[bytes]:
    from xraylab.synthetic import encode_jpeg, generate_xray

    rng = np.random.default_rng(seed)
    return [encode_jpeg(generate_xray(rng, bool(rng.random() < 0.5))) for _ in range(n)]


def measure(settings: Any, data: Path, *, windows: int, drift_windows: int, window: int = 100,
            seed: int = 0) -> dict[str, Any]:
    """Per kind (clean, generated, blurred): the image- and prediction-drift scores of each window, their status
    under the default limits, and the share of windows at warning or critical. The model: the promoted one of
    the folder registry ``settings.MODEL_DIR``."""
    from xraylab.calibration import apply_platt
    from xraylab.imaging import inference_transforms
    from xraylab.monitor.drift import prediction_drift
    from xraylab.monitor.run import MonitorRunner
    from xraylab.monitor.thresholds import default_thresholds
    from xraylab.registry import FolderRegistry

    registry = FolderRegistry(settings.MODEL_DIR)
    version = registry.resolve_version()
    runner = MonitorRunner(settings, db=None, model_version=version, sinks=[])  # type: ignore[arg-type]
    runner.prepare()
    card = registry.read_card(version)
    model, _ = registry.load_model(version)
    assert runner.reference is not None
    thresholds = default_thresholds()
    pool = held_back(data, card)
    rng = np.random.default_rng(seed)
    transform = inference_transforms(card.preprocess_spec())

    def grade(images: list[bytes]) -> dict[str, Any]:
        feats = runner.features(images)
        image = runner.image_drift(feats.embeddings, feats.readable)
        x = np.stack([transform(images[i]) for i in feats.kept])
        scores = apply_platt(model.predict_on_batch(x).ravel(), card.calibration)
        pred = prediction_drift(runner.reference.scores, scores,  # type: ignore[union-attr]
                                band_edges=(card.bands["unsure"], card.bands["pneumonia"]))
        return {"image": round(image.score, 4), "image_status": thresholds.status("image", image.score),
                "prediction": round(pred.score, 4), "prediction_status": thresholds.status("prediction", pred.score)}

    def sample() -> list[bytes]:
        return [pool[i].read_bytes() for i in rng.choice(len(pool), window, replace=False)]

    kinds = {"clean": [grade(sample()) for _ in range(windows)],
             "generated": [grade(generated(window, seed + k)) for k in range(drift_windows)],
             "blurred": [grade([blurred(b) for b in sample()]) for _ in range(drift_windows)]}
    summary: dict[str, Any] = {"model_version": version, "window": window, "held_back_pool": len(pool),
                               "limits": {m: {"soft": thresholds.limits[m].soft, "hard": thresholds.limits[m].hard}
                                          for m in ("image", "prediction")}, "kinds": {}}
    for kind, rows in kinds.items():
        entry: dict[str, Any] = {"windows": len(rows)}
        for metric in ("image", "prediction"):
            statuses = Counter(r[f"{metric}_status"] for r in rows)
            values = [r[metric] for r in rows]
            entry[metric] = {"alarm_rate": round((statuses["warning"] + statuses["critical"]) / len(rows), 4),
                             "critical_rate": round(statuses["critical"] / len(rows), 4),
                             "median": float(np.median(values)), "max": float(np.max(values)),
                             "statuses": dict(statuses)}
        summary["kinds"][kind] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="a folder registry (default: shipped)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Kaggle layout (train/ and test/)")
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--drift-windows", type=int, default=10)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "monitor_real.json")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no real X-rays at {args.data}: get the Kermany set from Kaggle or Mendeley (see README)")
    state = tempfile.mkdtemp(prefix="xraylab-monitor-real-")  # settings of its own: no stack, no env file
    os.environ.update(XRAYLAB_MODEL_DIR=str(args.models.resolve()), XRAYLAB_STATE_DIR=state,
                      XRAYLAB_ENV_FILE=str(Path(state) / "none.env"))
    from xraylab.settings import load_settings

    if args.models.resolve() == (ROOT / "models").resolve():  # the shipped model: installed (signed) as serving has it
        from xraylab.registry import FolderRegistry, ModelKeys, ShippedRegistry
        from xraylab.registry.signing import generate_key_pair

        generate_key_pair(ModelKeys.from_settings(load_settings()), "monitor benchmark key")
        installed = Path(state) / "models"
        FolderRegistry(installed).install_shipped(ShippedRegistry(args.models))
        os.environ["XRAYLAB_MODEL_DIR"] = str(installed)

    result = measure(load_settings(), args.data, windows=args.windows, drift_windows=args.drift_windows,
                     window=args.window)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"model {result['model_version']}, windows of {result['window']} from {result['held_back_pool']} "
          "held-back real images; limits " + json.dumps(result["limits"]))
    print(f"{'kind':<10} {'windows':>7} {'image alarm':>11} {'critical':>8} {'median':>7} "
          f"{'pred alarm':>10} {'critical':>8} {'median':>7}")
    for kind, e in result["kinds"].items():
        print(f"{kind:<10} {e['windows']:>7} {e['image']['alarm_rate']:>11.2%} {e['image']['critical_rate']:>8.2%} "
              f"{e['image']['median']:>7.3f} {e['prediction']['alarm_rate']:>10.2%} "
              f"{e['prediction']['critical_rate']:>8.2%} {e['prediction']['median']:>7.3f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
