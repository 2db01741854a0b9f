"""The commands of a chapter (or the README) and the output it says you
should see, read from its ```console blocks.

A block starts with `$ command` lines, each followed by the output it shows.
An HTML comment right before the block says how a test treats it:

- `<!-- runs here -->`: each command is run, from the repository root, with
  the workshop's tools first on PATH (as after `source .venv/bin/activate`);
  its output must match what the block shows;
- `<!-- runs here, keeps running -->`: one command that starts a server; it
  is started and left running for the blocks after it, once the output the
  block shows has appeared;
- `<!-- runs here, as root -->`: as "runs here", where a memory cgroup can be
  made (root: workshop/backends/cgroups.py); elsewhere it is only checked;
- no comment: the commands are only checked, not run (a cluster's, say).

Shown output matches as a template: every number stands for any number
(figures move from run to run, their words do not), a table's rules and gaps
for any width, `…` for any text within a line (a path, say), and a line
`...` for any lines. Ports 5555 and 8000 are replaced by free ones, in commands and output
alike, so a run here never collides with anything already listening (and
71091, which libzmq takes as 65536 + 5555, by 65536 + the free one).
"""

import re
from dataclasses import dataclass, field

FENCE = re.compile(r"(?:<!-- (runs here(?:, keeps running|, as root)?) -->\s*\n)?```console\n(.*?)```", re.S)


@dataclass
class Command:
    line: str                         # what follows the "$ "
    shown: list = field(default_factory=list)  # the output lines under it


@dataclass
class Block:
    how: str | None                   # "runs here", "runs here, keeps running" or None
    commands: list


def blocks(text):
    found = []
    for match in FENCE.finditer(text):
        commands = []
        for line in match.group(2).splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:]))
            elif commands:
                commands[-1].shown.append(line)
        found.append(Block(match.group(1), commands))
    return found


def program(command_line):
    """The program a command line runs, after any VAR=value settings."""
    words = [w for w in command_line.split() if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
    return words[0] if words else ""


FLEXIBLE = re.compile(r"(\d+(?:[.,]\d+)*|-{3,}| {2,}|…)")
STANDS_FOR = {"number": r"\d+(?:[.,]\d+)*", "rule": r"-{3,}", "gap": r" {2,}", "anything": r".*?"}


LOST = re.compile(r"(lost \d+)(?:[: ][^,]*)?")  # a scoreboard cell's lost count, and its causes
CAUSES = "@causes@"  # where they were: re.escape leaves it as it is


def template(line):
    """A regular expression for one shown line: a number matches any number,
    and so that a table whose cells hold other numbers still matches, a rule
    of dashes any rule and a gap of spaces any gap; a scoreboard cell's
    "lost N" may come with any causes (they move with the machine's load:
    the scoreboard's tests assert them)."""
    pattern = ""
    line = LOST.sub(lambda match: match.group(1) + CAUSES, line)
    for index, part in enumerate(FLEXIBLE.split(line)):
        if index % 2 == 0:
            pattern += re.escape(part).replace(CAUSES, r"(?:[: ][^,]*)?")
        else:
            kind = "number" if part[0].isdigit() else "rule" if part[0] == "-" else "anything" if part == "…" else "gap"
            pattern += STANDS_FOR[kind]
    return re.compile(pattern + r"\s*")


def matches(shown, actual):
    """Does the actual output (lines) match the shown lines?"""
    def match(i, j):
        if i == len(shown):
            return j == len(actual)
        if shown[i].strip() == "...":
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and template(shown[i].rstrip()).fullmatch(actual[j].rstrip()) is not None \
            and match(i + 1, j + 1)
    return match(0, 0)
