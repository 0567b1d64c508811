"""schemathesis over the OpenAPI document, against a real ``duckflock serve``.

Every operation but the event stream (it never ends) is fuzzed with valid and invalid
requests — bodies, parameters, headers, missing and wrong tokens — and each answer is
checked against the document: no 5xx, no undocumented status, every body matching its
schema. ``positive_data_acceptance`` is left out: a schema cannot say which strings are
valid SQL, so a generated ``"sql"`` is rightly a 400. Bounded for CI by work, not time:
DUCKFLOCK_FUZZ_EXAMPLES examples per operation and phase (70 by default, seed 1: the same
requests on every machine, ~600 of them), every phase run to its end. DUCKFLOCK_FUZZ_SECONDS
gives a longer run a time budget instead (fuzzing and stateful testing repeat until it is
spent, as schemathesis does with ``--max-time``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerProcess

TOKEN = "fuzz-token-0123456789abcdef"
PATTERN = r'duckflock_http_requests_total\{[^}]*status="(\d+)"\} (\S+)'


EXAMPLES = os.environ.get("DUCKFLOCK_FUZZ_EXAMPLES", "70")
SECONDS = os.environ.get("DUCKFLOCK_FUZZ_SECONDS")  # unset: every phase once, to its end
BUDGET = ("--max-time", SECONDS) if SECONDS else ()


@pytest.mark.timeout(600 + int(SECONDS or 0))  # ~20 s of CPU; a loaded machine stretches it
def test_schemathesis_finds_no_5xx_and_no_schema_violation(tmp_path: Path) -> None:
    config = tmp_path / "fuzz.toml"
    config.write_text(
        "[[tables]]\n"
        'sql = "CREATE TABLE IF NOT EXISTS events (p INTEGER, i INTEGER, note VARCHAR)"\n'
    )
    server = ServerProcess(
        tmp_path / "fuzz.duckdb",
        "--config",
        str(config),
        "--max-wait",
        "1",
        "--query-timeout",
        "3",
        token=TOKEN,
    )
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{server.url}/openapi.json",
                *("-H", f"Authorization: Bearer {TOKEN}"),
                *("--max-examples", EXAMPLES, "--seed", "1"),
                *("--exclude-path", "/v1/analyses/{name}/events"),
                *("--exclude-checks", "positive_data_acceptance"),
                *("--request-timeout", "20", *BUDGET),
            ],
            capture_output=True,
            text=True,
            timeout=540 + int(SECONDS or 0),
            check=False,
            cwd=tmp_path,
        )
        with server.http() as http:
            metrics = http.get("/metrics").text
    finally:
        assert server.stop() == 0
    counted = [(status, float(n)) for status, n in re.findall(PATTERN, metrics)]
    requests = sum(n for _, n in counted)
    errors_5xx = sum(n for status, n in counted if status.startswith("5"))
    print(f"schemathesis: {requests:.0f} requests, {errors_5xx:.0f} answered 5xx")  # RELIABILITY
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert requests > 500
    assert errors_5xx == 0
    assert "Traceback" not in server.output()
