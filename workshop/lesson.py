"""A stage's lesson as code: what it adds to the stage before it, shown whole
rather than as a diff. New files in full; in a changed Python file, each
top-level definition (function, class, or run of assignments) that is new
or changed, in full; in any other changed file, the lines it adds, with the
line before each run for context. The chapter (README.md) is left out.

    python -m workshop lesson 04
"""

import ast
import difflib

from .stages import all_stages, stage_dir

LEFT_OUT = {"README.md"}


def files(stage):
    root = stage_dir(stage)
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.name not in LEFT_OUT}


def previous(stage):
    stages = all_stages()
    index = stages.index(stage_dir(stage).name)
    return stages[index - 1] if index else None


def statements(source):
    """[(name, text)] for each top-level statement, the comments right above
    it included; a definition is named by its name, anything else by its text."""
    lines = source.splitlines()
    found = []
    for node in ast.parse(source).body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        text = "\n".join(lines[start:node.end_lineno])
        found.append((getattr(node, "name", None) or text, text))
    return found


def changed_definitions(old_source, new_source):
    """The new or changed statements of `new_source`, in its order; adjacent
    ones (a run of imports or settings) joined into one block."""
    old = dict(statements(old_source))
    blocks, last_index = [], None
    for index, (name, text) in enumerate(statements(new_source)):
        if old.get(name) == text:
            continue
        if blocks and last_index == index - 1 and "\n" not in text and "\n" not in blocks[-1].split("\n\n")[-1]:
            blocks[-1] += "\n" + text
        else:
            blocks.append(text)
        last_index = index
    return blocks


def added_lines(old_text, new_text):
    out = []
    for group in difflib.SequenceMatcher(None, old_text.splitlines(), new_text.splitlines()).get_grouped_opcodes(1):
        for tag, _, _, j1, j2 in group:
            new_lines = new_text.splitlines()[j1:j2]
            out += [f"  {line}" for line in new_lines] if tag == "equal" else (
                [f"+ {line}" for line in new_lines] if tag in ("insert", "replace") else [])
        out.append("  ...")
    return out


def lesson(stage):
    """[(file, what to show)] for what `stage` adds to the stage before it."""
    before = previous(stage)
    shown = []
    for name in sorted(files(stage)):
        new_text = (stage_dir(stage) / name).read_text()
        old_path = stage_dir(before) / name if before else None
        if old_path is None or not old_path.exists():
            shown.append((f"{name} (new)", new_text.rstrip()))
            continue
        old_text = old_path.read_text()
        if old_text == new_text:
            continue
        if name.endswith(".py"):
            shown.append((name, "\n\n".join(changed_definitions(old_text, new_text))))
        else:
            shown.append((name, "\n".join(added_lines(old_text, new_text))))
    return shown


def text(stage):
    before = previous(stage)
    title = f"{stage_dir(stage).name}: what it adds to {before}" if before else f"{stage_dir(stage).name}"
    return "\n\n".join([f"# {title}"] + [f"## {name}\n\n{body}" for name, body in lesson(stage)])
