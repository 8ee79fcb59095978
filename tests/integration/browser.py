"""Headless Chromium for the web app's browser tests: Debian's /usr/bin/chromium driven by Playwright.

Nothing here downloads a browser (never `playwright install`). Where the binary is missing the tests
skip with the reason, except in CI (CI=true), where .ci/run installs it and its absence is a failure.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Where the tests leave screenshots: HWM_SCREENSHOT_DIR (docs/screenshots/ is refreshed from it), or none.
SCREENSHOT_DIR = os.environ.get("HWM_SCREENSHOT_DIR")


def require_chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    reason = f"Debian's chromium is not installed ({CHROMIUM}); apt-get install chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (.ci/run installs it in CI)")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium browser (Playwright's sync API)."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """JavaScript errors and console errors of a page (CSP violations show up here too)."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)


def screenshot(page, name: str, full_page: bool = True) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=full_page)


def log_in(page, base_url: str, username: str, password: str, path: str = "/") -> None:
    page.goto(base_url + path)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
