"""A smoke run of the hostile-load bench (bench/hostile_load.py --quick): it starts a real
``redmart-shim serve`` and the sandbox, runs every scenario at toy sizes, stops everything,
and writes its report. No figure is judged here (speed goals live in bench/): only that the
bench runs end to end and reports each scenario against its bar."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "hostile_load.py"
FIGURES = ("normal GETs answered within 2 s", "normal GET p50 vs baseline",
           "legitimate GET p50 vs baseline", "worker RSS, peak", "tenant B's GET p99",
           "503 p99 once the breaker is open", "/healthz p99")


@pytest.mark.slow
def test_the_quick_run_reports_every_scenario(tmp_path):
    output = tmp_path / "hostile.md"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--output", str(output)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = output.read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if line.startswith("| ") and "|---" not in line]
    for figure in FIGURES:
        [row] = [line for line in rows if figure in line]
        assert row.split("|")[5].strip() in ("met", "NOT met"), row
    assert "Baseline (unloaded, same run)" in report
    assert "written to" in done.stdout
