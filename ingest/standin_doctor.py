"""A stand-in doctor for demos and tests: records verdicts on a share of generated uploads, from the label
the generator drew, wrong on purpose at a given rate, so that the monitor's performance figures can be
shown rising and decaying. The account (``standin-doctor``) is created disabled: it cannot log in, and its
verdicts carry the note that they are simulated."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.uploader import StudyUpload
from xraylab.labels import PNEUMONIA_CLASS, VERDICT_NORMAL, VERDICT_PNEUMONIA

__all__ = ["STANDIN_USER", "StandinReport", "record_standin_verdicts", "wait_for_scores"]

log = logging.getLogger("xraylab.standin_doctor")
STANDIN_USER = "standin-doctor"
NOTE = "simulated verdict (stand-in doctor)"


@dataclass(frozen=True)
class StandinReport:
    chosen: int
    labelled: int
    wrong: int
    not_scored: int  # chosen studies with no prediction within the timeout (no verdict for them)


def _standin_user(session: Any) -> int:
    from sqlalchemy import select

    from xraylab.accounts import create_user, set_disabled
    from xraylab.db.models import User

    user_id = session.scalar(select(User.id).where(User.name == STANDIN_USER))
    if user_id is None:
        user_id = create_user(session, STANDIN_USER, secrets.token_urlsafe(24), "doctor")
        set_disabled(session, STANDIN_USER, True)
    return int(user_id)


def wait_for_scores(db: Any, bucket: str, keys: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """The studies of these object keys that have a prediction (``xraylab.db.review.studies_by_keys`` rows, by
    key), polled once a second until all have one or ``timeout_s`` has passed."""
    from xraylab.db.review import studies_by_keys

    rows: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while keys:
        with db.session() as session:
            for row in studies_by_keys(session, bucket, [k for k in keys if k not in rows]):
                if row.get("prediction_id"):
                    rows[row["object_key"]] = row
        if len(rows) == len(keys) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return rows


def record_standin_verdicts(db: Any, bucket: str, uploads: Sequence[StudyUpload], *, fraction: float,
                            error_rate: float = 0.0, seed: int = 0, timeout_s: float = 300.0) -> StandinReport:
    """Wait for the chosen uploads' predictions (up to ``timeout_s``), then record one verdict on each."""
    from xraylab.db.review import record_verdict
    from xraylab.db.scope import EVERY_HOSPITAL

    if not 0.0 <= fraction <= 1.0 or not 0.0 <= error_rate <= 1.0:
        raise ValueError("the label fraction and the error rate are shares in [0, 1]")
    rng = np.random.default_rng(seed)
    chosen = [u for u in uploads if u.label is not None and rng.random() < fraction]
    truth = {u.key: u.label for u in chosen}
    rows = wait_for_scores(db, bucket, list(truth), timeout_s)
    wrong = 0
    with db.session() as session:
        user_id = _standin_user(session)
        for key, row in rows.items():
            pneumonia = truth[key] == PNEUMONIA_CLASS
            if rng.random() < error_rate:
                pneumonia, wrong = not pneumonia, wrong + 1
            record_verdict(session, row["id"], user_id, VERDICT_PNEUMONIA if pneumonia else VERDICT_NORMAL, NOTE,
                           scope=EVERY_HOSPITAL, prediction_id=row["prediction_id"])  # a simulation, no login
    report = StandinReport(len(chosen), len(rows), wrong, len(truth) - len(rows))
    log.info("stand-in doctor: %d verdicts (%d wrong on purpose), %d studies not scored in time",
             report.labelled, report.wrong, report.not_scored)
    return report
