"""Commands of the ingest layer: ``xraylab upload`` (the simulated hospital) and ``xraylab notifier run``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from xraylab.cli import DatabaseOption, fail, setup_logging
from xraylab.settings import load_settings

__all__ = ["register"]

notifier_app = typer.Typer(help="The SeaweedFS -> Kafka and PACS -> Kafka event notifiers.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic: what was refused and why; replay after a fix.",
                      no_args_is_help=True)

ReasonOption = Annotated[list[str] | None, typer.Option("--reason", help="only dead letters with this reason")]
OffsetOption = Annotated[list[str] | None, typer.Option("--offset", help="only this dead letter: PARTITION:OFFSET")]


def register(root: typer.Typer) -> None:
    root.command("upload")(upload)
    root.add_typer(notifier_app, name="notifier")
    root.add_typer(dlq_app, name="dlq")


def upload(
    paths: Annotated[list[Path] | None, typer.Argument(help="image files; none = generate --count images")] = None,
    count: int = 20, bucket: str = "", hospital: str = "st-mary", seed: int = 0,
    drift: Annotated[str, typer.Option(help="inject drift into generated images: blur, transpose, brightness "
                                            "or noise")] = "",
    drift_strength: Annotated[float | None, typer.Option(help="how strong the drift is, in (0, 1] (default 1)")] = None,
    drift_hospital: Annotated[list[str] | None, typer.Option(help="only at this hospital (repeatable)")] = None,
    label_fraction: Annotated[float, typer.Option(help="share of generated uploads a stand-in doctor labels, "
                                                       "once they are scored")] = 0.0,
    label_error_rate: Annotated[float, typer.Option(help="share of those verdicts that are wrong")] = 0.0,
    label_timeout: Annotated[float, typer.Option(help="seconds to wait for the scores")] = 300.0,
    database: DatabaseOption = "default",
    dicom: Annotated[bool, typer.Option("--dicom", help="generate DICOM files (patient data in the tags)")] = False,
    syntax: Annotated[str, typer.Option(help="their transfer syntax: explicit, implicit, rle, jpeg2000, "
                                             "jpeg2000-lossless or jpeg-baseline")] = "explicit",
    bits: Annotated[int, typer.Option(help="their bits per pixel: 8, or 16 (12 stored, with a window)")] = 8,
    monochrome1: Annotated[bool, typer.Option("--monochrome1", help="stored inverted (MONOCHROME1)")] = False,
    burn_in: Annotated[bool, typer.Option("--burn-in", help="the patient's name and id burned into the pixels "
                                                            "too")] = False,
    to_pacs: Annotated[bool, typer.Option("--to-pacs", help="send DICOM to the PACS by C-STORE (as the modality "
                                                            "XRAYLAB_MODALITY_AET) instead of to S3")] = False,
) -> None:
    """Upload X-ray images with study metadata to the source bucket, or send DICOM to the PACS (the simulated
    hospital)."""
    setup_logging()
    from ingest.dicom_files import TRANSFER_SYNTAXES
    from ingest.uploader import DicomOptions, Drift, send_generated_to_pacs, upload_files, upload_generated
    from xraylab.storage import make_s3_client

    settings = load_settings()
    try:
        if to_pacs and not dicom and not paths:
            raise ValueError("--to-pacs sends DICOM: add --dicom, or name DICOM files")
        if syntax not in TRANSFER_SYNTAXES:
            raise ValueError(f"--syntax {syntax!r}: one of {', '.join(TRANSFER_SYNTAXES)}")
        if bits not in (8, 16) or (bits == 16 and syntax == "jpeg-baseline"):
            raise ValueError("--bits is 8 or 16, and JPEG baseline holds 8")
        options = DicomOptions(syntax, bits, "MONOCHROME1" if monochrome1 else "MONOCHROME2", burn_in)
        if paths and (dicom or monochrome1 or burn_in):
            raise ValueError("--dicom, --monochrome1 and --burn-in apply to generated images, not to files")
        if not drift and (drift_strength is not None or drift_hospital):
            raise ValueError("--drift-strength and --drift-hospital need --drift")
        injected = Drift(drift, drift_strength or 1.0, frozenset(drift_hospital or ())) if drift else None
        if not 0.0 <= label_fraction <= 1.0 or not 0.0 <= label_error_rate <= 1.0:
            raise ValueError("--label-fraction and --label-error-rate are shares in [0, 1]")
        if paths and (injected or label_fraction):
            raise ValueError("--drift and --label-fraction apply to generated images, not to files")
    except ValueError as exc:
        raise fail(str(exc)) from None
    if to_pacs:
        from ingest.pacs_sender import PacsSendError, PacsTarget, send_to_pacs
        from xraylab.orthanc import PACS_BUCKET

        target = PacsTarget.from_settings(settings)
        try:
            if paths:
                from xraylab.dicom import is_dicom

                files = [p.read_bytes() for p in paths]
                if not_dicom := [str(p) for p, data in zip(paths, files, strict=True) if not is_dicom(data)]:
                    raise ValueError(f"not DICOM Part 10 files: {', '.join(not_dicom[:5])}")
                sent = send_to_pacs(files, target)
                print(f"sent {len(sent)} DICOM files to the PACS {target.called_aet}")
                return
            done = send_generated_to_pacs(target, count, dicom=options, seed=seed, drift=injected)
        except (PacsSendError, OSError, ValueError) as exc:
            raise fail(f"PACS: {exc}") from None
        bucket = PACS_BUCKET
        print(f"sent {len(done)} DICOM studies to the PACS {target.called_aet}"
              + (f" with {drift} drift" if injected else ""))
    else:
        client = make_s3_client(settings.s3_endpoint(None, "upload"))
        bucket = bucket or settings.S3_BUCKET
        if paths:
            done = upload_files(client, bucket, paths, hospital=hospital, seed=seed)
        else:
            done = upload_generated(client, bucket, count, seed=seed, drift=injected,
                                    dicom=options if dicom else None)
        print(f"uploaded {len(done)} {'DICOM files' if dicom else 'images'} to s3://{bucket}"
              + (f" with {drift} drift" if injected else ""))
    if label_fraction > 0:
        from ingest.standin_doctor import record_standin_verdicts
        from xraylab.db.session import Database

        report = record_standin_verdicts(Database(settings.database_url(database)), bucket, done,
                                         fraction=label_fraction, error_rate=label_error_rate, seed=seed,
                                         timeout_s=label_timeout)
        print(f"stand-in doctor: {report.labelled} verdicts ({report.wrong} wrong on purpose), "
              f"{report.not_scored} not scored within {label_timeout:.0f}s")


@notifier_app.command("run")
def notifier_run(
    source: Annotated[str, typer.Option(help="'seaweedfs' (the S3 store's filer) or 'pacs' (Orthanc's "
                                             "/changes)")] = "seaweedfs",
) -> None:
    """Follow the SeaweedFS filer, or the PACS's change log, and produce S3 event JSON to Kafka until stopped."""
    setup_logging()
    import signal

    from ingest.notifier import SeaweedNotifier
    from ingest.pacs_notifier import PacsNotifier

    if source not in ("seaweedfs", "pacs"):
        raise fail(f"--source {source!r}: 'seaweedfs' or 'pacs'")
    notifier = SeaweedNotifier(load_settings()) if source == "seaweedfs" else PacsNotifier(load_settings())
    signal.signal(signal.SIGTERM, lambda *_: notifier.stop_event.set())
    try:
        notifier.run()
    except KeyboardInterrupt:
        notifier.stop_event.set()


def _known(reasons: list[str] | None) -> list[str]:
    """The --reason values, each a dead-letter reason (exit 2 naming the known ones otherwise)."""
    from xraylab.cli import fail
    from xraylab.errors import RejectReason

    unknown = [r for r in reasons or [] if r not in RejectReason.__members__.values()]
    if unknown:
        raise fail(f"unknown reason {', '.join(unknown)}; one of: {', '.join(sorted(RejectReason))}")
    return reasons or []


@dlq_app.command("list")
def dlq_list(reason: ReasonOption = None, offset: OffsetOption = None,
             as_json: Annotated[bool, typer.Option("--json", help="one JSON document per line")] = False) -> None:
    """The dead letters on the topic, oldest first, and how many there are of each reason."""
    import json
    from collections import Counter

    from kafka.errors import KafkaError

    from ingest.dlq import read_dead_letters
    from xraylab.cli import fail

    try:
        entries = read_dead_letters(load_settings(), reasons=_known(reason), offsets=offset or ())
    except (TimeoutError, ValueError, KafkaError) as exc:
        raise fail(str(exc)) from None
    for entry in entries:
        doc = entry.doc
        if as_json:
            print(json.dumps({"dlq": entry.where, **doc}, ensure_ascii=False))
            continue
        truncated = " (original truncated)" if (doc.get("original") or {}).get("truncated") else ""
        print(f"{entry.where:>8}  {str(doc.get('failed_at', ''))[:19]}  {entry.reason:<18} "
              f"tries={doc.get('attempts') or '-'}  {doc.get('object_key') or '(event)'}  "
              f"{str(doc.get('detail', ''))[:100]}{truncated}")
    counts = Counter(entry.reason for entry in entries)
    summary = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"
    print(f"{len(entries)} dead letters: {summary}", file=sys.stderr if as_json else sys.stdout)


@dlq_app.command("replay")
def dlq_replay(reason: ReasonOption = None, offset: OffsetOption = None,
               replay_all: Annotated[bool, typer.Option("--all", help="every dead letter on the topic")] = False,
               dry_run: Annotated[bool, typer.Option(help="say what would be sent, send nothing")] = False) -> None:
    """Send dead letters' original events through the pipeline again (after a fix). Idempotent: an object
    already stored is counted as a duplicate, never stored twice."""
    from kafka.errors import KafkaError

    from ingest.dlq import read_dead_letters, replay
    from xraylab.cli import fail

    if not (reason or offset or replay_all):
        raise fail("say which dead letters to replay: --reason REASON, --offset PARTITION:OFFSET, or --all")
    settings = load_settings()
    try:
        entries = read_dead_letters(settings, reasons=_known(reason), offsets=offset or ())
        result = replay(settings, entries, dry_run=dry_run)
    except (TimeoutError, ValueError, KafkaError) as exc:
        raise fail(str(exc)) from None
    for refusal in result.refused or []:
        print(f"not replayed: {refusal}", file=sys.stderr)
    verb = "would send" if dry_run else "sent"
    print(f"{verb} {result.events} events for {result.dead_letters} of {len(entries)} dead letters "
          f"to {settings.KAFKA_TOPIC}")
