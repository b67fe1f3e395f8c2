"""The doctors' review app (Gradio 6 Blocks), mounted at ``/ui`` on the Serve ingress or on ``xraylab ui``'s
own server, behind ``ui/access.py`` (login, sessions, security headers) in both.

- **Worklist**: unreviewed studies first, then by band and score, or sorted by any column's header; search by
  patient name, patient id or accession; filters by hospital, band, study date and review status; pages of
  ``XRAYLAB_WORKLIST_PAGE_SIZE``; refreshed when a prediction or verdict arrives (a timer polls
  ``worklist_version``, three index look-ups). A row opens by click or from the keyboard (arrows, Enter).
- **Reading**: the film large, in the viewer (``ui/viewer``: Cornerstone3D on the stored pixels, with
  window/level, pan, zoom, fit and 1:1, invert, the Grad-CAM layer with its opacity and colour scale), the
  patient's prior studies opened beside it, the study's details and verdict form at its side.
- **Verdict**: Pneumonia / Normal / Not diagnostic with notes (shown exactly as typed); always a new row
  (``xraylab.db.review``); "Record and next" opens the next unreviewed study. Keys in ``ui/viewer/src/main.js``.
- **Monitor** (``ui/monitor_tab.py``): the model monitor's state, figures against their limits, alerts and the
  most atypical images.
- Data loads after login, in event handlers: no component's default value holds any, so the page and its
  config carry none. A user reads only the studies of their hospitals (``Principal.scope``); a study outside
  answers as one that does not exist. Every worklist page shown (its filters and the study ids it listed), every
  study opened, every picture fetched and every verdict is in the audit trail; logs carry study ids.
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
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from ui.review_views import (
    SYNTHETIC_MARK,
    WORKLIST_COLUMNS,
    age_sex,
    details_html,
    history_html,
    hospital_select_html,
    next_sort,
    priors_html,
    reading_html,
    status_text,
    worklist_html,
)
from xraylab.accounts import AccessPolicy, Principal, touch_session
from xraylab.bands import BAND_ORDER
from xraylab.db.review import DEFAULT_SORT as WORKLIST_DEFAULT_SORT
from xraylab.db.review import (
    MAX_NOTES,
    InvalidVerdictError,
    StudyNotFoundError,
    WorklistFilter,
    hospitals,
    next_unreviewed,
    record_audit,
    record_verdict,
    study_detail,
    study_in_scope,
    verdict_history,
    worklist_page,
    worklist_version,
)
from xraylab.db.session import Database
from xraylab.heatmaps import HEAT_LEGEND, colour_scale_css
from xraylab.labels import VERDICT_LABELS
from xraylab.registry import SYNTHETIC_NOTICE, RegistryLike, open_registry, read_card, resolve_version
from xraylab.settings import Settings

__all__ = ["build_review_app", "mount_review_app", "WORKLIST_COLUMNS", "trained_on_synthetic", "model_notice",
           "ReviewActions", "Listing"]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
log = logging.getLogger("xraylab.ui")

ALL = "All"
EVENT_CONCURRENCY = 8  # Gradio events served at once (its default is one: one slow event held up every doctor)
EVENT_QUEUE_MAX = 64  # events waiting beyond those: more are refused ("queue full"), never queued without end
STATUS_CHOICES = {"All": "all", "Unreviewed": "unreviewed", "Reviewed": "reviewed"}
DEFAULT_SORT = (WORKLIST_DEFAULT_SORT, False)  # the worklist's own order, as the database defines it

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
.xl-bridge { display: none !important; }
#app-title { font-size: 15px; } #app-title strong { font-size: 20px; }
#synthetic-notice blockquote { margin: 0; padding: 2px 8px; font-size: 13px; }
.xl-select { display: flex; flex-direction: column; gap: 4px; font-size: 14px; }
.xl-select select { padding: 6px; border: 1px solid #ccc; border-radius: 4px; background: #fff; }
#worklist { overflow-x: auto; }
#worklist-table { width: 100%; border-collapse: collapse; font-size: 14px; }
#worklist-table th, #worklist-table td { padding: 5px 8px; border-bottom: 1px solid #e2e2e2; text-align: left; }
#worklist-table th button { all: unset; cursor: pointer; font-weight: 600; }
#worklist-table th button:focus-visible { outline: 2px solid #1d4e89; }
#worklist-table tbody tr[data-study] { cursor: pointer; }
#worklist-table tbody tr[data-study]:hover { background: #f1f5fb; }
#worklist-table tbody tr:focus { outline: 2px solid #1d4e89; outline-offset: -2px; }
#worklist-table tbody tr.open { background: #dbe8fb; box-shadow: inset 4px 0 0 #1d4e89; }
#worklist-table td.unreviewed { font-weight: 600; }
#filter-warning:empty { display: none; }
#reading-panel { min-height: 60vh; }
.xv-root { display: flex; flex-direction: column; gap: 4px; }
.xv-toolbar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; font-size: 12px; }
.xv-group { display: inline-flex; gap: 3px; align-items: center; }
.xv-label { color: #555; margin-right: 2px; }
.xv-btn { padding: 1px 6px; border: 1px solid #bbb; border-radius: 4px; background: #fff; cursor: pointer;
  font-size: 12px; line-height: 18px; margin: 0; }
.xv-btn[aria-pressed="true"] { background: #1d4e89; color: #fff; border-color: #1d4e89; }
.xv-scale { display: inline-flex; align-items: center; gap: 4px; font-size: 11px; color: #555; }
.xv-scale-bar { display: inline-block; width: 80px; height: 10px; border: 1px solid #999; }
.xv-panes { display: flex; gap: 4px; height: calc(100vh - 300px); min-height: 480px; }
.xv-pane { position: relative; flex: 1 1 0; background: #000; overflow: hidden; }
.xv-pane.xv-active { outline: 2px solid #1d4e89; }
.xv-element { position: absolute; inset: 0; }
.xv-heat { position: absolute; top: 0; left: 0; pointer-events: none; }
.xv-caption { position: absolute; top: 4px; left: 6px; color: #eee; font-size: 12px; pointer-events: none; }
.xv-readout { position: absolute; bottom: 4px; left: 6px; color: #ddd; font: 12px ui-monospace, monospace;
  pointer-events: none; text-shadow: 0 0 2px #000; }
.xv-close { position: absolute; top: 4px; right: 6px; }
.xv-help table { font-size: 13px; } .xv-help th { text-align: left; padding-right: 12px; }
.xv-status:empty, .xv-legend[hidden] { display: none; }
.xv-status { color: #a40000; }
.xv-legend { font-size: 12px; color: #444; }
#verdict-history .note { white-space: pre-wrap; word-break: break-word; margin: 2px 0 6px 12px; color: #333; }
#notes-counter { font-size: 12px; color: #555; text-align: right; }
#notes-counter.over { color: #a40000; font-weight: 600; }
#study-details dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 6px 0; }
#study-details dt { color: #555; } #study-details dd { margin: 0; word-break: break-word; }
#priors ul { list-style: none; padding: 0; margin: 4px 0; }
#priors button.prior { all: unset; cursor: pointer; color: #1d4e89; text-decoration: underline; }
#priors button.prior:focus-visible { outline: 2px solid #1d4e89; }
.synthetic-warning { color: #8a4b00; }
.band { padding: 1px 6px; border-radius: 4px; }
.band-pneumonia { background: #ffebee; color: #8e0000; } .band-unsure { background: #fff8e1; color: #6d4c00; }
.band-normal { background: #e8f5e9; color: #1b5e20; }
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


def _sort_of(sort: Any) -> tuple[str, bool]:
    """The worklist's order as the page's state holds it (a key and a direction; Gradio may hand back a list)."""
    key, descending = tuple(sort) if sort else DEFAULT_SORT
    return str(key), bool(descending)


def _command(value: str | None) -> str:
    """A command from the page's script (``ui/viewer``: ``value|counter``), without its counter."""
    return (value or "").rsplit("|", 1)[0].strip()


class ListVersion(NamedTuple):
    """What a worklist page shows: the tables' version (``worklist_version``), the page's digest, and the filters
    it was listed with."""

    studies: int
    predictions: int
    verdicts: int
    digest: str
    filters: WorklistFilter


@dataclass(frozen=True)
class Listing:
    """One page of a worklist as shown: its rows (as ``ui.review_views.worklist_html`` takes them), the line under
    it, which page of how many, and what it reflects (``ListVersion``)."""

    rows: list[dict[str, Any]] | None  # None: the page is as shown already (a refresh that found nothing new)
    info: str | None
    page: int
    pages: int
    version: ListVersion


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

    def filters(self, search: str, hospital: str, band: str, status: str, date_from: str, date_to: str,
                sort: tuple[str, bool] | list[Any] | None = None) -> WorklistFilter:
        key, descending = _sort_of(sort)
        return WorklistFilter(hospital=None if hospital in (None, "", ALL) else hospital,
                              band=None if band in (None, "", ALL) else band,
                              date_from=_parse_date(date_from, "Study date from"),
                              date_to=_parse_date(date_to, "Study date to"),
                              status=STATUS_CHOICES.get(status, "all"),  # type: ignore[arg-type]
                              search=(search or "").strip() or None, sort=key, descending=descending)

    def page(self, filters: WorklistFilter, page: int, user: Principal, refresh: bool = False,
             unless: str | None = None) -> Listing:
        """One page of ``user``'s worklist, and a line of the audit trail: the filters and the studies listed.
        The version returned is the tables' (``worklist_version``) and the page's own digest; ``unless`` that
        digest (a refresh that finds the page as shown), rows and info are None and nothing is audited: activity
        at hospitals the user does not read neither redraws their page nor writes their trail."""
        with self.db.session() as session:
            result = worklist_page(session, filters, page, self.settings.WORKLIST_PAGE_SIZE, scope=user.scope)
            rows = [{**r, "status": status_text(r), "score_label": self.score_label(r), "age_sex": age_sex(r)}
                    for r in result.rows]
            shown_rows = [[r.get(c.key) for c in WORKLIST_COLUMNS] for r in rows]
            digest = hashlib.sha256(repr((result.page, result.total, shown_rows)).encode()).hexdigest()[:16]
            version = ListVersion(*worklist_version(session), digest, filters)
            if unless == digest:
                return Listing(None, None, result.page, result.pages, version)
            shown = {"search": "yes" if filters.search else None, "hospital": filters.hospital, "band": filters.band,
                     "status": filters.status, "from": filters.date_from, "to": filters.date_to,
                     "sort": None if filters.sort == DEFAULT_SORT[0] else
                     f"{filters.sort}{' desc' if filters.descending else ''}"}
            detail = " ".join(f"{k}={v}" for k, v in shown.items() if v not in (None, "all"))
            detail = f"page {result.page}/{result.pages} of {result.total}" + (f" {detail}" if detail else "") \
                + (" (refresh)" if refresh else "")
            record_audit(session, user.name, "list_worklist", detail=detail, listed=[r["id"] for r in result.rows])
        info = (f"Page {result.page} of {result.pages} · {result.total} studies · "
                f"updated {datetime.now(UTC).strftime('%H:%M:%S')} UTC")
        return Listing(rows, info, result.page, result.pages, version)

    def open(self, study_id: int, user: Principal) -> dict[str, Any]:
        with self.db.session() as session:
            detail = study_detail(session, study_id, scope=user.scope)  # raises StudyNotFoundError
            # The view lists the patient's prior studies too: they are in the trail as shown with this one.
            record_audit(session, user.name, "open_study", study_id, listed=[p["id"] for p in detail["priors"]])
        log.info("user %s opened study %s", user.name, detail["study_uid"])
        return detail

    def next_unreviewed(self, filters: WorklistFilter, after: int, user: Principal) -> int | None:
        """The study "Record and next" opens: the first unreviewed one in this worklist's order but ``after``."""
        with self.db.session() as session:
            return next_unreviewed(session, filters, after, scope=user.scope)

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


def build_review_app(db: Database, settings: Settings, images: Any, *, title: str = "xraylab review") -> Any:
    """The Blocks. ``images`` is a ``ui.study_media.StudyImages`` (to tell a gone image before showing it)."""
    import gradio as gr

    from ui.access import principal_of
    from ui.monitor_tab import add_monitor_tab
    from ui.study_media import heatmap_layer_url, pixels_url

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

    def listed(listing: Listing, sort: Any) -> tuple[Any, ...]:
        """The worklist's outputs: table, page line, page, version, the two page buttons, the filters' warning."""
        if listing.rows is None:  # as shown: only the version moves on
            return gr.skip(), gr.skip(), gr.skip(), listing.version, gr.skip(), gr.skip(), gr.skip()
        return (worklist_html(listing.rows, *_sort_of(sort)), listing.info, listing.page, listing.version,
                gr.update(interactive=listing.page > 1), gr.update(interactive=listing.page < listing.pages), "")

    def worklist(search: str, hospital: str, band: str, status: str, date_from: str, date_to: str, sort: Any,
                 page: int, request: gr.Request, refresh: bool = False, unless: str | None = None) -> tuple[Any, ...]:
        user = user_of(request)
        if not refresh:
            actions.touch(user)
        try:
            filters = actions.filters(search, hospital, band, status, date_from, date_to, sort)
        except ValueError as exc:  # the rows of other filters would mislead: none are shown until it is fixed
            return (worklist_html([], *_sort_of(sort), empty="No studies listed: fix the "
                                  "filter above."), "No studies listed", 1, None, gr.update(interactive=False),
                    gr.update(interactive=False), f"⚠️ {exc}")
        return listed(actions.page(filters, int(page or 1), user, refresh, unless), sort)

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        user = user_of(request)
        with db.session() as session:
            choices = [ALL, *hospitals(session, scope=user.scope)]
        outputs = listed(actions.page(WorklistFilter(), 1, user), DEFAULT_SORT)
        if user.scope.empty:
            outputs = (outputs[0], "⚠️ Your account reads no hospital's patients yet: an administrator assigns your "
                       "hospitals (`xraylab users hospitals`).", *outputs[2:])
        who = (f"<div id='signed-in'>Signed in as <strong>{html.escape(user.name)}</strong> ({user.role}) · "
               f"<span id='reads'>reads {html.escape(user.scope.describe())}</span> · "
               "<a href='/logout'>Log out</a></div>")
        return who, banner(), hospital_select_html(choices, ALL), ALL, *outputs

    def tick(search: str, hospital: str, band: str, status: str, date_from: str, date_to: str, sort: Any, page: int,
             seen: Any, request: gr.Request) -> tuple[Any, ...]:
        user_of(request)
        with db.session() as session:
            version = worklist_version(session)
        if seen is not None and tuple(seen)[:3] == tuple(version):
            return (gr.skip(),) * 7
        return worklist(search, hospital, band, status, date_from, date_to, sort, page, request, refresh=True,
                        unless=seen.digest if seen is not None else None)

    def on_date_left(search: str, hospital: str, band: str, status: str, date_from: str, date_to: str, sort: Any,
                     seen: Any, request: gr.Request) -> tuple[Any, ...]:
        """A date box left: the first page again, unless the list shows these filters already. Leaving a box as it
        was (to type a search, say) must list nothing: that list, of the filters before the search, could come
        back after the search's and replace it."""
        try:
            shown = seen is not None and seen.filters == actions.filters(
                search, hospital, band, status, date_from, date_to, sort)
        except ValueError:
            shown = False
        if shown:
            return (gr.skip(),) * 7
        return worklist(search, hospital, band, status, date_from, date_to, sort, 1, request)

    def open_study(study_id: int, request: gr.Request, message: str = "") -> tuple[Any, ...]:
        """The reading view's outputs: study, panel, details, priors, verdicts, their count, message, prediction,
        the form (emptied: a choice made for one study is never saved on another), and the tab."""
        user = user_of(request)
        actions.touch(user)
        try:
            detail = actions.open(study_id, user)
        except StudyNotFoundError:
            warning = f"⚠️ Study {study_id} does not exist (or was deleted). Refresh the worklist."
            return (None, reading_html(None, "ok"), f"<p>{warning}</p>", "", "", 0, warning, None, None, "",
                    gr.Tabs(selected="reading"))
        try:
            state: str | None = images.state(detail)
        except Exception as exc:  # the store cannot be reached: say so, show the rest
            log.warning("study %s: store not reachable: %s", detail["study_uid"], type(exc).__name__)
            state = None
        notice = model_notice(actions.registry, detail.get("model_version"))
        caption = f"Study {study_id}" + (f", {detail['study_date']}" if detail.get("study_date") else "")
        panel = reading_html(study_id, state, pixels=pixels_url(study_id),
                             heat=heatmap_layer_url(study_id) if detail.get("model_version") else "",
                             caption=caption, scale_css=colour_scale_css(), scale_text=HEAT_LEGEND)
        return (study_id, panel, details_html(detail, notice), priors_html(detail.get("priors") or [], pixels_url),
                history_html(detail["verdicts"]), len(detail["verdicts"]), message, detail.get("prediction_id"),
                None, "", gr.Tabs(selected="reading"))

    def on_open(command: str, request: gr.Request) -> tuple[Any, ...]:
        value = _command(command)
        if not value.isdigit():
            return (gr.skip(),) * 11
        return open_study(int(value), request)

    def on_sort(command: str, sort: Any, search: str, hospital: str, band: str, status: str, date_from: str,
                date_to: str, request: gr.Request) -> tuple[Any, ...]:
        key, descending = next_sort(*_sort_of(sort), _command(command))
        return (key, descending), *worklist(search, hospital, band, status, date_from, date_to, (key, descending), 1,
                                            request)

    def save(go_next: bool, study_id: int | None, label: str | None, notes: str, seen: int,
             prediction_id: int | None, search: str, hospital: str, band: str, status: str, date_from: str,
             date_to: str, sort: Any, page: int, request: gr.Request) -> tuple[Any, ...]:
        """Outputs: the reading view's (``open_study``), then the worklist's (``listed``)."""
        user = user_of(request)
        actions.touch(user)
        keep = (gr.skip(),) * 7

        def refused(text: str) -> tuple[Any, ...]:
            return (*(gr.skip(),) * 6, text, *(gr.skip(),) * 4, *keep)

        if study_id is None:
            return refused("⚠️ Open a study first.")
        if label not in VERDICT_LABELS:
            return refused("⚠️ Choose Pneumonia, Normal or Not diagnostic first (keys P, N, D).")
        if len(notes or "") > MAX_NOTES:
            return refused(f"⚠️ Notes are {len(notes)} characters; at most {MAX_NOTES}. Nothing was saved.")
        try:
            verdict_id = actions.save_verdict(int(study_id), user, label, notes, prediction_id)
        except StudyNotFoundError:
            return refused(f"⚠️ Study {study_id} no longer exists (it was deleted): the verdict could not be saved.")
        except (InvalidVerdictError, PermissionError) as exc:
            return refused(f"⚠️ {exc}. Nothing was saved.")
        except Exception as exc:  # the database is away: the form keeps the verdict, the doctor can retry
            log.warning("verdict on study %s not saved: %s", study_id, type(exc).__name__)
            return refused("⚠️ The verdict could not be saved just now (the database did not answer). "
                           "It is still in the form: press Record verdict again.")
        message = f"Saved: **{label}** on study {study_id} (verdict {verdict_id})."
        try:  # saved already: what follows only redraws, and a failure here must not invite a second save
            with db.session() as session:
                study_in_scope(session, int(study_id), user.scope)
                verdicts = verdict_history(session, int(study_id))
            listing = worklist(search, hospital, band, status, date_from, date_to, sort, page, request)
            try:
                filters = actions.filters(search, hospital, band, status, date_from, date_to, sort)
            except ValueError:  # a filter being fixed (a bad date): the next study is the worklist's first
                filters = WorklistFilter()
            following = actions.next_unreviewed(filters, int(study_id), user) if go_next else None
        except Exception as exc:
            log.warning("study %s: verdict %s saved, the page not redrawn: %s", study_id, verdict_id,
                        type(exc).__name__)
            return (*(gr.skip(),) * 6, message + " (The worklist could not be redrawn just now.)", gr.skip(), None,
                    "", gr.skip(), *keep)
        others = [v for v in verdicts[seen:] if v["id"] != verdict_id and v["doctor"] != user.name]
        if others:
            message += " Meanwhile " + ", ".join(f"{v['doctor']} recorded {v['label']}" for v in others) + \
                       "; both verdicts are kept."
        if following is not None:
            return (*open_study(following, request, message + f" Opened the next unreviewed study, {following}."),
                    *listing)
        if go_next:
            message += " No unreviewed study is left in this worklist."
        return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), history_html(verdicts), len(verdicts), message,
                gr.skip(), None, "", gr.skip(), *listing)

    with gr.Blocks(title=title, fill_width=True) as demo:
        with gr.Row():
            gr.HTML(f"<div id='app-title'><strong>{html.escape(title)}</strong> · chest X-ray worklist, unreviewed "
                    "first, highest pneumonia risk first</div>")
            signed_in = gr.HTML(elem_id="signed-in-box")
        notice = gr.Markdown(elem_id="synthetic-notice")
        page_state = gr.State(1)
        version_state = gr.State(None)
        sort_state = gr.State(DEFAULT_SORT)
        study_state = gr.State(None)
        seen_state = gr.State(0)
        prediction_state = gr.State(None)  # the prediction shown with the open study (what a verdict answers)
        with gr.Row(elem_classes=["xl-bridge"]):  # commands from the page's script (rows, headers: ui/viewer)
            open_command = gr.Textbox(elem_id="open-study", container=False)
            open_go = gr.Button("open", elem_id="open-study-go")
            sort_command = gr.Textbox(elem_id="sort-by", container=False)
            sort_go = gr.Button("sort", elem_id="sort-by-go")
            hospital = gr.Textbox(ALL, elem_id="hospital-value", container=False)  # the hospital list's choice
            hospital_go = gr.Button("hospital", elem_id="hospital-value-go")
        with gr.Tabs(elem_id="tabs", selected="worklist") as tabs:
            with gr.Tab("Worklist", id="worklist", elem_id="tab-worklist"):
                with gr.Row():
                    search = gr.Textbox(label="Search: patient name, patient ID or accession", elem_id="filter-search",
                                        placeholder="e.g. DOE, P-1234 or the accession number; Enter to search",
                                        scale=3)
                    hospital_picker = gr.HTML(hospital_select_html([ALL], ALL), elem_id="filter-hospital")
                    date_from = gr.Textbox(label="Study date from", placeholder="YYYY-MM-DD", elem_id="filter-from")
                    date_to = gr.Textbox(label="Study date to", placeholder="YYYY-MM-DD", elem_id="filter-to")
                with gr.Row():
                    band = gr.Radio([ALL, *BAND_ORDER], value=ALL, label="Risk band", elem_id="filter-band")
                    status = gr.Radio(list(STATUS_CHOICES), value="All", label="Review", elem_id="filter-status")
                filter_warning = gr.Markdown(elem_id="filter-warning")
                table = gr.HTML(elem_id="worklist")
                with gr.Row():
                    previous = gr.Button("◀ Previous page", elem_id="page-previous", size="sm", interactive=False)
                    page_info = gr.Markdown(elem_id="page-info")
                    following = gr.Button("Next page ▶", elem_id="page-next", size="sm", interactive=False)
                gr.Markdown("Keys: Tab to a row, ↑ ↓ to move, Enter to open; J / K open the next / previous row; "
                            "click a column's header to sort by it.", elem_id="worklist-keys")
            with gr.Tab("Reading", id="reading", elem_id="tab-reading"), gr.Row(equal_height=False):
                with gr.Column(scale=7, min_width=480):
                    reading = gr.HTML(reading_html(None, "ok"), elem_id="reading-panel")
                with gr.Column(scale=3, min_width=320):  # the form first: in reach without scrolling
                    verdict = gr.Radio(list(VERDICT_LABELS), label="Your verdict (P, N, D)", elem_id="verdict-choice")
                    notes = gr.Textbox(label="Notes (optional; shown exactly as typed)", lines=2,
                                       elem_id="verdict-notes")
                    gr.HTML(f"<div id='notes-counter' data-limit='{MAX_NOTES}'>0 / {MAX_NOTES} characters</div>")
                    with gr.Row():
                        record_next = gr.Button("Record & next (Enter)", variant="primary", elem_id="record-next")
                        record = gr.Button("Record (Shift+Enter)", elem_id="record-verdict")
                    message = gr.Markdown(elem_id="verdict-message")
                    details = gr.HTML(elem_id="study-details")
                    priors = gr.HTML(elem_id="priors")
                    history = gr.HTML(elem_id="verdict-history")
                    back = gr.Button("◀ Worklist (W)", elem_id="to-worklist", size="sm")
            add_monitor_tab(gr, db, user_of, actions.touch)

        filters = [search, hospital, band, status, date_from, date_to, sort_state]
        listing = [table, page_info, page_state, version_state, previous, following, filter_warning]

        def first_page(q: str, h: str, b: str, s: str, f: str, t: str, o: Any, request: gr.Request) -> tuple[Any, ...]:
            return worklist(q, h, b, s, f, t, o, 1, request)

        def page_before(q: str, h: str, b: str, s: str, f: str, t: str, o: Any, p: int,
                        request: gr.Request) -> tuple[Any, ...]:
            return worklist(q, h, b, s, f, t, o, max(1, int(p) - 1), request)

        def page_after(q: str, h: str, b: str, s: str, f: str, t: str, o: Any, p: int,
                       request: gr.Request) -> tuple[Any, ...]:
            return worklist(q, h, b, s, f, t, o, int(p) + 1, request)

        demo.load(on_load, None, [signed_in, notice, hospital_picker, hospital, *listing])
        for control in (band, status):
            control.input(first_page, filters, listing)
        hospital_go.click(first_page, filters, listing)
        for box in (search, date_from, date_to):
            box.submit(first_page, filters, listing)
        for box in (date_from, date_to):
            box.blur(on_date_left, [*filters, version_state], listing)
        previous.click(page_before, [*filters, page_state], listing)
        following.click(page_after, [*filters, page_state], listing)
        gr.Timer(settings.WORKLIST_REFRESH_S).tick(tick, [*filters, page_state, version_state], listing,
                                                   show_progress="hidden")
        opened = [study_state, reading, details, priors, history, seen_state, message, prediction_state, verdict,
                  notes, tabs]
        open_go.click(on_open, [open_command], opened, show_progress="hidden")
        sort_go.click(on_sort, [sort_command, *filters[-1:], *filters[:-1]], [sort_state, *listing])
        form = [study_state, verdict, notes, seen_state, prediction_state, *filters, page_state]

        def save_next(study: int | None, label: str | None, text: str, seen: int, prediction: int | None, q: str,
                      h: str, b: str, s: str, f: str, t: str, o: Any, p: int, request: gr.Request) -> tuple[Any, ...]:
            return save(True, study, label, text, seen, prediction, q, h, b, s, f, t, o, p, request)

        def save_here(study: int | None, label: str | None, text: str, seen: int, prediction: int | None, q: str,
                      h: str, b: str, s: str, f: str, t: str, o: Any, p: int, request: gr.Request) -> tuple[Any, ...]:
            return save(False, study, label, text, seen, prediction, q, h, b, s, f, t, o, p, request)

        record_next.click(save_next, form, [*opened, *listing])
        record.click(save_here, form, [*opened, *listing])
        back.click(lambda: gr.Tabs(selected="worklist"), None, tabs)
    demo.queue(default_concurrency_limit=EVENT_CONCURRENCY, max_size=EVENT_QUEUE_MAX)
    return demo


def mount_review_app(app: Any, db: Database, settings: Settings) -> Any:
    """The review app at ``/ui`` on ``app`` (which ``ui.access.install_access`` guards), with the study
    pictures' routes, the viewer's script and the Grad-CAM maps computed ahead. Returns the app."""
    import gradio as gr

    from ui.access import UI_PATH, principal_of
    from ui.heatmap_precompute import HeatmapPrecomputer
    from ui.monitor_tab import MONITOR_CSS
    from ui.study_media import HeatmapMaker, StudyImages, media_router
    from ui.viewer_assets import VIEWER_SCRIPT, viewer_router

    images = StudyImages(settings)
    heatmaps = HeatmapMaker(db, open_registry(settings), images, settings.image_limits())
    app.include_router(media_router(db, images, heatmaps))
    app.include_router(viewer_router())
    demo = build_review_app(db, settings, images)
    # Maps of Pneumonia and Unsure studies made ahead, so that a doctor's first toggle finds one (a daemon thread).
    HeatmapPrecomputer.from_settings(db, heatmaps, settings).start()

    def user_name(request: Any) -> str | None:  # Gradio's own check of its routes, behind the middleware's
        principal = principal_of(request)
        return principal.name if principal else None

    head = (f"<link rel='icon' href='/favicon.ico'><script src='{VIEWER_SCRIPT}' defer></script>" + SESSION_SCRIPT)
    return gr.mount_gradio_app(app, demo, path=UI_PATH, auth_dependency=user_name, footer_links=[],
                               ssr_mode=False, css=CSS + MONITOR_CSS, head=head, theme=gr.themes.Default(
                                   font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]))
