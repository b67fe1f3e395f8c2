"""The application graph: ``build_app(args)`` for ``serve run``/``serve deploy`` and tests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application

from serve_app.classifier import Classifier, ClassifierConfig
from serve_app.fetcher import Fetcher
from serve_app.ingress import Ingress
from serve_app.writer import Writer

__all__ = ["AppArgs", "build_app", "preferring"]


class AppArgs(BaseModel):
    """Deploy-time arguments (the ``args:`` of ``serve_config.yaml``)."""

    model_version: str = Field("", description="model version to serve; '' = the promoted one")
    database: str = Field("default", description="'default' (XRAYLAB_DATABASE_URL) or 'mariadb'")
    classifier_num_gpus: float = 0.0
    classifier_replicas: int = 1
    classifier_max_replicas_per_node: int | None = Field(
        None, ge=1, description="at most this many Classifier replicas on one node (e.g. 1: one per GPU node)")
    classifier_prefer_labels: dict[str, str] = Field(
        default_factory=dict, description="Ray node labels (`ray start --labels`) the Classifier's replicas prefer, "
        "e.g. {'xraylab/pool': 'gpu'}; when no alive node has them, replicas run on any node")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig,
                                         description="batching and model polling (the Classifier's user_config)")
    mount_ui: bool = True


def preferring(labels: dict[str, str]) -> dict[str, Any]:
    """Ray actor options that prefer nodes with ``labels`` and, when no alive node has them, take any node: a
    preference, not a requirement, so an actor whose node dies is replaced on a node that lives."""
    return {"label_selector": dict(labels), "fallback_strategy": [{"label_selector": {}}]}


def build_app(args: AppArgs | dict | None = None) -> Application:
    args = AppArgs.model_validate(args or {})
    actor_options: dict[str, Any] = {"num_cpus": 0, "num_gpus": args.classifier_num_gpus}
    if args.classifier_prefer_labels:
        actor_options |= preferring(args.classifier_prefer_labels)
    classifier = Classifier.options(
        num_replicas=args.classifier_replicas,
        max_replicas_per_node=args.classifier_max_replicas_per_node,
        ray_actor_options=actor_options,
        user_config=args.classifier.model_dump(),
    ).bind(args.model_version)
    return Ingress.bind(Fetcher.bind(), classifier, Writer.bind(args.database), args.database, args.mount_ui)
