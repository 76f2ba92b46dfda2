"""Driving Debian's Chromium (headless, through Playwright, no browser download) for the browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_MS = 20_000
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def chromium() -> str:
    """Debian's Chromium; a missing one fails the test (setup installs it), it is never a skip."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium package)")
    return str(CHROMIUM)


def open_page(browser: Any, url: str, **context_kw: Any) -> Any:
    """A page on `url` with its console errors and uncaught exceptions collected in page.errors (a
    console error names the resource it is about, e.g. one that failed to load)."""
    page = browser.new_context(**context_kw).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text} ({m.location.get('url', '')})")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.goto(url)
    page.errors = errors
    return page


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """The whole page (or what the viewport shows: a modal dialog's backdrop covers only that) as
    tests/artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(shot), full_page=full_page)
    print(f"\nscreenshot: {shot}")
    return shot
