"""The benchmark never rots: a smoke run (tiny durations, one round) measures
every stage and the baseline and writes its table, JSON and chart. The
speed goals themselves live in `make bench`, not here."""

import json
import subprocess
import sys

import pytest

from support import ROOT, STAGES


SMOKE_TIMEOUT_S = 300


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_bench_smoke_run_measures_every_target(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == {"baseline", *STAGES}
    for target, metrics in results["summary"].items():
        assert metrics["throughput"]["median"] > 0, target
        assert metrics["p50_us"]["median"] > 0, target
        assert metrics["cold_start_ms"]["median"] > 0, target
    # from 04 on they drain after SIGTERM; the others die at once
    for stage in STAGES:
        drains = stage >= "04"
        assert (results["summary"][stage]["sigterm_idle_ms"]["median"] >= 400) == drains, stage
    report = (tmp_path / "report.md").read_text()
    assert "| 05-metrics |" in report and "Goals:" in report
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
