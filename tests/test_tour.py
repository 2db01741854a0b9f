"""`python -m workshop tour` shows every stage's capability at work."""

import subprocess
import sys

from support import ROOT


def test_tour_prints_one_working_line_per_stage():
    result = subprocess.run([sys.executable, "-m", "workshop", "tour"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "01-plain", "02-logging", "03-probes", "04-shutdown", "05-metrics"]
    assert "echoed 1000/1000" in lines[0]
    assert "1 JSON ERROR record" in lines[1]
    assert "exits 0 while serving, 1 after a hang" in lines[2]
    assert "2000 answered, exit 0" in lines[3]
    assert "echo_requests_total rose by 500 for 500 echoes" in lines[4]
