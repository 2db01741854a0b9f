"""Each stage is the previous one plus one capability: nothing renamed or
dropped, a diff small enough to read in one sitting, and the talk's stages
the size of the talk's slides."""

import ast
import difflib

import pytest

from support import STAGES, STAGES_DIR

MAX_CHANGED_LINES = 250
PAIRS = list(zip(STAGES, STAGES[1:]))
FAULT_MODULE = "workshop_faults.py"
# The talk's five stages carry their lessons and nothing else: a screen or
# two of code each (the hardening is stages 06 and 07).
MOST_LINES = {("01-plain", "echo_server.py"): 60, ("05-metrics", "echo_server.py"): 200,
              ("03-probes", "healthcheck.py"): 50}


def stage_files(stage):
    root = STAGES_DIR / stage
    return {
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def changed_lines(before, after):
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
    return changed


def test_the_talks_five_stages_then_the_hardening():
    assert STAGES == ["01-plain", "02-logging", "03-probes", "04-shutdown", "05-metrics", "06-limits",
                      "07-settings"]


@pytest.mark.parametrize("before, after", PAIRS)
def test_every_file_carries_over_to_the_next_stage(before, after):
    assert stage_files(before) <= stage_files(after)


@pytest.mark.parametrize("before, after", PAIRS)
def test_diff_between_stages_stays_small(before, after):
    assert 0 < changed_lines(before, after) <= MAX_CHANGED_LINES


@pytest.mark.parametrize("stage, name", list(MOST_LINES))
def test_the_talks_stages_fit_on_a_slide(stage, name):
    lines = len((STAGES_DIR / stage / name).read_text().splitlines())
    assert lines <= MOST_LINES[stage, name], f"{stage}/{name}: {lines} lines"


@pytest.mark.parametrize("stage", STAGES)
def test_the_fault_switch_is_one_identical_module(stage):
    assert (STAGES_DIR / stage / FAULT_MODULE).read_bytes() == (STAGES_DIR / STAGES[0] / FAULT_MODULE).read_bytes()


@pytest.mark.parametrize("stage", STAGES)
def test_the_fault_switch_is_one_import_and_one_call_in_the_loop(stage):
    tree = ast.parse((STAGES_DIR / stage / "echo_server.py").read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import)
               and any(alias.name == "workshop_faults" for alias in node.names)]
    uses = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "workshop_faults"]
    (loop,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "echo_waiting"]
    assert len(imports) == 1 and [use.attr for use in uses] == ["obey"]
    assert any(use in list(ast.walk(loop)) for use in uses), "obey() is called in echo_waiting()"
