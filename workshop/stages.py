"""Where the stages live, and how to name one: "03" or "03-probes".

WORKSHOP_STAGES_DIR points the driver at another copy of stages/: a
worktree of an older commit (to show the attacks take the old code down),
or a copy with an exercise's change made (tests/test_exercises.py).
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES_DIR = Path(os.environ.get("WORKSHOP_STAGES_DIR") or ROOT / "stages")


def all_stages():
    return sorted(p.name for p in STAGES_DIR.iterdir() if (p / "echo_server.py").is_file())


def resolve(name):
    """The full stage name for "03", "3" or "03-probes"."""
    matches = [s for s in all_stages() if s == name or s.split("-")[0] == name.zfill(2)]
    if len(matches) != 1:
        raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(all_stages())}")
    return matches[0]


def stage_dir(name):
    return STAGES_DIR / resolve(name)
