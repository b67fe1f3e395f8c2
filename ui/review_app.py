"""The doctors' review app (Gradio 6 Blocks), mounted at ``/ui`` on the Serve ingress or on ``xraylab ui``'s
own server, behind ``ui/access.py`` (login, sessions, security headers) in both.

- **Worklist**: unreviewed studies first, then by band and score; filters by hospital, band, study date and
  review status; pages of ``XRAYLAB_WORKLIST_PAGE_SIZE``; refreshed when a prediction or verdict arrives
  (a timer polls ``worklist_version``, three index look-ups). Clicking a row opens the study.
- **Study**: the X-ray at full resolution with zoom, the Grad-CAM map of the model that scored it toggled
  over it (``ui/study_media.py``), the prediction, metadata, and every verdict so far.
- **Verdict**: Pneumonia / Normal / Not diagnostic with notes; always a new row (``xraylab.db.review``).
- **Monitor** (``ui/monitor_tab.py``): the model monitor's state, figures against their limits, alerts and the
  most atypical images.
- Data loads after login, in event handlers: no component's default value holds any, so the page and its
  config carry none. A user reads only the studies of their hospitals (``Principal.scope``); a study outside
  answers as one that does not exist. Every worklist page shown (its filters and the study ids it listed), every
  study opened and every verdict is in the audit trail; logs carry study ids.
- Activity: a doctor's own clicks keep their session alive; the worklist's background refresh does not (an
  unattended workstation signs out after ``SESSION_IDLE_MINUTES``).
- Fairness: events run ``EVENT_CONCURRENCY`` at a time with a bounded queue (``EVENT_QUEUE_MAX``), and
  ``ui/access.py`` limits the rate of one session's events, so that a flooding client does not hold up others.

No ``from __future__ import annotations`` here: Gradio finds the ``gr.Request`` parameter of an event handler
by its evaluated annotation.
"""

import hashlib
import html
import logging
import os
import re
import time
from datetime import date, datetime
from typing import Any

from xraylab.accounts import AccessPolicy, Principal, touch_session
from xraylab.bands import BAND_ORDER
from xraylab.db.review import (
    MAX_NOTES,
    InvalidVerdictError,
    StudyNotFoundError,
    WorklistFilter,
    hospitals,
    record_audit,
    record_verdict,
    study_detail,
    worklist_page,
    worklist_version,
)
from xraylab.db.session import Database
from xraylab.labels import VERDICT_LABELS
from xraylab.registry import SYNTHETIC_NOTICE, RegistryLike, open_registry, read_card, resolve_version
from xraylab.settings import Settings

__all__ = ["build_review_app", "mount_review_app", "WORKLIST_COLUMNS", "trained_on_synthetic", "model_notice"]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
log = logging.getLogger("xraylab.ui")

WORKLIST_COLUMNS = ["Study", "Status", "Risk band", "Score", "Hospital", "Patient", "Patient ID", "Study date"]
SYNTHETIC_MARK = "⚠"  # after a score from a model trained on generated images (the banner says what it means)
ALL = "All"
EVENT_CONCURRENCY = 8  # Gradio events served at once (its default is one: one slow event held up every doctor)
EVENT_QUEUE_MAX = 64  # events waiting beyond those: more are refused ("queue full"), never queued without end
STATUS_CHOICES = {"All": "all", "Unreviewed": "unreviewed", "Reviewed": "reviewed"}

# Shown by the page's own script when the app's API answers 401 (the session ended while the page was open):
# the form keeps what the doctor typed; logging in again in another tab and pressing the button again saves it.
SESSION_SCRIPT = """
<script>
(function () {
  const original = window.fetch;
  function show() {
    if (document.getElementById("session-expired")) return;
    const box = document.createElement("div");
    box.id = "session-expired";
    box.setAttribute("role", "alert");
    box.style.cssText = "position:fixed;top:0;left:0;right:0;z-index:10000;padding:12px 16px;" +
      "background:#a40000;color:#fff;font:16px system-ui,sans-serif;text-align:center";
    box.innerHTML = "Your session has expired: nothing was saved, and what you typed is still in the form. " +
      "<a href='/login?next=/ui/' target='_blank' rel='noopener' style='color:#fff;text-decoration:underline'>" +
      "Log in again</a> (a new tab), then press the button again. " +
      "<button type='button' style='margin-left:12px'>Dismiss</button>";
    box.querySelector("button").onclick = function () { box.remove(); };
    document.body.appendChild(box);
  }
  window.fetch = async function (...args) {
    const response = await original.apply(this, args);
    if (response.status === 401) { show(); }
    return response;
  };
})();
</script>
"""

CSS = """
#study-viewer .viewer { overflow: auto; max-height: 78vh; border: 1px solid #ccc; background: #111; }
#study-viewer img { display: block; max-width: none; }
#worklist table tbody tr { cursor: pointer; }
.synthetic-warning { color: #8a4b00; }
.mon-tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.mon-tile { border-radius: 6px; padding: 8px 10px; min-width: 150px; border-left: 6px solid #888; background: #f6f6f6; }
.mon-ok { border-left-color: #2e7d32; } .mon-warning { border-left-color: #f9a825; background: #fff8e1; }
.mon-critical { border-left-color: #c62828; background: #ffebee; } .mon-none { border-left-color: #bbb; }
.mon-name { font-size: 12px; color: #444; text-transform: capitalize; }
.mon-value { font-size: 22px; font-weight: 600; }
.mon-sub { font-size: 11px; color: #555; }
.mon-atypical-row { display: flex; flex-wrap: wrap; gap: 8px; }
.mon-atypical { margin: 0; width: 160px; font-size: 11px; }
.mon-atypical img { width: 160px; height: 160px; object-fit: cover; background: #111; }
"""


_SERVING: dict[str, tuple[float, str]] = {}  # registry location -> (when read, the version it serves)
SERVING_TTL_S = 5.0  # as often as the Classifier looks for a promotion: a page render is not an S3 request


def _serving_version(registry: RegistryLike) -> str:
    key = str(registry)
    now = time.monotonic()
    cached = _SERVING.get(key)
    if cached is None or now - cached[0] > SERVING_TTL_S:
        cached = _SERVING[key] = (now, resolve_version(registry))  # the promoted one, else the newest
    return cached[1]


def model_notice(registry: RegistryLike | None, version: str | None) -> str:
    """The notice of ``version``'s card (None: the one serving): the synthetic warning, or what real data it
    learnt from and that it is for research use only. The synthetic warning when unknown (no registry, no such
    version, a registry that does not answer). Cards are read once (an S3 registry caches them on the node), the
    serving version at most every ``SERVING_TTL_S``."""
    if registry is None:
        return SYNTHETIC_NOTICE
    try:
        return read_card(registry, version or _serving_version(registry)).notice
    except Exception:
        return SYNTHETIC_NOTICE


def trained_on_synthetic(registry: RegistryLike | None, version: str | None) -> bool:
    """Whether ``version`` (None: the one serving) learnt from generated images; True when unknown."""
    return model_notice(registry, version) == SYNTHETIC_NOTICE


def _parse_date(text: str | None, name: str) -> date | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD, not {text[:20]!r}") from None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _status(row: dict[str, Any]) -> str:
    reviewers = row.get("reviewers") or {}
    if not reviewers:
        return "Unreviewed"
    return "Reviewed: " + ", ".join(f"{name} ({label})" for name, label in reviewers.items())


class ReviewActions:
    """What the app's events do, apart from Gradio: each opens its own database session."""

    def __init__(self, db: Database, settings: Settings, images: Any) -> None:
        self.db = db
        self.settings = settings
        self.registry = open_registry(settings)
        self.images = images
        self.policy = AccessPolicy.from_settings(settings)

    def touch(self, user: Principal) -> None:
        """The doctor did something: their session's idle time starts again (a background refresh does not)."""
        with self.db.session() as session:
            touch_session(session, user.session_id, self.policy)

    def score_label(self, row: dict[str, Any]) -> str:
        """The score, marked when the model that gave it learnt from generated images."""
        if row.get("score") is None:
            return "-"
        synthetic = trained_on_synthetic(self.registry, row.get("model_version"))
        return f"{float(row['score']):.3f}" + (f" {SYNTHETIC_MARK}" if synthetic else "")

    def filters(self, hospital: str, band: str, status: str, date_from: str, date_to: str) -> WorklistFilter:
        return WorklistFilter(hospital=None if hospital in (None, "", ALL) else hospital,
                              band=None if band in (None, "", ALL) else band,
                              date_from=_parse_date(date_from, "From"), date_to=_parse_date(date_to, "To"),
                              status=STATUS_CHOICES.get(status, "all"))  # type: ignore[arg-type]

    def page(self, filters: WorklistFilter, page: int, user: Principal, refresh: bool = False,
             unless: str | None = None) -> tuple[list[list[Any]] | None, str | None, int, tuple[Any, ...]]:
        """One page of ``user``'s worklist, and a line of the audit trail: the filters and the studies listed.
        The version returned is the tables' (``worklist_version``) and the page's own digest; ``unless`` that
        digest (a refresh that finds the page as shown), table and info are None and nothing is audited: activity
        at hospitals the user does not read neither redraws their page nor writes their trail."""
        with self.db.session() as session:
            result = worklist_page(session, filters, page, self.settings.WORKLIST_PAGE_SIZE, scope=user.scope)
            table = [[r["id"], _status(r), r.get("band"), self.score_label(r), r.get("hospital"),
                      r.get("patient_name"), r.get("patient_id"), r.get("study_date")] for r in result.rows]
            digest = hashlib.sha256(repr((result.page, result.total, table)).encode()).hexdigest()[:16]
            version = (*worklist_version(session), digest)
            if unless == digest:
                return None, None, result.page, version
            shown = {"hospital": filters.hospital, "band": filters.band, "status": filters.status,
                     "from": filters.date_from, "to": filters.date_to}
            detail = " ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, "all"))
            detail = f"page {result.page}/{result.pages} of {result.total}" + (f" {detail}" if detail else "") \
                + (" (refresh)" if refresh else "")
            record_audit(session, user.name, "list_worklist", detail=detail, listed=[r["id"] for r in result.rows])
        info = (f"Page {result.page} of {result.pages} · {result.total} studies · "
                f"updated {datetime.now().strftime('%H:%M:%S')}")
        return table, info, result.page, version

    def open(self, study_id: int, user: Principal) -> dict[str, Any]:
        with self.db.session() as session:
            detail = study_detail(session, study_id, scope=user.scope)  # raises StudyNotFoundError
            record_audit(session, user.name, "open_study", study_id)
        log.info("user %s opened study %s", user.name, detail["study_uid"])
        return detail

    def save_verdict(self, study_id: int, user: Principal, label: str, notes: str,
                     prediction_id: int | None = None) -> int:
        """Record a verdict; only a doctor's counts as a label (an admin runs the system, not the diagnosis)."""
        if user.role != "doctor":
            raise PermissionError(f"only doctors record verdicts; {user.name} is {user.role}")

        def work(session: Any) -> int:
            verdict_id = record_verdict(session, study_id, user.user_id, label, notes, scope=user.scope,
                                        prediction_id=prediction_id)
            record_audit(session, user.name, "verdict", study_id, f"{label} (verdict {verdict_id})")
            return verdict_id

        verdict_id = self.db.in_transaction(work)
        log.info("user %s recorded verdict %s on study %s", user.name, verdict_id, study_id)
        return verdict_id


def _tag(detail: dict[str, Any], name: str) -> str:
    """A study attribute as Markdown-safe text (the tags come from outside: no markup of theirs)."""
    value = detail.get(name)
    if not value:
        return "-"
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~<>&])", r"\\\1", str(value))  # CommonMark: \ escapes punctuation


def _details_markdown(detail: dict[str, Any], notice: str) -> str:
    score = detail.get("score")
    lines = [f"### Study {detail['id']}: **{detail.get('band') or 'no prediction'}**"]
    if score is not None:
        lines.append(f"- Pneumonia score **{float(score):.3f}** from model `{detail.get('model_version')}`, "
                     f"scored {_when(detail.get('predicted_at'))} UTC")
    lines += [f"- Patient: {_tag(detail, 'patient_name')} (ID {_tag(detail, 'patient_id')})",
              f"- Hospital: {_tag(detail, 'hospital')}; study date {_tag(detail, 'study_date')}; "
              f"received {_when(detail.get('received_at'))} UTC",
              f"- Image: {detail.get('content_type') or '-'}, {detail.get('size_bytes') or '-'} bytes, "
              f"from `{detail.get('endpoint_id') or '-'}`"]
    if detail.get("study_instance_uid") or detail.get("modality"):  # a DICOM study: what its tags say
        lines.append(f"- DICOM: modality {_tag(detail, 'modality')}, view {_tag(detail, 'view_position')}, "
                     f"manufacturer {_tag(detail, 'manufacturer')}; Study Instance UID "
                     f"{_tag(detail, 'study_instance_uid')}")
    if len(detail.get("predictions") or []) > 1:
        lines.append("- Earlier scores: " + "; ".join(
            f"{p['model_version']}: {p['score']:.3f} ({p['band']})" for p in detail["predictions"][:-1]))
    if notice == SYNTHETIC_NOTICE:
        lines.append(f"\n> ⚠️ **{SYNTHETIC_NOTICE}**")
    elif notice:
        lines.append(f"\n> ℹ️ {notice}")
    return "\n".join(lines)


def _history_markdown(verdicts: list[dict[str, Any]]) -> str:
    if not verdicts:
        return "**Verdicts:** none yet."
    lines = ["**Verdicts** (oldest first; a change of mind is a new line):", ""]
    for v in verdicts:
        note = f": {html.escape(v['notes'])}" if v.get("notes") else ""
        lines.append(f"- {_when(v['created_at'])} UTC, **{v['doctor']}**: **{v['label']}**{note}")
    return "\n".join(lines)


def _viewer_html(study_id: int | None, heatmap: bool, zoom: float, state: str | None = "ok") -> str:
    """The picture; ``state`` as ``StudyImages.state`` tells it (``ok``, ``gone``: no longer in its store,
    ``changed``: replaced after the study was scored), or None: the store did not answer."""
    from ui.study_media import heatmap_url, image_url

    if study_id is None:
        return "<p>Click a study in the worklist to open it.</p>"
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
    src = heatmap_url(study_id) if heatmap else image_url(study_id)
    label = "with its Grad-CAM heatmap" if heatmap else "at full resolution"
    return (f"<div class='viewer'><img id='study-img' src='{src}' alt='X-ray of study {study_id} {label}' "
            f"data-heatmap='{int(heatmap)}' style='width:{float(zoom):.0f}%'></div>")


def build_review_app(db: Database, settings: Settings, images: Any, *, title: str = "xraylab review") -> Any:
    """The Blocks. ``images`` is a ``ui.study_media.StudyImages`` (to tell a gone image before showing it)."""
    import gradio as gr

    from ui.access import principal_of
    from ui.monitor_tab import add_monitor_tab

    actions = ReviewActions(db, settings, images)

    def user_of(request: gr.Request) -> Principal:
        principal = principal_of(request)
        if principal is None:  # the middleware lets nobody through without one; this is a second lock
            raise gr.Error("Your session has expired: log in again.")
        return principal

    def banner() -> str:
        notice = model_notice(actions.registry, None)
        if notice == SYNTHETIC_NOTICE:
            return f"> ⚠️ **{SYNTHETIC_NOTICE}** ({SYNTHETIC_MARK} after a score: from such a model.)"
        return (f"> ℹ️ **The serving model: {notice}** ({SYNTHETIC_MARK} after a score: that score came from a "
                "model trained on generated images.)")

    def worklist(hospital: str, band: str, status: str, date_from: str, date_to: str, page: int,
                 request: gr.Request, refresh: bool = False, unless: str | None = None) -> tuple[Any, ...]:
        user = user_of(request)
        if not refresh:
            actions.touch(user)
        try:
            filters = actions.filters(hospital, band, status, date_from, date_to)
        except ValueError as exc:
            return gr.skip(), f"⚠️ {exc}", gr.skip(), gr.skip()
        table, info, page, version = actions.page(filters, int(page or 1), user, refresh, unless)
        if table is None:  # as shown: only the version moves on
            return gr.skip(), gr.skip(), gr.skip(), version
        return table, info, page, version

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        user = user_of(request)
        with db.session() as session:
            choices = [ALL, *hospitals(session, scope=user.scope)]
        table, info, page, version = actions.page(WorklistFilter(), 1, user)
        if user.scope.empty:
            info = ("⚠️ Your account reads no hospital's patients yet: an administrator assigns your hospitals "
                    "(`xraylab users hospitals`).")
        who = (f"<div id='signed-in'>Signed in as <strong>{html.escape(user.name)}</strong> ({user.role}) · "
               f"<span id='reads'>reads {html.escape(user.scope.describe())}</span> · "
               "<a href='/logout'>Log out</a></div>")
        return who, banner(), gr.update(choices=choices, value=ALL), table, info, page, version

    def tick(hospital: str, band: str, status: str, date_from: str, date_to: str, page: int,
             seen: Any, request: gr.Request) -> tuple[Any, ...]:
        user_of(request)
        with db.session() as session:
            version = worklist_version(session)
        if seen is not None and tuple(seen)[:3] == tuple(version):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        shown = seen[3] if seen is not None and len(seen) > 3 else None
        return worklist(hospital, band, status, date_from, date_to, page, request, refresh=True, unless=shown)

    def open_study(study_id: int, heatmap: bool, zoom: float, request: gr.Request) -> tuple[Any, ...]:
        user = user_of(request)
        actions.touch(user)
        try:
            detail = actions.open(study_id, user)
        except StudyNotFoundError:
            message = f"⚠️ Study {study_id} does not exist (or was deleted). Refresh the worklist."
            return None, _viewer_html(None, False, zoom), message, "", 0, "", None, None, "", "ok"
        try:
            state: str | None = images.state(detail)
        except Exception as exc:  # the store cannot be reached: say so, show the rest
            log.warning("study %s: store not reachable: %s", detail["study_uid"], type(exc).__name__)
            state = None
        notice = model_notice(actions.registry, detail.get("model_version"))
        # The verdict form starts empty for each study: a choice made for one is never saved on another.
        return (study_id, _viewer_html(study_id, heatmap, zoom, state), _details_markdown(detail, notice),
                _history_markdown(detail["verdicts"]), len(detail["verdicts"]), "", detail.get("prediction_id"),
                None, "", state)

    def on_select(evt: gr.SelectData, heatmap: bool, zoom: float, request: gr.Request) -> tuple[Any, ...]:
        row = evt.row_value or []
        if not row or row[0] in (None, ""):
            return (gr.skip(),) * 10
        return open_study(int(row[0]), heatmap, zoom, request)

    def redraw(study_id: int | None, heatmap: bool, zoom: float, state: str | None) -> str:
        return _viewer_html(study_id, heatmap, zoom, state)

    def save(study_id: int | None, label: str | None, notes: str, seen: int, prediction_id: int | None,
             hospital: str, band: str, status: str, date_from: str, date_to: str, page: int,
             request: gr.Request) -> tuple[Any, ...]:
        user = user_of(request)
        actions.touch(user)
        keep = (gr.skip(),) * 8
        if study_id is None:
            return ("⚠️ Open a study first.",) + keep
        if label not in VERDICT_LABELS:
            return ("⚠️ Choose Pneumonia, Normal or Not diagnostic first.",) + keep
        if len(notes or "") > MAX_NOTES:
            return (f"⚠️ Notes are {len(notes)} characters; at most {MAX_NOTES}. Nothing was saved.",) + keep
        try:
            verdict_id = actions.save_verdict(int(study_id), user, label, notes, prediction_id)
        except StudyNotFoundError:
            return (f"⚠️ Study {study_id} no longer exists (it was deleted): the verdict could not be saved.",) + keep
        except (InvalidVerdictError, PermissionError) as exc:
            return (f"⚠️ {exc}. Nothing was saved.",) + keep
        except Exception as exc:  # the database is away: the form keeps the verdict, the doctor can retry
            log.warning("verdict on study %s not saved: %s", study_id, type(exc).__name__)
            return ("⚠️ The verdict could not be saved just now (the database did not answer). "
                    "It is still in the form: press Record verdict again.",) + keep
        message = f"Saved: **{label}** on study {study_id} (verdict {verdict_id})."
        try:  # saved already: what follows only redraws, and a failure here must not invite a second save
            with db.session() as session:
                verdicts = study_detail(session, int(study_id), scope=user.scope)["verdicts"]
            table, info, page, version = worklist(hospital, band, status, date_from, date_to, page, request)
        except Exception as exc:
            log.warning("study %s: verdict %s saved, the page not redrawn: %s", study_id, verdict_id,
                        type(exc).__name__)
            return (message + " (The worklist could not be redrawn just now.)", gr.skip(), gr.skip(), None, "",
                    gr.skip(), gr.skip(), gr.skip(), gr.skip())
        others = [v for v in verdicts[seen:] if v["id"] != verdict_id and v["doctor"] != user.name]
        if others:
            message += " Meanwhile " + ", ".join(f"{v['doctor']} recorded {v['label']}" for v in others) + \
                       "; both verdicts are kept."
        return message, _history_markdown(verdicts), len(verdicts), None, "", table, info, page, version

    with gr.Blocks(title=title, fill_width=True) as demo:
        with gr.Row():
            gr.Markdown(f"# {title}\nChest X-ray worklist: unreviewed first, highest pneumonia risk first.")
            signed_in = gr.HTML(elem_id="signed-in-box")
        notice = gr.Markdown(elem_id="synthetic-notice")
        page_state = gr.State(1)
        version_state = gr.State(None)
        study_state = gr.State(None)
        seen_state = gr.State(0)
        prediction_state = gr.State(None)  # the prediction shown with the open study (what a verdict answers)
        available_state = gr.State("ok")  # the open study's picture: ok, gone, changed, None (store away)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Worklist", id="worklist", elem_id="tab-worklist"), gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        hospital = gr.Dropdown([ALL], value=ALL, label="Hospital", elem_id="filter-hospital")
                        band = gr.Dropdown([ALL, *BAND_ORDER], value=ALL, label="Risk band", elem_id="filter-band")
                        status = gr.Radio(list(STATUS_CHOICES), value="All", label="Review", elem_id="filter-status")
                    with gr.Row():
                        date_from = gr.Textbox(label="Study date from", placeholder="YYYY-MM-DD", elem_id="filter-from")
                        date_to = gr.Textbox(label="Study date to", placeholder="YYYY-MM-DD", elem_id="filter-to")
                    table = gr.Dataframe(headers=WORKLIST_COLUMNS, interactive=False, elem_id="worklist",
                                         label="Worklist (click a row to open the study)", wrap=True, max_height=1200,
                                         column_widths=["6%", "22%", "11%", "9%", "11%", "16%", "11%", "14%"])
                    with gr.Row():
                        previous = gr.Button("◀ Previous page", elem_id="page-previous", size="sm")
                        page_info = gr.Markdown(elem_id="page-info")
                        following = gr.Button("Next page ▶", elem_id="page-next", size="sm")
                with gr.Column(scale=2):
                    details = gr.Markdown("Click a study in the worklist to open it.", elem_id="study-details")
                    with gr.Row():
                        heatmap = gr.Checkbox(False, label="Show Grad-CAM heatmap", elem_id="heatmap-toggle")
                        zoom = gr.Slider(50, 400, value=100, step=10, label="Zoom (% of the panel's width)",
                                         elem_id="zoom")
                    viewer = gr.HTML(_viewer_html(None, False, 100), elem_id="study-viewer")
                    history = gr.Markdown(elem_id="verdict-history")
                    verdict = gr.Radio(list(VERDICT_LABELS), label="Your verdict", elem_id="verdict-choice")
                    notes = gr.Textbox(label="Notes (optional)", lines=2, max_length=MAX_NOTES, elem_id="verdict-notes")
                    record = gr.Button("Record verdict", variant="primary", elem_id="record-verdict")
                    message = gr.Markdown(elem_id="verdict-message")
            add_monitor_tab(gr, db, user_of, actions.touch)

        def first_page(h: str, b: str, s: str, f: str, t: str, request: gr.Request) -> tuple[Any, ...]:
            return worklist(h, b, s, f, t, 1, request)

        def page_before(h: str, b: str, s: str, f: str, t: str, p: int, request: gr.Request) -> tuple[Any, ...]:
            return worklist(h, b, s, f, t, max(1, int(p) - 1), request)

        def page_after(h: str, b: str, s: str, f: str, t: str, p: int, request: gr.Request) -> tuple[Any, ...]:
            return worklist(h, b, s, f, t, int(p) + 1, request)

        filters = [hospital, band, status, date_from, date_to]
        listing = [table, page_info, page_state, version_state]
        demo.load(on_load, None, [signed_in, notice, hospital, table, page_info, page_state, version_state])
        for control in (hospital, band, status):
            control.input(first_page, filters, listing)
        for box in (date_from, date_to):
            box.submit(first_page, filters, listing)
            box.blur(first_page, filters, listing)
        previous.click(page_before, [*filters, page_state], listing)
        following.click(page_after, [*filters, page_state], listing)
        gr.Timer(settings.WORKLIST_REFRESH_S).tick(tick, [*filters, page_state, version_state], listing,
                                                   show_progress="hidden")
        opened = [study_state, viewer, details, history, seen_state, message, prediction_state, verdict, notes,
                  available_state]
        table.select(on_select, [heatmap, zoom], opened)
        heatmap.change(redraw, [study_state, heatmap, zoom, available_state], viewer)
        zoom.release(redraw, [study_state, heatmap, zoom, available_state], viewer)
        record.click(save, [study_state, verdict, notes, seen_state, prediction_state, *filters, page_state],
                     [message, history, seen_state, verdict, notes, table, page_info, page_state, version_state])
    demo.queue(default_concurrency_limit=EVENT_CONCURRENCY, max_size=EVENT_QUEUE_MAX)
    return demo


def mount_review_app(app: Any, db: Database, settings: Settings) -> Any:
    """The review app at ``/ui`` on ``app`` (which ``ui.access.install_access`` guards), with the study
    pictures' routes. Returns the app."""
    import gradio as gr

    from ui.access import UI_PATH, principal_of
    from ui.study_media import HeatmapMaker, StudyImages, media_router

    images = StudyImages(settings)
    heatmaps = HeatmapMaker(db, open_registry(settings), images, settings.image_limits())
    app.include_router(media_router(db, images, heatmaps))
    demo = build_review_app(db, settings, images)

    def user_name(request: Any) -> str | None:  # Gradio's own check of its routes, behind the middleware's
        principal = principal_of(request)
        return principal.name if principal else None

    return gr.mount_gradio_app(app, demo, path=UI_PATH, auth_dependency=user_name, footer_links=[],
                               ssr_mode=False, css=CSS, head=SESSION_SCRIPT, theme=gr.themes.Default(
                                   font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]))
