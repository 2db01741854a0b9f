"""The README's scoreboard is the one `make demo` prints: the same stages
across and the same rows down (its numbers are a real run's)."""

from support import ROOT, STAGES
from workshop import report
from workshop.scenarios import SCENARIOS, ScenarioResult


def readme_scoreboard():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    scenario "))
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return block


def test_readme_scoreboard_has_the_demos_columns_and_rows():
    header, rule, *rows = readme_scoreboard()
    assert header.split() == ["scenario", *STAGES] and set(rule) <= {"-", " "}
    results = [ScenarioResult(stage, name, "local", via_service_sent=1 if cls.naive_rate else None)
               for name, cls in SCENARIOS.items() for stage in STAGES]
    headings = [heading for heading, _, _ in report.columns(results)]
    assert [row[:len(heading)] for row, heading in zip(rows, headings)] == headings and len(rows) == len(headings)
