"""Gradio Blocks for review. Runs mounted on the Serve ingress (``/ui``) or alone (``xraylab ui``).

Both ways use the same data access: SQLAlchemy reads (``xraylab.db.crud``) and S3 reads
(``xraylab.storage``). Patient names appear only here, behind login.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from xraylab.db.crud import get_study, worklist
from xraylab.db.session import Database
from xraylab.registry import SYNTHETIC_NOTICE, ModelNotFoundError, read_card, resolve_version
from xraylab.settings import Settings
from xraylab.storage import get_object, make_s3_client

__all__ = ["build_review_app", "S3ImageLoader", "WORKLIST_COLUMNS"]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
log = logging.getLogger("xraylab.ui")

WORKLIST_COLUMNS = ["Study", "Risk band", "Score", "Hospital", "Patient ID", "Patient", "Study date", "Model"]


class S3ImageLoader:
    """Loads a study's image from its endpoint, with a client per endpoint id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}

    def __call__(self, study: dict[str, Any]) -> Image.Image:
        endpoint_id = study["endpoint_id"]
        if endpoint_id not in self._clients:
            self._clients[endpoint_id] = make_s3_client(self.settings.s3_endpoint(endpoint_id))
        obj = get_object(self._clients[endpoint_id], study["bucket"], study["object_key"],
                         max_bytes=self.settings.MAX_IMAGE_BYTES, endpoint_id=endpoint_id)
        image = Image.open(io.BytesIO(obj.data))
        image.load()
        return image


def _table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [r["id"], r.get("band"), round(float(r.get("score") or 0.0), 3), r.get("hospital"), r.get("patient_id"),
         r.get("patient_name"), r.get("study_date"), r.get("model_version")]
        for r in rows
    ]


def _study_markdown(row: dict[str, Any], synthetic: bool) -> str:
    lines = [
        f"### Study {row['id']}: **{row.get('band', 'no prediction')}**",
        f"- Pneumonia score: **{float(row.get('score') or 0.0):.3f}** (model `{row.get('model_version')}`)",
        f"- Hospital: {row.get('hospital') or '-'}; patient {row.get('patient_name') or '-'}"
        f" ({row.get('patient_id') or '-'}); study date {row.get('study_date') or '-'}",
        f"- Object: `s3://{row['bucket']}/{row['object_key']}`",
    ]
    if synthetic:
        lines.append(f"\n> ⚠️ {SYNTHETIC_NOTICE}")
    return "\n".join(lines)


def trained_on_synthetic(model_dir: Path | None, version: str | None) -> bool:
    """Whether ``version`` (None: the promoted one) learnt from generated images; True when unknown."""
    if model_dir is None:
        return True
    try:
        version = version or resolve_version(model_dir)  # the promoted one, else the newest
        return read_card(model_dir, version).synthetic
    except (ModelNotFoundError, ValueError, OSError):
        return True


def build_review_app(db: Database, load_image: Callable[[dict[str, Any]], Image.Image], *,
                     model_dir: Path | None = None, title: str = "xraylab review") -> Any:
    """``model_dir``: the registry, to say which predictions come from a model trained on generated images
    (without it every prediction carries the warning)."""
    import gradio as gr

    def banner() -> str:
        return f"> ⚠️ **{SYNTHETIC_NOTICE}**" if trained_on_synthetic(model_dir, None) else ""

    def refresh() -> list[list[Any]]:
        with db.session() as session:
            return _table(worklist(session))

    def open_study(study_id: float | None) -> tuple[Any, str]:
        if study_id is None:
            return None, "Pick a study from the worklist."
        with db.session() as session:
            row = get_study(session, int(study_id))
        if row is None:
            return None, f"No study {int(study_id)}."
        synthetic = trained_on_synthetic(model_dir, row.get("model_version"))
        try:
            image = load_image(row)
        except Exception as exc:  # the row stays readable even when the image is gone
            log.warning("study %s: image not loaded: %s", row["study_uid"], type(exc).__name__)
            return None, _study_markdown(row, synthetic) + "\n\n**Image unavailable.**"
        return image, _study_markdown(row, synthetic)

    def on_select(evt: gr.SelectData, table: Any) -> tuple[Any, str, float | None]:
        row_index = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        study_id = table.iloc[row_index, 0] if hasattr(table, "iloc") else table[row_index][0]
        image, text = open_study(float(study_id))
        return image, text, float(study_id)

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nWorklist of chest X-rays, highest pneumonia risk first.")
        gr.Markdown(banner, elem_id="synthetic-notice")  # re-evaluated on every page load
        with gr.Row():
            with gr.Column(scale=3):
                refresh_button = gr.Button("Refresh worklist")
                table = gr.Dataframe(headers=WORKLIST_COLUMNS, value=refresh, interactive=False,
                                     elem_id="worklist", label="Worklist")
            with gr.Column(scale=2):
                study_id = gr.Number(label="Study", precision=0, elem_id="study-id")
                open_button = gr.Button("Open study")
                image = gr.Image(label="X-ray", type="pil", elem_id="study-image")
                details = gr.Markdown(elem_id="study-details")
        refresh_button.click(refresh, outputs=table)
        open_button.click(open_study, inputs=study_id, outputs=[image, details])
        table.select(on_select, inputs=table, outputs=[image, details, study_id])
    return demo
