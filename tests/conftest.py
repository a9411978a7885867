"""Fixtures shared by the browser tests (the docs site and JupyterLab)."""
import shutil

import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.fixture(scope='module')
def browser():
    "Headless system Chromium driven by Playwright (no browser download)."
    if CHROMIUM is None: pytest.fail("Chromium is not installed: run `make browser` (installs the distribution's package)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                                               '--disable-component-update', '--disable-sync', '--no-first-run'])
        yield b
        b.close()
