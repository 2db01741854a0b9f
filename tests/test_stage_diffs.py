"""Each stage is the previous one plus one capability: nothing renamed or
dropped, and a diff small enough to read in one sitting."""

import difflib

import pytest

from support import STAGES, STAGES_DIR

MAX_CHANGED_LINES = 250
PAIRS = list(zip(STAGES, STAGES[1:]))


def stage_files(stage):
    root = STAGES_DIR / stage
    return {
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_there_are_five_stages():
    assert STAGES == ["01-plain", "02-logging", "03-probes", "04-shutdown", "05-metrics"]


@pytest.mark.parametrize("before, after", PAIRS)
def test_every_file_carries_over_to_the_next_stage(before, after):
    assert stage_files(before) <= stage_files(after)


@pytest.mark.parametrize("before, after", PAIRS)
def test_diff_between_stages_stays_small(before, after):
    changed = 0
    for name in stage_files(before) | stage_files(after):
        if name == "README.md":
            continue
        old = (STAGES_DIR / before / name)
        new = (STAGES_DIR / after / name)
        old_lines = old.read_text().splitlines() if old.exists() else []
        new_lines = new.read_text().splitlines() if new.exists() else []
        changed += sum(
            1 for line in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        )
    assert 0 < changed <= MAX_CHANGED_LINES
