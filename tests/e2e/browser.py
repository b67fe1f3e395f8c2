"""Driving the review app in Debian's Chromium (Playwright) as a person does: shared by the browser tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def launch_chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def log_in(page: Any, url: str, name: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/ui/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#signed-in")).to_contain_text(name, timeout=30000)
