"""The running system for the end-to-end tests: one pipeline per test module, on the project's MariaDB."""

from __future__ import annotations

import pytest

from serve_app.app import AppArgs
from xraylab.monitor.reference import REFERENCE_FILE
from xraylab.registry import list_cards, resolve_version


def running_pipeline(settings):  # -> Iterator[serve_app.launch.Pipeline]
    """A pipeline on ``settings`` for the length of a module (the model trained first where there is none)."""
    from serve_app.launch import start_pipeline

    if not list_cards(settings.model_dir) or not (settings.model_dir / resolve_version(settings.model_dir)
                                                  / REFERENCE_FILE).exists():  # the monitor needs it
        from train.bootstrap import train_bootstrap_model

        train_bootstrap_model(settings.model_dir)
    pipe = start_pipeline(settings, AppArgs(database="mariadb"))
    yield pipe
    pipe.stop()


@pytest.fixture(scope="module")
def pipeline(settings, mariadb):
    yield from running_pipeline(settings)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright."""
    from tests.e2e.browser import launch_chromium

    yield from launch_chromium()
