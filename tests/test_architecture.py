"""ARCHITECTURE.md stays true: every path it names exists, and every module
of the driver is on the map."""

import re

from support import ROOT

MAP = (ROOT / "ARCHITECTURE.md").read_text()
NAMED = set(re.findall(r"`([\w./-]+/[\w./-]*)`", MAP))


def test_every_path_the_map_names_exists():
    missing = sorted(path for path in NAMED if not (ROOT / path).exists())
    assert NAMED and not missing, missing


def test_every_driver_module_is_on_the_map():
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "workshop").rglob("*.py") if p.name != "__init__.py"}
    assert modules - NAMED == set()
