"""`python -m workshop tour` shows every stage's capability at work."""

import re
import subprocess
import sys

from support import ROOT, STAGES
from workshop import tour


def test_tour_prints_one_working_line_per_stage():
    result = subprocess.run([sys.executable, "-m", "workshop", "tour"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == STAGES
    shown = dict(zip(STAGES, lines))
    assert "echoed 1000/1000" in shown["01-plain"]
    assert "1 JSON ERROR record" in shown["02-logging"]
    assert "exits 0 while serving, 1 after a hang" in shown["03-probes"]
    assert "2000 answered, exit 0" in shown["04-shutdown"]
    assert "echo_requests_total rose by 500 for 500 echoes" in shown["05-metrics"]
    limits = re.search(r"beside (\d+) megabyte frames, their sender dropped (\d+) times: (\d+) echoed, "
                       r"peak (\d+) MB", shown["06-limits"])
    assert limits, shown["06-limits"]
    frames, dropped, echoed, peak_mb = map(int, limits.groups())
    # 20 MB sent at it: its sender cut again and again (each connection queues two frames; without
    # MAXMSGSIZE: never), and the peak where an idle 06 is (~31 MB)
    assert frames >= 20 and dropped >= frames // 4 and echoed >= 500 and peak_mb < 31 + 20, shown["06-limits"]
    assert "exit 2, one record: bad setting ECHO_BIND='tcp://*:99999'" in shown["07-settings"]


def test_a_stage_is_toured_by_what_its_folder_says_it_adds():
    assert [tour.lesson(stage, previous) for previous, stage in zip([None, *STAGES], STAGES)] == [
        ["crash-only echo"], ["logging"], ["probes"], ["graceful shutdown"], ["metrics"], ["limits"],
        ["checked settings"]]
