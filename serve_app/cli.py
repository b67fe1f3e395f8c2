"""Commands that run the system: ``xraylab serve run`` and ``xraylab demo``. The orchestration they
call lives in ``serve_app/launch.py`` and ``serve_app/demo.py``."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated, Any

import typer

from xraylab.cli import DatabaseOption, setup_logging
from xraylab.settings import load_settings

__all__ = ["register"]

serve_app_cli = typer.Typer(help="The Ray Serve application.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    from serve_app.monitor_cli import monitor_cli

    root.add_typer(serve_app_cli, name="serve")
    root.add_typer(monitor_cli, name="monitor")
    root.command("demo")(demo)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_forever(pipeline: Any) -> None:
    # Ctrl-C and `kill` both stop cleanly, even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        pipeline.stop()


@serve_app_cli.command("run")
def serve_run(database: DatabaseOption = "default", ingest: bool = True, ui: bool = True,
              model_version: str = "", num_gpus: float = 0.0,
              address: Annotated[str, typer.Option(
                  help="a running Ray cluster to deploy on (`ray start --head`'s address, or 'auto'); "
                       "default: a Ray of its own")] = "") -> None:
    """Run the Serve app (and the Kafka ingest actors) until Ctrl-C. Run `xraylab db upgrade` first."""
    setup_logging()
    from serve_app.app import AppArgs
    from serve_app.launch import start_pipeline

    args = AppArgs(database=database, mount_ui=ui, model_version=model_version, classifier_num_gpus=num_gpus)
    pipeline = start_pipeline(load_settings(), args, ingest=ingest, address=address)
    print(f"serving at {pipeline.url} (UI at {pipeline.url}/ui); Ctrl-C to stop")
    _wait_forever(pipeline)


def demo(count: int = 24, database: DatabaseOption = "default", timeout_s: float = 300.0, seed: int = -1,
         serve_forever: Annotated[bool, typer.Option(help="keep serving the UI until Ctrl-C")] = True) -> None:
    """Bootstrap a model if none, run the pipeline, upload COUNT generated X-rays, summarise, serve the UI."""
    setup_logging()
    from serve_app.demo import run_demo

    settings = load_settings()
    pipeline, summary = run_demo(settings, count=count, database=database, timeout_s=timeout_s,
                                 seed=seed if seed >= 0 else int(time.time()))
    print("\n" + "\n".join(summary.lines()))
    if not summary.complete:
        print(f"error: only {summary.stored}/{count} predictions within {timeout_s:.0f}s", file=sys.stderr)
        pipeline.stop()
        raise typer.Exit(1)
    login_file = settings.STATE_DIR / "demo-login.txt"
    where = f"user and password in {login_file}" if login_file.exists() else "your accounts (xraylab users list)"
    print(f"\nReview app: {pipeline.url}/ui  ({where})")
    if serve_forever:
        print("Ctrl-C to stop.")
        _wait_forever(pipeline)
    else:
        pipeline.stop()
