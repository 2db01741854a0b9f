"""Each chapter's minikube commands are exactly what the files support: the
image tag the Deployment runs, paths that exist, the right names."""

import re

import pytest

from manifests import of_kind, render
from support import ROOT, STAGES, STAGES_DIR


def commands(stage):
    text = (STAGES_DIR / stage / "README.md").read_text()
    return [line.strip() for line in text.splitlines() if line.strip().startswith(("minikube ", "kubectl "))]


@pytest.mark.parametrize("stage", STAGES)
def test_image_build_command_makes_the_image_the_deployment_runs(stage):
    builds = [c for c in commands(stage) if c.startswith("minikube image build")]
    assert builds == [f"minikube image build -t cloudnative-echo:{stage} stages/{stage}"]
    (deployment,) = of_kind(render(STAGES_DIR / stage / "k8s"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"cloudnative-echo:{stage}"


@pytest.mark.parametrize("stage", STAGES)
def test_kubectl_commands_name_what_the_manifests_create(stage):
    objects = render(STAGES_DIR / stage / "k8s")
    namespace = objects[0]["metadata"]["namespace"]
    names = {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objects}
    kubectl = [c for c in commands(stage) if c.startswith("kubectl ")]
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
