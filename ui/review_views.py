"""What the review app shows, as HTML made here from the database's rows: the worklist table, the study's details,
its prior studies, its verdicts and the reading panel the viewer (``ui/viewer``) mounts into.

Every value that comes from outside (DICOM tags, upload metadata, doctors' notes) is escaped: it is shown
exactly as it was written, never read as markup. Markup of our own is the only markup on the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xraylab.registry import SYNTHETIC_NOTICE

__all__ = ["Column", "WORKLIST_COLUMNS", "SORTABLE", "SYNTHETIC_MARK", "worklist_html", "details_html",
           "priors_html", "history_html", "reading_html", "status_text", "when", "in_utc", "age_sex", "next_sort",
           "OPEN_A_STUDY", "hospital_select_html"]

SYNTHETIC_MARK = "⚠"  # after a score from a model trained on generated images (the banner says what it means)
OPEN_A_STUDY = "Open a study from the worklist (click its row, or Enter on it) to read it here."


@dataclass(frozen=True)
class Column:
    title: str
    key: str  # the row's field shown
    sort: str | None  # the worklist's sort key (xraylab.db.review.SORT_KEYS), None: not sortable
    first_descending: bool = False  # the direction of a first click


WORKLIST_COLUMNS = [
    Column("Study", "id", "received", True),
    Column("Status", "status", "priority"),
    Column("Risk band", "band", "band"),
    Column("Score", "score_label", "score", True),
    Column("Hospital", "hospital", "hospital"),
    Column("Patient", "patient_name", "patient"),
    Column("Patient ID", "patient_id", "patient_id"),
    Column("Age / sex", "age_sex", None),
    Column("Accession", "accession_number", "accession"),
    Column("Description", "study_description", None),
    Column("Study date", "study_date", "study_date", True),
]
SORTABLE = {c.sort: c for c in WORKLIST_COLUMNS if c.sort}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def in_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC time (the database gives back naive ones, written in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(value: datetime | None) -> str:
    """A stored time as shown: in UTC, with its zone."""
    return in_utc(value).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def status_text(row: dict[str, Any]) -> str:
    reviewers = row.get("reviewers") or {}
    if not reviewers:
        return "Unreviewed"
    return "Reviewed: " + ", ".join(f"{name} ({label})" for name, label in reviewers.items())


def age_sex(row: dict[str, Any]) -> str:
    parts = [str(p) for p in (row.get("patient_age"), row.get("patient_sex")) if p]
    return " / ".join(parts) if parts else "-"


def next_sort(current: str, descending: bool, clicked: str) -> tuple[str, bool]:
    """The worklist's order after a click on a column's header: the same column turns round, another starts in
    its own first direction (scores and dates highest first, names A to Z). Unknown keys leave it as it was."""
    if clicked not in SORTABLE:
        return current, descending
    if clicked == current:
        return current, not descending
    return clicked, SORTABLE[clicked].first_descending


def worklist_html(rows: Sequence[dict[str, Any]], sort: str, descending: bool, empty: str = "No studies.") -> str:
    """The worklist as a table: each row focusable (Tab, arrows, Enter opens it), each sortable header a button.
    ``rows`` carry the fields of ``WORKLIST_COLUMNS`` (``status`` and ``score_label`` made by the caller)."""
    head = []
    for column in WORKLIST_COLUMNS:
        if column.sort is None:
            head.append(f"<th scope='col'>{_e(column.title)}</th>")
            continue
        active = column.sort == sort
        arrow = (" ▼" if descending else " ▲") if active else ""
        aria = f" aria-sort='{'descending' if descending else 'ascending'}'" if active else ""
        head.append(f"<th scope='col' data-sort='{column.sort}'{aria}><button type='button' "
                    f"title='Sort by {_e(column.title.lower())}'>{_e(column.title)}{arrow}</button></th>")
    body = []
    for row in rows:
        cells = []
        for column in WORKLIST_COLUMNS:
            value = row.get(column.key)
            cls = " class='unreviewed'" if column.key == "status" and value == "Unreviewed" else ""
            cells.append(f"<td{cls}>{_e(value if value not in (None, '') else '-')}</td>")
        label = f"Study {row['id']}, {row.get('band') or 'no prediction'}, {row.get('status')}"
        body.append(f"<tr data-study='{int(row['id'])}' tabindex='0' aria-label='{_e(label)}'>{''.join(cells)}</tr>")
    if not body:
        body.append(f"<tr class='empty'><td colspan='{len(WORKLIST_COLUMNS)}'>{_e(empty)}</td></tr>")
    return (f"<table id='worklist-table' aria-label='Worklist'><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def hospital_select_html(choices: Sequence[str], selected: str) -> str:
    """The hospital filter as the browser's own list box: it opens only when asked (Alt+↓ or a click), never
    filters by what it shows, and closes when the keyboard moves on (the page's script sends its choice)."""
    options = "".join(f"<option value='{_e(c)}'{' selected' if c == selected else ''}>{_e(c)}</option>"
                      for c in choices)
    return (f"<label class='xl-select'><span>Hospital</span><select id='hospital-select' name='hospital'>{options}"
            "</select></label>")


def details_html(detail: dict[str, Any], notice: str) -> str:
    """The open study: its prediction, the model's notice, the patient and the study as their tags say."""
    score = detail.get("score")
    band = detail.get("band") or "no prediction"
    lines = [f"<h3 data-study='{int(detail['id'])}'>Study {int(detail['id'])}: "
             f"<span class='band band-{_e(band.lower().replace(' ', '-'))}'>{_e(band)}</span></h3>"]
    if score is not None:
        lines.append(f"<p>Pneumonia score <strong>{float(score):.3f}</strong> from model "
                     f"<code>{_e(detail.get('model_version'))}</code>, "
                     f"scored {_e(when(detail.get('predicted_at')))}</p>")
    if notice == SYNTHETIC_NOTICE:
        lines.append(f"<p class='notice synthetic-warning'>⚠️ <strong>{_e(SYNTHETIC_NOTICE)}</strong></p>")
    elif notice:
        lines.append(f"<p class='notice'>ℹ️ {_e(notice)}</p>")
    facts = [
        ("Patient", f"{detail.get('patient_name') or '-'} (ID {detail.get('patient_id') or '-'})"),
        ("Age / sex", age_sex(detail)),
        ("Hospital", detail.get("hospital") or "-"),
        ("Accession", detail.get("accession_number") or "-"),
        ("Description", detail.get("study_description") or "-"),
        ("Study date", detail.get("study_date") or "-"),
        ("Received", when(detail.get("received_at"))),
        ("Image", f"{detail.get('content_type') or '-'}, {detail.get('size_bytes') or '-'} bytes, "
                  f"from {detail.get('endpoint_id') or '-'}"),
    ]
    if detail.get("study_instance_uid") or detail.get("modality"):  # a DICOM study: what its tags say
        facts.append(("DICOM", f"modality {detail.get('modality') or '-'}, view {detail.get('view_position') or '-'}, "
                               f"manufacturer {detail.get('manufacturer') or '-'}; Study Instance UID "
                               f"{detail.get('study_instance_uid') or '-'}"))
    predictions = detail.get("predictions") or []
    if len(predictions) > 1:
        facts.append(("Earlier scores", "; ".join(f"{p['model_version']}: {p['score']:.3f} ({p['band']})"
                                                  for p in predictions[:-1])))
    lines.append("<dl class='facts'>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>")
    return "".join(lines)


def priors_html(priors: Sequence[dict[str, Any]], pixels_url: Any) -> str:
    """The patient's other studies; each opens beside the study being read."""
    if not priors:
        return "<p class='priors-none'>No prior studies of this patient.</p>"
    items = []
    for p in priors:
        score = f" {float(p['score']):.2f}" if p.get("score") is not None else ""
        text = f"Study {int(p['id'])} · {p.get('study_date') or when(p.get('received_at'))} · " \
               f"{p.get('band') or 'no prediction'}{score}" + (" · reviewed" if p.get("reviewed") else "")
        if p.get("study_description"):
            text += f" · {p['study_description']}"
        caption = f"Prior: study {int(p['id'])}, {p.get('study_date') or '-'}"
        items.append(f"<li><button type='button' class='prior' data-study='{int(p['id'])}' "
                     f"data-prior-pixels='{_e(pixels_url(int(p['id'])))}' data-prior-caption='{_e(caption)}' "
                     f"title='Open beside the current film'>{_e(text)}</button></li>")
    return f"<p><strong>Prior studies</strong> ({len(priors)}): open one beside this film</p><ul>{''.join(items)}</ul>"


def history_html(verdicts: Sequence[dict[str, Any]]) -> str:
    if not verdicts:
        return "<p><strong>Verdicts:</strong> none yet.</p>"
    items = []
    for v in verdicts:
        note = f"<div class='note'>{_e(v['notes'])}</div>" if v.get("notes") else ""
        items.append(f"<li>{_e(when(v['created_at']))}, <strong>{_e(v['doctor'])}</strong>: "
                     f"<strong>{_e(v['label'])}</strong>{note}</li>")
    return "<p><strong>Verdicts</strong> (oldest first; a change of mind is a new line):</p><ul>" + "".join(items) + \
        "</ul>"


def reading_html(study_id: int | None, state: str | None, *, pixels: str = "", heat: str = "", caption: str = "",
                 scale_css: str = "", scale_text: str = "") -> str:
    """The panel the viewer mounts into (``.xv-root``), or what stands in for the film: ``state`` as
    ``StudyImages.state`` tells it (``ok``, ``gone``, ``changed``) or None (the store did not answer)."""
    if study_id is None:
        return f"<p class='xv-empty'>{_e(OPEN_A_STUDY)}</p>"
    if state == "gone":
        return (f"<p id='image-missing'><strong>The image of study {study_id} is no longer in its store.</strong> "
                "The prediction and verdicts are kept.</p>")
    if state == "changed":
        return (f"<p id='image-missing'><strong>The image of study {study_id} was replaced in its store after it "
                "was scored:</strong> the score does not belong to the picture there now, so it is not shown. "
                "The prediction and verdicts are kept.</p>")
    if state is None:
        return (f"<p id='image-missing'><strong>The image store of study {study_id} does not answer just now."
                "</strong> Open the study again in a moment; the prediction and verdicts are shown.</p>")
    return (f"<div class='xv-root' data-study='{int(study_id)}' data-pixels='{_e(pixels)}' data-heat='{_e(heat)}' "
            f"data-caption='{_e(caption)}' data-scale-css='{_e(scale_css)}' data-scale-text='{_e(scale_text)}'>"
            "<p class='xv-loading'>Loading the image viewer… If this stays, the viewer's script did not load "
            "(an administrator builds it with scripts/build-viewer.sh).</p></div>")
