"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# flags for a closed network: no background fetches, no sandbox (root), no GPU
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (.ci/run installs it)"
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def test_dashboard_shows_rows_live(server: ServerProcess, browser: Any) -> None:
    with server.client() as client:
        client.insert("events", [{"p": 1, "i": i} for i in range(3)])
        client.analysis(
            "latest_notes",
            "SELECT note, count(*) AS n FROM events WHERE note IS NOT NULL GROUP BY note "
            "ORDER BY note",
            on_change=True,
            min_interval=0,
        )
        client.analysis("broken", "SELECT CAST(note AS INTEGER) AS x FROM events", every=0.2)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector('#tables tr[data-table="events"] td.rows', timeout=10_000)
        card = '.card[data-name="latest_notes"]'
        page.wait_for_selector(f"{card}[data-version]", timeout=10_000)

        client.insert("events", {"p": 9, "i": 1, "note": "hello from the API"})
        started = time.monotonic()
        page.wait_for_selector(f'{card} td:text-is("hello from the API")', timeout=2_000)
        appeared = time.monotonic() - started
        assert appeared < 2.0

        client.insert("events", {"p": 9, "i": 2, "note": "not a number"})
        page.wait_for_selector('.card[data-name="broken"] .error', timeout=5_000)
        assert "Conversion" in page.inner_text('.card[data-name="broken"] .error')
        page.wait_for_selector(f"{card} svg.bar-chart rect.bar", timeout=5_000)
        page.wait_for_function(
            "document.querySelector('#tables tr[data-table=\"events\"] td.rows')"
            ".textContent === '5'",
            timeout=5_000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.close()
    assert problems == []


def test_dashboard_with_a_token(tmp_path: Path, browser: Any) -> None:
    process = ServerProcess(tmp_path / "secret.duckdb", token="t0ken-t0ken-t0ken")
    try:
        with process.client() as client:
            client.analysis("n", "SELECT 42 AS answer", every=60)
        page = browser.new_page()
        page.goto(process.url + "/?access_token=t0ken-t0ken-t0ken")
        page.wait_for_selector('.card[data-name="n"] td:text-is("42")', timeout=10_000)
        page.goto(process.url + "/")
        assert "AuthenticationError" in page.inner_text("body")
        page.close()
    finally:
        assert process.stop() == 0
