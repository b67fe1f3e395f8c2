"""Commands of the ingest layer: ``xraylab upload`` (the simulated hospital) and ``xraylab notifier run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xraylab.cli import setup_logging
from xraylab.settings import load_settings

__all__ = ["register"]

notifier_app = typer.Typer(help="The SeaweedFS -> Kafka S3 event notifier.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.command("upload")(upload)
    root.add_typer(notifier_app, name="notifier")


def upload(
    paths: Annotated[list[Path] | None, typer.Argument(help="image files; none = generate --count images")] = None,
    count: int = 20, bucket: str = "", hospital: str = "st-mary", seed: int = 0,
) -> None:
    """Upload X-ray images with study metadata to the source bucket (the simulated hospital)."""
    setup_logging()
    from ingest.uploader import upload_files, upload_generated
    from xraylab.storage import make_s3_client

    settings = load_settings()
    client = make_s3_client(settings.s3_endpoint(None))
    bucket = bucket or settings.S3_BUCKET
    if paths:
        done = upload_files(client, bucket, paths, hospital=hospital, seed=seed)
    else:
        done = upload_generated(client, bucket, count, seed=seed)
    print(f"uploaded {len(done)} images to s3://{bucket}")


@notifier_app.command("run")
def notifier_run() -> None:
    """Follow the SeaweedFS filer and produce S3 event JSON to Kafka until stopped."""
    setup_logging()
    import signal

    from ingest.notifier import SeaweedNotifier

    notifier = SeaweedNotifier(load_settings())
    signal.signal(signal.SIGTERM, lambda *_: notifier.stop_event.set())
    try:
        notifier.run()
    except KeyboardInterrupt:
        notifier.stop_event.set()
