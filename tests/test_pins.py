"""One version of each package everywhere: what the stages' images, the load
generator's image and the workshop's own environment install."""

import re

import pytest

from support import ROOT, STAGES, STAGES_DIR


def pins(path):
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            found[match[1].lower()] = match[2]
    return found


@pytest.mark.parametrize("requirements", [STAGES_DIR / s / "requirements.txt" for s in STAGES]
                         + [ROOT / "loadgen-image" / "requirements.txt"], ids=lambda p: str(p.relative_to(ROOT)))
def test_images_pin_what_the_workshop_environment_pins(requirements):
    workshop = pins(ROOT / "requirements.txt")
    image = pins(requirements)
    assert image and {name: workshop.get(name) for name in image} == image
