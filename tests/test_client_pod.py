"""k8s/optional/client-pod.yaml, the README's manual client: valid for the
oldest and newest schemas (strict), admitted by the restricted Pod Security
Standard the namespace enforces (a `kubectl run` without a securityContext
is Forbidden there), and admitted by k8s/network-policy.yaml to the echo
port of every stage."""

import pytest
import yaml

from manifests import VERSIONS, of_kind, render, validation_errors
from network_policy import Pod, admits
from support import ROOT, STAGES
from workshop.stages import stage_dir

CLIENT_POD = ROOT / "k8s" / "optional" / "client-pod.yaml"


def client_pod():
    return yaml.safe_load(CLIENT_POD.read_text())


def restricted_violations(pod_spec):
    """What the restricted Pod Security Standard rejects in a pod spec
    (https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted)."""
    found = []
    pod_context = pod_spec.get("securityContext") or {}
    for container in pod_spec["containers"]:
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            found.append(f"{name}: capabilities must drop ALL")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot must be true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser must not be 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_the_client_pod_passes_strict_validation(version):
    assert validation_errors(client_pod(), version) is None


def test_the_client_pod_meets_the_restricted_profile_and_a_bare_pod_does_not():
    pod = client_pod()
    assert pod["metadata"]["namespace"] == of_kind(render(ROOT / "k8s"), "Namespace")[0]["metadata"]["name"]
    assert restricted_violations(pod["spec"]) == []
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True  # as every pod here
    bare = {"containers": [{"name": "c", "image": "cloudnative-echo:loadgen"}]}  # what `kubectl run` makes
    assert len(restricted_violations(bare)) == 4


@pytest.mark.parametrize("stage", STAGES)
def test_the_network_policy_admits_the_client_pod_to_the_echo_port(stage):
    pod = client_pod()
    (deployment,) = of_kind(render(stage_dir(stage) / "k8s"), "Deployment")
    template = deployment["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    echo = Pod(deployment["metadata"]["namespace"], dict(template["metadata"]["labels"]), ports)
    client = Pod(pod["metadata"]["namespace"], pod["metadata"]["labels"])
    policies = of_kind(render(ROOT / "k8s"), "NetworkPolicy")
    assert admits(policies, client, echo, "zmq")
    if "metrics" in ports:
        assert not admits(policies, client, echo, "metrics")  # the metrics port stays Prometheus'
