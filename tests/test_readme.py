"""The README's claims that a run can check: its scoreboard is the one
`make demo` prints (the same stages across and rows down; its numbers are a
real run's), and its table of lesson sizes is what `make diff` prints."""

import re
import subprocess

from support import ROOT, STAGES
from workshop import report
from workshop.scenarios import SCENARIOS, ScenarioResult


def readme():
    return (ROOT / "README.md").read_text()


def markdown_table(first_cell):
    """The rows of the README's Markdown table whose header starts with `first_cell`."""
    lines = readme().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[0], rows[2:]


def test_readme_scoreboard_has_the_demos_columns_and_rows():
    header, rows = markdown_table("scenario")
    assert header == ["scenario", *STAGES]
    results = [ScenarioResult(stage, name, "local", via_service_sent=1 if cls.naive_rate else None,
                              resilient_sent=1 if cls.resilient_rate else None)
               for name, cls in SCENARIOS.items() for stage in STAGES]
    assert [row[0] for row in rows] == [heading for heading, _, _ in report.columns(results)]
    assert all(len(row) == len(header) for row in rows)


def changed_lines(before, after):
    printed = subprocess.run(["make", "-s", "diff", f"FROM={before}", f"TO={after}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    return sum(1 for line in printed.splitlines()
               if line[:1] in "+-" and not re.match(r"(\+\+\+|---) ", line))


def test_the_size_of_each_lesson_is_what_make_diff_prints():
    header, (row,) = markdown_table("lesson")
    pairs = [tuple(heading.split("→")) for heading in header[1:]]
    numbers = [stage.split("-")[0] for stage in STAGES]
    assert pairs == list(zip(numbers, numbers[1:]))
    assert [int(cell) for cell in row[1:]] == [changed_lines(a, b) for a, b in pairs]
