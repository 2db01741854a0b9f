"""What the Dockerfiles promise, read from the files themselves (the container
tests prove the built images behave)."""

import re

import pytest

from support import STAGES, STAGES_DIR

pytestmark = pytest.mark.parametrize("stage", STAGES)


def dockerfile(stage):
    return (STAGES_DIR / stage / "Dockerfile").read_text()


def instructions(stage):
    return [line for line in dockerfile(stage).splitlines() if line and not line.startswith("#")]


def test_base_image_is_the_official_python_unless_overridden(stage):
    assert instructions(stage)[:2] == ["ARG BASE_IMAGE=python:3.12-slim", "FROM ${BASE_IMAGE}"]


def test_requirements_install_in_their_own_layer_before_the_code(stage):
    text = dockerfile(stage)
    assert text.index("COPY requirements.txt .") < text.index("RUN pip install") < text.index("COPY echo_server.py")
    assert "--no-cache-dir" in text


def test_command_is_exec_form_and_user_is_numeric(stage):
    assert 'CMD ["python", "echo_server.py"]' in instructions(stage)
    assert re.search(r"^USER \d+:\d+$", dockerfile(stage), re.M)


def test_dockerignore_admits_only_what_the_image_copies(stage):
    allowed = {line[1:] for line in (STAGES_DIR / stage / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = {name for line in instructions(stage) if line.startswith("COPY ")
              for name in line.split()[1:-1]}
    # ...and the Dockerfile: minikube forces nothing in (test_build_context.py).
    assert allowed == copied | {"Dockerfile"}
