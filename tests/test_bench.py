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


@pytest.mark.timeout(120)
def test_the_resilient_clients_cost_is_measured(tmp_path):
    """bench/client_cost.py, smoke-sized: both clients measured against real
    replicas, and its goals reported (the figures are `make bench`'s)."""
    run = subprocess.run([sys.executable, "-m", "bench.client_cost", "--smoke", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "client_cost.json").read_text())["summary"]
    assert set(summary) == {"plain", "resilient"}
    assert all(m["throughput"] > 0 and m["p99_us"] > 0 for m in summary.values())
    assert summary["plain"]["retries"] == 0
    report = (tmp_path / "client_cost.md").read_text()
    assert "resilient ≥ 0.95× plain throughput" in report and "p99 within 10 %" in report
