"""Real-browser tests of the cart page: Debian's chromium driven by Playwright, against a whole
private Cartstream (tests/e2e/conftest.py's make_system) with the sample catalog loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, System, _running, make_system

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SAMPLE_CATALOG = ROOT / "connectors" / "data" / "sample-catalog.jsonl"


def load_catalog(system: System, path: Path) -> None:
    """`cartstream catalog load` of a file into this system's product topic."""
    subprocess.run([sys.executable, "-m", "cartstream", "catalog", "load", str(path)],
                   cwd=ROOT, env=system.env, check=True, capture_output=True, timeout=120)


def wait_for_catalog(system: System, count: int, headers: dict[str, str] | None = None,
                     timeout_s: float = 60) -> None:
    """Wait until the read API lists `count` products (the catalog sink has landed them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = requests.get(f"{system.read_url}/api/v1/products", params={"limit": 100},
                            headers=headers, timeout=5)
        if resp.ok and len(resp.json()["items"]) >= count:
            return
        assert time.monotonic() < deadline, f"the catalog never landed: {resp.text[:200]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def system(endpoints, tmp_path_factory) -> Iterator[System]:
    """A running dev-profile Cartstream with the sample catalog."""
    sys_ = make_system(endpoints, tmp_path_factory.mktemp("cartstream-browser"))
    for running in _running(sys_):
        load_catalog(running, SAMPLE_CATALOG)
        wait_for_catalog(running, len(SAMPLE_CATALOG.read_text().splitlines()))
        yield running


# Per module, not per session: Playwright's sync API runs an event loop in this thread while
# it is open, and later tests that call asyncio.run() in the same process would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless chromium (the system package: Playwright's own download is not reachable)."""
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium")
    with sync_playwright() as pw:
        # --no-sandbox: the tests may run as root, where chromium's sandbox refuses to start.
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser) -> Iterator[object]:
    """A fresh browser profile (cookies, storage) per test, at phone width."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        yield ctx
    finally:
        ctx.close()
