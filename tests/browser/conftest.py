"""One headless Chromium for all the browser tests."""

from __future__ import annotations

import pytest

from tests.browser.chromium import CHROMIUM_ARGS, chromium


@pytest.fixture(scope="package")  # not the session: an open sync_playwright keeps an asyncio loop running on
def browser():                    # the main thread, and later tests' asyncio.run() or own Playwright would fail
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()
