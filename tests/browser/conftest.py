"""One headless Chromium for all the browser tests of this package.

Package scope, not session: Playwright's sync API runs an event loop in the main thread while it is
open, and every later test that calls asyncio.run() (or starts its own Playwright) would fail."""

from __future__ import annotations

import pytest

from tests.browser.chromium import CHROMIUM_ARGS, chromium


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()
