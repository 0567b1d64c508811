"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright,
against a real ``duckflock serve`` (uvicorn) subprocess.

Screenshots of each state are kept in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

import conftest
import duckflock
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
# a table in a schema with a dot in its name, whose own name holds quotes and spaces;
# and one in main whose name holds a quote and an apostrophe
ODD_SCHEMA = "odd.schema"
ODD_TABLE = 'say "hi" now'
ODD_NAME = '"odd.schema"."say ""hi"" now"'  # as /v1/tables lists it (and insert takes it)
MAIN_ODD = 'it\'s "quoted"'
READINGS_START = dt.datetime(2026, 1, 5, 9, 0)
HOURLY = (
    "SELECT date_trunc('hour', taken_at) AS hour, avg(temperature) AS temperature, "
    "max(humidity) AS humidity FROM readings GROUP BY 1"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (.ci/run installs it)"
    with playwright_sync.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@dataclass
class Console:
    """What the page logged. Chromium itself logs one "Failed to load resource" line per
    failed request (a refused connection, a 4xx answer); everything else is the page's."""

    lines: list[tuple[float, str, str]] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.lines.append((time.monotonic(), m.type, m.text)))
        page.on("pageerror", lambda e: self.lines.append((time.monotonic(), "pageerror", str(e))))

    def page_errors(self) -> list[str]:
        return [
            text
            for _, kind, text in self.lines
            if kind in ("error", "pageerror", "warning")
            and not text.startswith("Failed to load resource")
        ]

    def failed_requests(self, since: float = 0.0) -> list[str]:
        return [
            text
            for at, kind, text in self.lines
            if at >= since and kind == "error" and text.startswith("Failed to load resource")
        ]


def open_page(browser: Any, url: str, console: Console) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
    console.attach(page)
    page.goto(url)
    return page


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def shoot_into(page: Any, folder: Path, name: str) -> Path:
    """A full-page screenshot in the test's own folder (scrolled to the top first, so
    sticky parts sit where a person sees them)."""
    page.evaluate("window.scrollTo(0, 0)")
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


def build_workspace(path: Path) -> None:
    """A database file with a time series, a plain table and two oddly named tables."""
    db = duckflock.connect(str(path))
    try:
        db.execute("CREATE TABLE events (p INTEGER, i INTEGER, note VARCHAR)")
        db.execute(
            "CREATE TABLE readings (taken_at TIMESTAMP, sensor VARCHAR, temperature DOUBLE, "
            "humidity DOUBLE, pressure DECIMAL(10, 2))"
        )
        db.execute(f"CREATE SCHEMA {duckflock_quote(ODD_SCHEMA)}")
        db.execute(f"CREATE TABLE {ODD_NAME} (k INTEGER, label VARCHAR)")
        db.execute(f"CREATE TABLE {duckflock_quote(MAIN_ODD)} (amount BIGINT)")
        db.insert(
            "readings",
            [
                {
                    "taken_at": READINGS_START + dt.timedelta(minutes=10 * i),
                    "sensor": "s1",
                    "temperature": 20 + i * 0.5,
                    "humidity": 60 - i * 0.25,
                    "pressure": f"{1000 + i * 12.25:.2f}",
                }
                for i in range(40)
            ],
        )
        db.insert(ODD_NAME, [{"k": k, "label": f"row {k}"} for k in range(5)])
        db.insert(duckflock_quote(MAIN_ODD), [{"amount": 1_234_567}])
    finally:
        db.close()


def duckflock_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[ServerProcess]:
    build_workspace(tmp_path / "work.duckdb")
    config = tmp_path / "duckflock.toml"
    config.write_text(
        f"[[analyses]]\nname = 'hourly'\nsql = \"{HOURLY}\"\non_change = true\nmin_interval = 0\n"
    )
    process = ServerProcess(tmp_path / "work.duckdb", "--config", str(config))
    yield process
    process.stop()


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
        console = Console()
        page = open_page(browser, server.url + "/", console)
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
        assert page.get_attribute("#connection", "data-state") == "live"
        shoot(page, "dashboard.png")
        page.close()
    assert console.page_errors() == []


def test_sql_box_shows_a_table_and_a_time_chart(workspace: ServerProcess, browser: Any) -> None:
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    # the SQL orders oldest first: the table shows newest first, the chart runs left to right
    page.fill(
        "#sql",
        "SELECT taken_at, temperature, humidity, pressure FROM readings ORDER BY taken_at",
    )
    page.click("#run")
    page.wait_for_selector("#query-result svg.line-chart polyline.line", timeout=10_000)
    result = "#query-result"
    first_row = page.locator(f"{result} tbody tr").first
    assert first_row.locator("td").nth(0).inner_text() == "2026-01-05 15:30:00"
    assert first_row.locator("td").nth(3).inner_text() == "1,477.75"  # decimal, grouped, exact
    assert page.inner_text(f"{result} .table-note").startswith("40 rows")
    assert "newest first by taken_at" in page.inner_text(f"{result} .table-note")
    # every numeric column can be charted; the first one is by default
    columns = page.eval_on_selector_all(
        f"{result} .legend input", "boxes => boxes.map(b => [b.dataset.column, b.checked])"
    )
    assert columns == [["temperature", True], ["humidity", False], ["pressure", False]]
    assert page.text_content(f"{result} .x-title") == "taken_at (UTC)"
    assert page.text_content(f"{result} .y-title") == "temperature"
    ticks = page.eval_on_selector_all(f"{result} .time-tick", "t => t.map(x => x.textContent)")
    assert ticks[0] == "01-05 09:00" and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks[1:])
    assert len(ticks) >= 4
    # time runs left to right and the temperature rises: x grows, y (downwards) shrinks
    points = page.get_attribute(f'{result} polyline[data-column="temperature"]', "points")
    assert points is not None
    xy = [tuple(map(float, p.split(","))) for p in points.split()]
    assert len(xy) == 40
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in itertools.pairwise(xy))
    # formatted tick labels on the value axis
    labels = page.eval_on_selector_all(f"{result} .y-axis text", "t => t.map(x => x.textContent)")
    assert labels and all(re.fullmatch(r"\d+", label) for label in labels)

    # pick humidity as well, then drop temperature
    page.check(f'{result} .legend input[data-column="humidity"]')
    page.wait_for_selector(f'{result} polyline[data-column="humidity"]')
    assert page.text_content(f"{result} .y-title") == "value"
    page.uncheck(f'{result} .legend input[data-column="temperature"]')
    assert page.locator(f'{result} polyline[data-column="temperature"]').count() == 0
    assert page.text_content(f"{result} .y-title") == "humidity"
    page.check(f'{result} .legend input[data-column="pressure"]')
    page.wait_for_selector(f'{result} polyline[data-column="pressure"]')
    big = page.eval_on_selector_all(f"{result} .y-axis text", "t => t.map(x => x.textContent)")
    assert "1,000" in big, big  # grouped thousands
    shoot(page, "query.png")

    # a grouped result: bars with one label per category, axis titles
    page.fill("#sql", "SELECT sensor, count(*) AS n, max(pressure) AS top FROM readings GROUP BY 1")
    page.press("#sql", "Control+Enter")
    page.wait_for_selector(f"{result} svg.bar-chart rect.bar", timeout=10_000)
    assert page.text_content(f"{result} .x-title") == "sensor"
    assert page.locator(f"{result} rect.bar").count() == 1
    assert page.inner_text(f"{result} tbody td.num") == "40"
    # many categories: the first 60 are charted, and the chart says so
    page.fill("#sql", "SELECT 'k' || i AS k, i * 1000 AS v FROM range(100) AS t(i)")
    page.click("#run")
    page.wait_for_selector(f"{result} .chart-note", timeout=10_000)
    assert page.locator(f"{result} rect.bar").count() == 60
    assert page.inner_text(f"{result} .chart-note") == "chart: the first 60 of 100 rows"
    assert page.inner_text(f"{result} tbody tr:nth-child(100) td.num") == "99,000"

    # errors say what is wrong: bad SQL, and a write through the read-only box
    page.fill("#sql", "SELEC nonsense")
    page.click("#run")
    page.wait_for_selector(f"{result} .error")
    assert page.inner_text(f"{result} .error").startswith("ParserError:")
    page.fill("#sql", "DELETE FROM readings")
    page.click("#run")
    page.wait_for_selector(f'{result} .error:text-matches("^QueryRefusedError")')
    with workspace.client() as client:
        assert client.query("SELECT count(*) AS n FROM readings").column("n").to_pylist() == [40]
    page.close()
    assert console.page_errors() == []


def test_table_browser_previews_names_that_need_quoting(
    workspace: ServerProcess, browser: Any
) -> None:
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    row = f"#tables tr[data-table={json.dumps(ODD_NAME)}]"
    page.wait_for_selector(row, timeout=10_000)
    with workspace.client() as client:  # the newest row must come first
        client.insert(ODD_NAME, {"k": 99, "label": "newest"})
    page.click(row)
    page.wait_for_selector("#preview-result tbody tr", timeout=10_000)
    expected = 'SELECT * FROM "odd.schema"."say ""hi"" now" ORDER BY rowid DESC LIMIT 50'
    assert page.inner_text("#preview-sql") == expected
    assert page.inner_text("#preview-name") == ODD_NAME
    cells = page.eval_on_selector_all(
        "#preview-result tbody tr", "rows => rows.map(r => r.cells[1].textContent)"
    )
    assert cells == ["newest", "row 4", "row 3", "row 2", "row 1", "row 0"]
    assert "k INTEGER, label VARCHAR" in page.inner_text("#preview-columns")
    shoot(page, "preview.png")

    # a main-schema table whose name has a quote and an apostrophe
    page.click(f"#tables tr[data-table={json.dumps(MAIN_ODD)}]")
    page.wait_for_selector('#preview-result td:text-is("1,234,567")', timeout=10_000)
    ticks = page.eval_on_selector_all(
        "#preview-result .y-axis text", "t => t.map(x => x.textContent)"
    )
    assert "1M" in ticks and "500K" in ticks, ticks  # big numbers in compact form
    assert page.inner_text("#preview-sql") == (
        'SELECT * FROM "main"."it\'s ""quoted""" ORDER BY rowid DESC LIMIT 50'
    )
    # the preview's SQL opens in the query box and runs there
    page.click("#preview-edit")
    assert page.input_value("#sql") == page.inner_text("#preview-sql")
    page.click("#run")
    page.wait_for_selector('#query-result td:text-is("1,234,567")', timeout=10_000)
    page.close()
    assert console.page_errors() == []


def test_define_edit_and_drop_an_analysis(workspace: ServerProcess, browser: Any) -> None:
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    page.wait_for_selector('.card[data-name="hourly"][data-version]', timeout=10_000)
    # the time-keyed analysis: a line chart on a time axis, newest hour first in its table
    hourly = '.card[data-name="hourly"]'
    page.wait_for_selector(f"{hourly} svg.line-chart .time-tick")
    assert page.inner_text(f"{hourly} tbody tr:first-child td:first-child") == (
        "2026-01-05 15:00:00"
    )
    # every action shows the role it needs
    assert page.inner_text("#new-analysis + .role") == "admin role"
    assert page.inner_text(f"{hourly} .card-actions .role") == "admin role"
    assert page.inner_text("#run + .role") == "read role"

    page.click("#new-analysis")
    page.fill("#analysis-name", "per_sensor")
    page.fill(
        "#analysis-sql", "SELECT sensor, count(*) AS n FROM readings GROUP BY sensor ORDER BY 1"
    )
    page.fill("#analysis-min-interval", "0")
    page.click("#analysis-save")
    card = '.card[data-name="per_sensor"]'
    page.wait_for_selector(f'{card} td:text-is("40")', timeout=10_000)
    assert "Defined analysis" in page.inner_text("#analysis-message")
    assert page.is_hidden("#analysis-form")
    with workspace.client() as client:
        status = {a["name"]: a for a in client.analyses()}["per_sensor"]
        assert status["on_change"] is True and status["every"] is None
        # on new data: a new sensor shows up in the card by itself
        client.insert("readings", {"taken_at": "2026-01-05 09:00:00", "sensor": "s2"})
    page.wait_for_selector(f'{card} td:text-is("s2")', timeout=10_000)
    # the card says which mode the run took, and why
    page.wait_for_selector(f'{card} .reason:has-text("incremental: folded in")', timeout=10_000)
    assert page.locator(f"{card} svg.bar-chart rect.bar").count() == 2
    shoot(page, "analyses.png")

    # edit: the form comes back filled in; the name stays, the SQL changes
    page.click(f"{card} button.edit")
    assert page.input_value("#analysis-name") == "per_sensor"
    assert page.get_attribute("#analysis-name", "readonly") is not None
    assert "count(*) AS n" in page.input_value("#analysis-sql")
    page.fill(
        "#analysis-sql",
        "SELECT sensor, count(*) AS n, avg(temperature) AS mean FROM readings "
        "GROUP BY sensor ORDER BY 1",
    )
    page.fill("#analysis-every", "30")
    page.click("#analysis-save")
    page.wait_for_selector(f'{card} .legend input[data-column="mean"]', timeout=10_000)
    assert "Saved analysis" in page.inner_text("#analysis-message")
    assert "every 30 s" in page.inner_text(f"{card} .schedule")
    with workspace.client() as client:
        status = {a["name"]: a for a in client.analyses()}["per_sensor"]
        assert "avg(temperature)" in status["sql"] and status["every"] == 30

    # a bad definition says what is wrong and leaves the form open
    page.click("#new-analysis")
    page.fill("#analysis-name", "bad")
    page.fill("#analysis-sql", "SELECT * FROM no_such_table")
    page.click("#analysis-save")
    page.wait_for_selector("#analysis-message.error", timeout=10_000)
    assert page.inner_text("#analysis-message").startswith("CatalogError:")
    assert page.is_visible("#analysis-form")
    page.click("#analysis-cancel")

    # drop: the first click arms the button, the second drops
    page.click(f"{card} button.drop")
    assert page.inner_text(f"{card} button.drop") == "Confirm drop"
    with workspace.client() as client:
        assert "per_sensor" in {a["name"] for a in client.analyses()}
    page.click(f"{card} button.drop")
    page.wait_for_selector(card, state="detached", timeout=10_000)
    assert "Dropped analysis" in page.inner_text("#analysis-message")
    with workspace.client() as client:
        assert {a["name"] for a in client.analyses()} == {"hourly"}
    page.close()
    assert console.page_errors() == []


def test_disconnected_state_backs_off_quietly_and_recovers(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_workspace(tmp_path / "work.duckdb")
    config = tmp_path / "duckflock.toml"
    config.write_text(
        f"[[analyses]]\nname = 'hourly'\nsql = \"{HOURLY}\"\non_change = true\nmin_interval = 0\n"
    )
    process = ServerProcess(tmp_path / "work.duckdb", "--config", str(config))
    console = Console()
    try:
        page = open_page(browser, process.url + "/", console)
        page.wait_for_selector('.card[data-name="hourly"][data-version]', timeout=10_000)
        page.wait_for_selector('#connection[data-state="live"]', timeout=10_000)
        assert page.is_hidden("#banner")

        assert process.stop() == 0
        outage = time.monotonic()
        page.wait_for_selector('#connection[data-state="offline"]', timeout=10_000)
        assert page.is_visible("#banner")
        assert "cannot be reached" in page.inner_text("#banner")
        assert page.evaluate("document.body.classList.contains('stale')")
        page.wait_for_function(  # the stale data is greyed out
            "Number(getComputedStyle(document.querySelector('#analyses')).opacity) < 0.6",
            timeout=5_000,
        )
        # the kept data stays on the page
        assert page.locator('.card[data-name="hourly"] tbody tr').count() == 7
        # attempts back off: 0.5, 1, 2 s apart …; one request each, nothing else logged
        page.wait_for_function(
            "Number(document.querySelector('#connection').dataset.attempt) >= 3",
            timeout=15_000,
        )
        assert re.search(r"disconnected · retrying", page.inner_text("#status"))
        shoot(page, "offline.png")
        attempts = int(page.get_attribute("#connection", "data-attempt") or 0)
        failed = console.failed_requests(since=outage)
        # each attempt logs one line (Chromium's own); plus at most the poll's two
        # requests, the event stream cut mid-answer and one health check as it began
        assert len(failed) <= attempts + 4, failed
        assert all(line.startswith("Failed to load resource: net::ERR_") for line in failed)
        assert console.page_errors() == []
        elapsed = time.monotonic() - outage
        # no spam: a request every 2 s (the old poll) would have made this many lines
        assert len(failed) < elapsed / 2 + 4

        # the same port again: the page finds the server by itself
        monkeypatch.setattr(conftest, "free_port", lambda: process.port)
        process = ServerProcess(tmp_path / "work.duckdb", "--config", str(config))
        page.wait_for_selector('#connection[data-state="live"]', timeout=20_000)
        assert page.is_hidden("#banner")
        assert not page.evaluate("document.body.classList.contains('stale')")
        with process.client() as client:
            client.insert("readings", {"taken_at": "2026-01-05 16:05:00", "temperature": 99.5})
        card = '.card[data-name="hourly"]'
        page.wait_for_selector(f'{card} td:text-is("2026-01-05 16:00:00")', timeout=10_000)
        assert page.inner_text(f"{card} tbody tr:first-child td:nth-child(2)") == "99.5"
        shoot(page, "recovered.png")
        page.close()
        assert console.page_errors() == []
    finally:
        process.stop()


def test_dashboard_with_a_token(tmp_path: Path, browser: Any) -> None:
    process = ServerProcess(tmp_path / "secret.duckdb", token="t0ken-t0ken-t0ken")
    try:
        with process.client() as client:
            client.analysis("n", "SELECT 42 AS answer", every=60)
        console = Console()
        page = open_page(browser, process.url + "/?access_token=t0ken-t0ken-t0ken", console)
        page.wait_for_selector('.card[data-name="n"] td:text-is("42")', timeout=10_000)
        # a refused token: the action says which role it needs
        page.fill("#token", "wrong")
        page.click("#token-form button")
        assert "access_token=wrong" in page.url
        page.click("#new-analysis")
        page.fill("#analysis-name", "m")
        page.fill("#analysis-sql", "SELECT 1 AS one")
        page.click("#analysis-save")
        page.wait_for_selector("#analysis-message.error", timeout=10_000)
        message = page.inner_text("#analysis-message")
        assert "AuthenticationError" in message and "admin role" in message
        page.wait_for_selector('#connection[data-state="refused"]', timeout=10_000)
        assert "AuthenticationError" in page.inner_text("#status")
        assert "read role" in page.inner_text("#status")
        shoot(page, "token-refused.png")

        # the page itself is public (it holds no data): without a token it loads and
        # says which role it needs, so the token box is reachable
        page.goto(process.url + "/")
        page.wait_for_selector('#connection[data-state="refused"]', timeout=10_000)
        assert "read role" in page.inner_text("#status")
        assert page.locator("#token").is_visible()
        page.close()
        assert console.page_errors() == []
    finally:
        assert process.stop() == 0


def test_scales_names_and_formats_in_the_page(browser: Any) -> None:
    """The page's own functions, on cases the end-to-end tests do not reach."""
    from duckflock.server.http.api import dashboard_html

    page = browser.new_page(locale="en-US")
    page.set_content(dashboard_html())  # no server: the page only goes offline

    def js(expression: str) -> Any:
        return page.evaluate(expression)

    utc = "Date.UTC(2026, 0, 5, 9, 0, 0)"
    assert js(f"parseTime('2026-01-05T09:00:00') === {utc}")
    assert js(f"parseTime('2026-01-05 09:00:00.123456') === {utc} + 123")
    assert js(f"parseTime('2026-01-05T11:00:00+02:00') === {utc}")
    assert js("parseTime('2026-01-05') === Date.UTC(2026, 0, 5)")
    assert js("Number.isNaN(parseTime(null))")
    labels = """(lo, hi, n) => { const t = timeTicks(lo, hi, n);
        return t.ticks.map((x, i) => timeLabel(x, t.step, t.ticks[i - 1])); }"""
    assert js(f"({labels})({utc}, {utc} + 30000, 6)") == [
        "01-05 09:00:00", "09:00:05", "09:00:10", "09:00:15", "09:00:20", "09:00:25",
        "09:00:30",
    ]  # fmt: skip
    assert js(f"({labels})({utc} + 1, {utc} + 400, 4)") == [
        "01-05 09:00:00.100",
        "09:00:00.200",
        "09:00:00.300",
        "09:00:00.400",
    ]
    assert js(f"({labels})({utc}, {utc} + 3 * 86400000, 4)") == [
        "2026-01-06",
        "2026-01-07",
        "2026-01-08",
    ]
    assert js(f"({labels})({utc}, Date.UTC(2028, 5, 1), 6)") == [
        "2026-07",
        "2027-01",
        "2027-07",
        "2028-01",
    ]
    assert js("niceTicks(3, 97, 5).ticks") == [0, 20, 40, 60, 80, 100]
    assert js("niceTicks(0, 1, 5, 1).ticks") == [0, 1]
    assert js("niceTicks(-0.3, 0.3, 4).ticks") == [-0.4, -0.2, 0, 0.2, 0.4]
    assert js("formatNumber('12345678.901')") == "12,345,678.901"  # a decimal: every digit
    assert js("formatNumber('-98765432109876543210')") == "-98,765,432,109,876,543,210"
    assert js("formatNumber(1234567)") == "1,234,567"
    assert js("formatNumber(1234.56789)") == "1,234.568"
    assert js("formatNumber(0.000123456)") == "0.0001235"
    assert js("formatTick(250000, 50000)") == "250K"
    assert js("formatTick(0.25, 0.05)") == "0.25"
    kinds = ["int64", "uint8", "double", "decimal128(10, 2)", "timestamp[us, tz=UTC]",
             "date32[day]", "time64[us]", "string", "month_day_nano_interval", "bool"]  # fmt: skip
    assert js(f"{json.dumps(kinds)}.map(kindOf)") == [
        "number", "number", "number", "number", "time", "time", "other", "other", "other",
        "other",
    ]  # fmt: skip
    assert js("describe({types: ['int32', 'int64']}).key") == 0  # the first labels the rest
    # a chosen x axis, and the default y that is not an identifier
    chosen = "({columns: ['id', 'ts', 'v'], types: ['int64', 'timestamp[us]', 'double']})"
    assert js(f"describe({chosen}).key") == 1
    assert js(f"describe({chosen}, 'id').keyKind") == "category"
    assert js(f"describe({chosen}, '#row').numeric") == [0, 2]
    assert js("defaultSeries(['id', 'sensor_id', 'n'])") == "n"
    assert js("defaultSeries(['id'])") == "id"
    # sorting: numbers by value, NULLs last both ways, ties in their order
    rows = "[[1, '10'], [2, null], [3, '9.5'], [4, '-1'], [5, '10']]"
    assert js(f"sortRows({rows}, 1, 'number', 1).map(r => r[0])") == [4, 3, 1, 5, 2]
    assert js(f"sortRows({rows}, 1, 'number', -1).map(r => r[0])") == [1, 5, 3, 4, 2]
    assert js("sortRows([['b'], ['B'], ['a']], 0, 'other', 1).map(r => r[0])") == ["B", "a", "b"]
    # filtering: as shown or as sent (1234 finds "1,234"), and NULL by its name
    table = "[[1234, 'x'], [5, null], [6, 'y']]"
    assert js(f"filterRows({table}, ['number', 'other'], '1234').length") == 1
    assert js(f"filterRows({table}, ['number', 'other'], '1,234').length") == 1
    assert js(f"filterRows({table}, ['number', 'other'], 'null')[0][0]") == 5
    assert js("describe({types: ['double']}).keyKind") == "index"
    # the preview's SQL: each part quoted, quotes doubled, whatever the listing's form
    cases = [
        ({"name": "a.b", "schema": "main", "columns": []}, '"main"."a.b"'),
        ({"name": "s.t", "schema": "s", "columns": []}, '"s"."t"'),
        ({"name": ODD_NAME, "schema": ODD_SCHEMA, "columns": []}, '"odd.schema"."say ""hi"" now"'),
        ({"name": "x", "schema": "s", "table": 'q"t', "columns": []}, '"s"."q""t"'),
    ]
    for table, target in cases:
        assert js(f"previewSql({json.dumps(table)})") == (
            f"SELECT * FROM {target} ORDER BY rowid DESC LIMIT 50"
        )
    with_rowid = {"name": "t", "schema": "main", "columns": [{"name": "RowId", "type": "INT"}]}
    assert js(f"previewSql({json.dumps(with_rowid)})") == 'SELECT * FROM "main"."t" LIMIT 50'
    page.close()


# -- working with results: sort, filter, export, axes, history, layout ---------------------------

MIXED = (
    "SELECT * FROM (VALUES ('b', 10, TIMESTAMP '2026-01-02 00:00:00'), "
    "('a', 9.5, TIMESTAMP '2026-01-10 00:00:00'), ('c', NULL, NULL), "
    "('D', 100, TIMESTAMP '2025-12-31 23:00:00'), ('e', -1, TIMESTAMP '2026-01-03 00:00:00'), "
    "('a2', 10, TIMESTAMP '2026-01-01 00:00:00')) AS t(k, v, seen)"
)


def column_cells(page: Any, result: str, index: int) -> list[str | None]:
    """A shown column: the raw value of number cells (their tooltip), else the text;
    None for NULL."""
    return list(
        page.eval_on_selector_all(
            f"{result} tbody tr",
            f"""rows => rows.map(r => {{ const td = r.cells[{index}];
                return td.classList.contains('null') ? null : (td.title || td.textContent); }})""",
        )
    )


def run_sql(page: Any, sql: str) -> None:
    page.fill("#sql", sql)
    page.click("#run")
    page.wait_for_function(
        "document.querySelector('#run').disabled === false "
        "&& document.querySelector('#query-meta').textContent.endsWith('ms')",
        timeout=10_000,
    )


def test_sort_a_result_by_any_column_as_duckdb_orders_it(
    workspace: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    run_sql(page, MIXED)
    result = "#query-result"
    oracle = duckdb.connect()

    def expected(column: str, direction: str) -> list[Any]:
        rows = oracle.execute(f"SELECT {column} FROM ({MIXED}) ORDER BY {column} {direction} "
                              "NULLS LAST").fetchall()  # fmt: skip
        return [row[0] for row in rows]

    # numbers by value (10 after 9.5, not before it as text), NULL last both ways
    page.click(f'{result} th[data-column="v"]')
    shown = column_cells(page, result, 1)
    assert [None if v is None else float(v) for v in shown] == [
        None if v is None else float(v) for v in expected("v", "ASC")
    ]
    assert page.get_attribute(f'{result} th[data-column="v"]', "aria-sort") == "ascending"
    assert "sorted by v ↑" in page.inner_text(f"{result} .table-note")
    page.click(f'{result} th[data-column="v"]')
    shown = column_cells(page, result, 1)
    assert [None if v is None else float(v) for v in shown] == [
        None if v is None else float(v) for v in expected("v", "DESC")
    ]
    # times by instant, text by code point (DuckDB's default collation: 'D' before 'a')
    page.click(f'{result} th[data-column="seen"]')
    assert column_cells(page, result, 2) == [
        None if t is None else t.isoformat(sep=" ") for t in expected("seen", "ASC")
    ]
    page.focus(f'{result} th[data-column="k"]')  # from the keyboard too
    page.keyboard.press("Enter")
    assert column_cells(page, result, 0) == expected("k", "ASC")
    shoot_into(page, tmp_path, "sorted.png")
    page.close()
    assert console.page_errors() == []


def test_filter_narrows_the_table_and_the_chart(
    workspace: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    with workspace.client() as client:
        rows = [
            {"taken_at": f"2026-01-06 0{i}:00:00", "sensor": "s2", "temperature": i}
            for i in range(5)
        ]
        client.insert("readings", rows)
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    run_sql(page, "SELECT sensor, taken_at, temperature FROM readings")
    result = "#query-result"
    assert page.locator(f"{result} tbody tr").count() == 45
    page.fill(f"{result} .filter", "s2")
    page.wait_for_function(
        f"document.querySelectorAll('{result} tbody tr').length === 5", timeout=5_000
    )
    assert set(column_cells(page, result, 0)) == {"s2"}
    assert "5 match “s2”" in page.inner_text(f"{result} .table-note")
    points = page.get_attribute(f'{result} polyline[data-column="temperature"]', "points")
    assert points is not None and len(points.split()) == 5  # the chart shows what is kept
    # a number as it was sent finds its grouped form too; no match: an empty table
    page.fill(f"{result} .filter", "nothing like this")
    page.wait_for_function(f"document.querySelectorAll('{result} tbody tr').length === 0")
    page.fill(f"{result} .filter", "")
    page.wait_for_function(f"document.querySelectorAll('{result} tbody tr').length === 45")

    # the table list has a filter and sortable headers too
    page.fill("#tables-filter", "quoted")
    page.wait_for_function("document.querySelectorAll('#tables tbody tr').length === 1")
    assert page.get_attribute("#tables tbody tr", "data-table") == MAIN_ODD
    page.fill("#tables-filter", "")
    page.click("#tables th:nth-child(2)")  # rows, ascending
    page.click("#tables th:nth-child(2)")  # then descending
    counts = page.eval_on_selector_all(
        "#tables tbody td.rows", "cells => cells.map(c => Number(c.textContent.replace(/,/g, '')))"
    )
    assert counts == sorted(counts, reverse=True) and counts[0] == 45
    shoot_into(page, tmp_path, "filtered.png")
    page.close()
    assert console.page_errors() == []


def test_export_downloads_what_the_server_makes(
    workspace: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    console = Console()
    page = browser.new_page(
        viewport={"width": 1280, "height": 900}, locale="en-US", accept_downloads=True
    )
    console.attach(page)
    page.goto(workspace.url + "/")
    sql = "SELECT taken_at, sensor, temperature, pressure FROM readings ORDER BY taken_at"
    run_sql(page, sql)
    page.fill("#query-result .filter", "15:30")  # the page's filter does not cut an export
    with workspace.client() as client:
        expected = client.query(sql)
    oracle = duckdb.connect()
    oracle.register("expected", expected)

    def differences(relation: str) -> int:
        both = f"(SELECT * FROM expected EXCEPT ALL SELECT * FROM {relation}) UNION ALL " + (
            f"(SELECT * FROM {relation} EXCEPT ALL SELECT * FROM expected)"
        )
        row = oracle.execute(f"SELECT count(*) FROM ({both})").fetchone()
        assert row is not None
        return int(row[0])

    with page.expect_download() as download:
        page.click("#query-result .export-parquet")
    parquet = tmp_path / download.value.suggested_filename
    download.value.save_as(parquet)
    assert parquet.name == "query.parquet"
    assert pq.read_table(parquet).equals(expected)  # the same types and values
    page.wait_for_selector("#query-result .export-note:has-text('downloaded query.parquet')")

    with page.expect_download() as download:
        page.click("#query-result .export-csv")
    csv = tmp_path / download.value.suggested_filename
    download.value.save_as(csv)
    assert csv.name == "query.csv"
    types = (
        "{'taken_at': 'TIMESTAMP', 'sensor': 'VARCHAR', 'temperature': 'DOUBLE', "
        "'pressure': 'DECIMAL(10,2)'}"
    )
    oracle.execute(f"CREATE TABLE from_csv AS SELECT * FROM read_csv('{csv}', types = {types})")
    assert differences("from_csv") == 0
    assert oracle.execute("SELECT count(*) FROM from_csv").fetchone() == (40,)

    # an analysis's latest result, and a previewed table (the whole table, not the 50 shown)
    with workspace.client() as client:
        client.insert("readings", [{"sensor": "s9", "temperature": t} for t in range(60)])
        hourly = client.result("hourly", min_version=2, timeout=10)
        assert hourly is not None
        whole = client.query("SELECT * FROM readings")
    page.wait_for_selector(f'.card[data-name="hourly"][data-version="{hourly.version}"]')
    with page.expect_download() as download:
        page.click('.card[data-name="hourly"] .latest .export-parquet')
    path = tmp_path / "hourly.parquet"
    download.value.save_as(path)
    assert download.value.suggested_filename == "hourly.parquet"
    assert pq.read_table(path).equals(hourly.table)
    page.click('#tables tr[data-table="readings"]')
    page.wait_for_selector("#preview-result tbody tr")
    assert page.locator("#preview-result tbody tr").count() == 50
    with page.expect_download() as download:
        page.click("#preview-result .export-parquet")
    path = tmp_path / "readings.parquet"
    download.value.save_as(path)
    assert pq.read_table(path).sort_by("temperature").equals(whole.sort_by("temperature"))
    assert pq.read_table(path).num_rows == 100
    page.close()
    assert console.page_errors() == []


def test_axes_default_to_time_and_can_be_changed(workspace: ServerProcess, browser: Any) -> None:
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    result = "#query-result"
    # an id first and a time second: the time is the x axis, the id is not charted
    run_sql(
        page,
        "SELECT row_number() OVER (ORDER BY taken_at) AS id, taken_at AS ts, "
        "temperature AS reading FROM readings",
    )
    page.wait_for_selector(f"{result} svg.line-chart polyline.line")
    assert page.text_content(f"{result} .x-title") == "ts (UTC)"
    assert page.text_content(f"{result} .y-title") == "reading"
    assert page.input_value(f"{result} .x-select") == "ts"
    assert page.input_value(f"{result} .y-select") == "reading"
    # y: the id instead
    page.select_option(f"{result} .y-select", "id")
    assert page.text_content(f"{result} .y-title") == "id"
    assert page.is_checked(f'{result} .legend input[data-column="id"]')
    assert not page.is_checked(f'{result} .legend input[data-column="reading"]')
    # x: the id (categories in row order: bars) and then the row number
    page.select_option(f"{result} .x-select", "id")
    page.wait_for_selector(f"{result} svg.bar-chart rect.bar")
    assert page.text_content(f"{result} .x-title") == "id"
    assert page.input_value(f"{result} .y-select") == "reading"  # the key is not a value
    assert page.locator(f"{result} rect.bar").count() == 40
    page.select_option(f"{result} .x-select", "#row")
    assert page.text_content(f"{result} .x-title") == "row"
    # the choice survives a new answer of the same shape, and ends with a new shape
    page.click("#run")
    page.wait_for_selector(f"{result} svg.bar-chart")
    assert page.input_value(f"{result} .x-select") == "#row"
    run_sql(page, "SELECT taken_at, humidity FROM readings")
    page.wait_for_selector(f"{result} svg.line-chart")
    assert page.input_value(f"{result} .x-select") == "taken_at"
    page.close()
    assert console.page_errors() == []


def test_history_tab_charts_the_kept_versions_over_time(
    workspace: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    name = "per_sensor"
    card = f'.card[data-name="{name}"]'
    with workspace.client() as client:
        client.analysis(
            name,
            "SELECT sensor, count(*) AS n, avg(temperature) AS mean FROM readings GROUP BY 1",
            on_change=True,
            min_interval=0,
        )
        version = 0
        for i in range(3):  # one version per commit
            client.insert("readings", {"sensor": "s2", "temperature": i})
            found = client.result(name, min_version=version + 1, timeout=10)
            assert found is not None
            version = found.version
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    page.wait_for_selector(f"{card}[data-version]", timeout=10_000)
    page.click(f"{card} .tab-history")
    page.wait_for_selector(f"{card} .history svg.line-chart polyline.line", timeout=10_000)
    assert page.is_hidden(f"{card} .latest")

    def kept() -> dict[str, Any]:
        answer = httpx.get(f"{workspace.url}/v1/analyses/{name}/history", timeout=10)
        return dict(answer.json())

    def shown() -> dict[str, list[float | None]]:
        """Each line of the history table: the sensor's value per version, oldest first
        (None: the sensor was not in that version)."""
        columns = page.eval_on_selector_all(
            f"{card} .history thead th", "ths => ths.map(th => th.dataset.column)"
        )
        rows = page.eval_on_selector_all(
            f"{card} .history tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => "
            "c.classList.contains('null') ? null : (c.title || c.textContent)))",
        )
        rows.reverse()  # shown newest first
        return {
            c: [None if r[i] is None else float(r[i]) for r in rows]
            for i, c in enumerate(columns)
            if i > 0
        }

    history = kept()
    n = history["columns"].index("n")
    by_version = {(row[0], row[2]): float(row[n]) for row in history["rows"]}
    sensors = {row[2] for row in history["rows"]}
    expected = {s: [by_version.get((v, s)) for v in history["versions"]] for s in sensors}
    assert shown() == expected
    assert expected["s2"][-3:] == [1.0, 2.0, 3.0]  # it grew by one per version
    assert "n per sensor" in page.inner_text(f"{card} .history-note")
    points = page.get_attribute(f'{card} .history polyline[data-column="s1"]', "points")
    assert points is not None and len(points.split()) == len(history["versions"])

    # a new version arrives by the event stream and joins the chart (the s2 line
    # starts at its first version: a missing value breaks a line, it does not draw zero)
    s2_points = sum(v is not None for v in expected["s2"])
    with workspace.client() as client:
        client.insert("readings", {"sensor": "s2", "temperature": 9})
    page.wait_for_function(
        f"""document.querySelector('{card} .history polyline[data-column="s2"]')
            .getAttribute('points').trim().split(' ').length === {s2_points + 1}""",
        timeout=10_000,
    )
    assert shown()["s2"][-1] == 4.0
    # another value to chart
    page.select_option(f"{card} .history-value", "mean")
    assert "mean per sensor" in page.inner_text(f"{card} .history-note")
    with workspace.client() as client:
        means = client.query("SELECT avg(temperature) AS m FROM readings WHERE sensor = 's2'")
    assert shown()["s2"][-1] == pytest.approx(means.column("m")[0].as_py(), rel=1e-12)
    shoot_into(page, tmp_path, "history.png")
    page.click(f"{card} .tab-latest")
    assert page.is_visible(f"{card} .latest svg")
    page.close()
    assert console.page_errors() == []


@pytest.mark.parametrize("width", [1280, 390])
def test_layout_fills_the_window_without_clipping(
    workspace: ServerProcess, browser: Any, tmp_path: Path, width: int
) -> None:
    with workspace.client() as client:
        client.analysis(
            "per_sensor", "SELECT sensor, count(*) AS n FROM readings GROUP BY 1", every=60
        )
        for i in range(40):  # a table list taller than the window
            client.run(f"CREATE TABLE extra_{i:02} (x INTEGER)")
    console = Console()
    page = browser.new_page(viewport={"width": width, "height": 800}, locale="en-US")
    console.attach(page)
    page.goto(workspace.url + "/")
    for name in ("hourly", "per_sensor"):
        page.wait_for_selector(f'.card[data-name="{name}"] svg', timeout=10_000)
    run_sql(page, "SELECT taken_at, sensor, temperature, humidity, pressure FROM readings")
    page.click('#tables tr[data-table="readings"]')
    page.wait_for_selector("#preview-result svg")
    page.wait_for_timeout(300)  # the resize re-render is debounced; nothing to wait on
    # nothing is wider than the window: no horizontal scroll, every box inside it
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    boxes = page.eval_on_selector_all(
        "header, section, .card, .card svg, #query-result svg, .toolbar, aside",
        "nodes => nodes.map(n => { const r = n.getBoundingClientRect(); "
        "return [n.tagName + '.' + n.className.baseVal ?? n.className, r.left, r.right]; })",
    )
    assert all(left >= 0 and right <= width + 0.5 for _, left, right in boxes), boxes
    cards = page.eval_on_selector_all(
        ".card",
        "cs => cs.map(c => { const r = c.getBoundingClientRect(); "
        "return [r.left, r.top, r.width]; })",
    )
    if width == 1280:  # side by side, and the work area takes what the table list leaves
        assert cards[0][1] == cards[1][1] and cards[0][0] < cards[1][0]
        main = page.eval_on_selector("main", "m => m.getBoundingClientRect().width")
        assert main > width * 0.6
        # the sticky table list fits the window and scrolls by itself: its last table
        # can be reached (a sticky box taller than the window would be cut off)
        page.wait_for_selector('#tables tr[data-table="extra_39"]', timeout=10_000)
        bottom = page.eval_on_selector("aside", "a => a.getBoundingClientRect().bottom")
        assert bottom <= 800
        page.eval_on_selector("aside", "a => { a.scrollTop = a.scrollHeight; }")
        last = page.eval_on_selector(
            '#tables tr[data-table="extra_39"]', "r => r.getBoundingClientRect().bottom"
        )
        assert last <= 800
    else:  # one column, as wide as the window allows
        assert cards[0][0] == cards[1][0] and cards[0][1] < cards[1][1]
        assert all(w > width * 0.8 for _, _, w in cards)
        # the table list sits above the work area, not beside it
        aside = page.eval_on_selector("aside", "a => a.getBoundingClientRect().bottom")
        assert aside <= page.eval_on_selector("main", "m => m.getBoundingClientRect().top")
    shoot_into(page, tmp_path, f"layout-{width}.png")
    page.close()
    assert console.page_errors() == []


def test_the_name_field_says_why_it_refuses_a_name(workspace: ServerProcess, browser: Any) -> None:
    console = Console()
    page = open_page(browser, workspace.url + "/", console)
    page.click("#new-analysis")
    page.fill("#analysis-name", "a/b")
    page.fill("#analysis-sql", "SELECT 1 AS one")
    page.click("#analysis-save")
    message = page.eval_on_selector("#analysis-name", "input => input.validationMessage")
    assert "/v1/analyses/{name}" in message and "“/”" in message
    assert page.is_visible("#analysis-form")
    # any other text is a name: spaces, dots and quotes included
    page.fill("#analysis-name", 'my "odd" name.v2')
    assert page.eval_on_selector("#analysis-name", "input => input.validationMessage") == ""
    page.click("#analysis-save")
    page.wait_for_selector('.card[data-name=\'my "odd" name.v2\'] td:text-is("1")', timeout=10_000)
    with workspace.client() as client:
        assert 'my "odd" name.v2' in {a["name"] for a in client.analyses()}
    page.close()
    assert console.page_errors() == []
