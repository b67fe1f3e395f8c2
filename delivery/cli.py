"""``xraylab outbox``: the results waiting for, sent to or refused by each PACS and RIS (``xraylab.db.outbox``),
and the deliverer run in the foreground (the Serve app runs it as an actor of its own)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from xraylab.cli import DatabaseOption, fail, open_database, operator_name, setup_logging
from xraylab.settings import load_settings

__all__ = ["register"]

outbox_app = typer.Typer(help="Results to the PACS and the RIS (the delivery outbox).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def outbox_list(status: Annotated[str | None, typer.Option(help="queued, sent or failed")] = None,
                destination: Annotated[str | None, typer.Option(help="pacs/<name> or ris/<name>")] = None,
                limit: int = 50, database: DatabaseOption = "default") -> None:
    """The newest deliveries (study row ids, never patient data), then the figures per destination."""
    from xraylab.db import outbox

    if status is not None and status not in outbox.STATUSES:
        raise fail(f"--status is one of {', '.join(outbox.STATUSES)}")
    with open_database(database).session() as session:
        rows = outbox.list_deliveries(session, status=status, destination=destination, limit=limit)
        figures = outbox.summary(session)
    for row in rows:
        when = row["sent_at"] or row["next_attempt_at"]
        print(f"{row['id']}\tstudy={row['study_id']}\t{row['destination']}\t{row['status']}\t"
              f"attempts={row['attempts']}\t{when:%Y-%m-%d %H:%M:%S} UTC\t{row['message_id'] or '-'}\t"
              f"{row['last_error'] or ''}")
    if not rows:
        print("no deliveries", file=sys.stderr)
    for figure in figures:
        lag = f"{figure.oldest_queued_s:.0f}s" if figure.oldest_queued_s is not None else "-"
        median = f"{figure.median_lag_s:.1f}s" if figure.median_lag_s is not None else "-"
        print(f"# {figure.destination}: queued={figure.queued} sent={figure.sent} failed={figure.failed} "
              f"oldest_queued={lag} median_lag_24h={median}", file=sys.stderr)


@outbox_app.command("retry")
def outbox_retry(ids: Annotated[list[int] | None, typer.Argument(help="failed deliveries' ids")] = None,
                 all_failed: Annotated[bool, typer.Option("--all", help="every failed delivery")] = False,
                 destination: Annotated[str | None, typer.Option(help="only this destination's")] = None,
                 database: DatabaseOption = "default") -> None:
    """Queue failed deliveries again (after fixing what refused them): these IDS, or --all (of a --destination)."""
    from xraylab.db import outbox
    from xraylab.db.review import record_audit

    if not ids and not all_failed:
        raise fail("name the failed deliveries' ids, or --all")
    with open_database(database).session() as session:
        count = outbox.requeue(session, ids=ids or (), destination=destination)
        record_audit(session, operator_name(), "outbox_retry",
                     detail=f"{count} queued again" + (f" to {destination}" if destination else ""))
    print(f"{count} deliveries queued again")


@outbox_app.command("run")
def outbox_run(database: DatabaseOption = "default") -> None:
    """Run the deliverer in this process until Ctrl-C (where the Serve app's actor does not run it)."""
    import signal
    import threading

    from delivery.worker import Deliverer
    from xraylab.delivery_config import DeliveryConfig, DeliveryConfigError

    setup_logging()
    settings = load_settings()
    try:
        config = DeliveryConfig.load(settings.DELIVERY_CONFIG, calling_ae_title=settings.DELIVERY_AET)
    except DeliveryConfigError as exc:
        raise fail(str(exc)) from None
    if config.empty:
        raise fail("no destinations: set XRAYLAB_DELIVERY_CONFIG (docs/delivery.md)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("delivering; Ctrl-C to stop", file=sys.stderr)
    Deliverer(settings, open_database(database), config).run(stop)
