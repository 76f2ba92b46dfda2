"""One headless Chromium for all the browser tests."""

from __future__ import annotations

import pytest

from tests.browser.chromium import CHROMIUM_ARGS, chromium


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()
