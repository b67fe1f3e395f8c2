"""The ``xraylab`` console script: one thin root above every layer, gathering each layer's commands.

Layers, each importing only those below it::

    xraylab_cli   this root
    serve_app     the Serve app, and launch/demo, which run it with the ingest actor beside it
    ingest, ui, train, delivery
    xraylab       the shared package (settings, messages, db, imaging, events, registry, storage)

Heavy imports (Ray, TensorFlow, Gradio) happen inside the commands, so ``xraylab cluster status``
stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from delivery import cli as delivery_cli
from ingest import cli as ingest_cli
from serve_app import cli as serve_cli
from train import cli as train_cli
from ui import cli as ui_cli
from xraylab import cli as shared_cli

__all__ = ["app", "main"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

app = typer.Typer(help="xraylab: chest X-ray pneumonia triage on Ray Serve.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
for layer in (shared_cli, train_cli, ingest_cli, ui_cli, delivery_cli, serve_cli):
    layer.register(app)


def main() -> None:
    """The console script: ``app``, with a job this process holds no credentials for (S3 or Kafka) said in one
    line and exit 2, whichever command reached for it, instead of a traceback."""
    from xraylab.settings import MissingCredentialsError

    try:
        app()
    except MissingCredentialsError as exc:
        sys.exit(shared_cli.fail(str(exc)).exit_code)  # "error: ..." on stderr, exit 2, as every command's own
