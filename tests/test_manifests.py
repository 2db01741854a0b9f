"""The manifests users `kubectl apply -k` mid-workshop: valid for Kubernetes
1.30 and the newest schemas, safe (restricted Pod Security Standard), and
consistent with each other and with the code."""

from pathlib import Path

import pytest
import yaml

from manifests import VERSIONS, of_kind, render, validation_errors
from support import ROOT, STAGES, STAGES_DIR, stages_from

KUSTOMIZATIONS = [STAGES_DIR / s / "k8s" for s in STAGES] + [ROOT / "k8s"]
PRESTOP_S = 3
MARGIN_S = 2


def deployment(stage):
    (obj,) = of_kind(render(STAGES_DIR / stage / "k8s"), "Deployment")
    return obj


def container(stage):
    (only,) = deployment(stage)["spec"]["template"]["spec"]["containers"]
    return only


def env_of(stage):
    return {e["name"]: e["value"] for e in container(stage).get("env", [])}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_rendered_object_passes_strict_validation(kustomization, version):
    objects = render(kustomization)
    assert objects
    for obj in objects:
        assert validation_errors(obj, version) is None, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_typo_fails_strict_validation(version):
    broken = yaml.safe_load((Path(__file__).parent / "fixtures" / "typo-deployment.yaml").read_text())
    assert validation_errors(broken, version) is not None


@pytest.mark.parametrize("stage", STAGES)
def test_deployment_is_apps_v1_with_three_replicas_and_stage_image(stage):
    obj = deployment(stage)
    assert obj["apiVersion"] == "apps/v1" and obj["spec"]["replicas"] == 3
    assert container(stage)["image"] == f"cloudnative-echo:{stage}"
    # `minikube image build` puts the image in the node's store: never pull it.
    assert container(stage)["imagePullPolicy"] in ("IfNotPresent", "Never")
    for name in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container(stage)["resources"][name])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pod_templates_meet_the_restricted_profile(kustomization):
    for obj in of_kind(render(kustomization), "Deployment"):
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("stage", STAGES)
def test_echo_pods_need_no_api_token(stage):
    assert deployment(stage)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_selectors_match_template_labels_and_services_find_pods(kustomization):
    objects = render(kustomization)
    for obj in of_kind(objects, "Deployment"):
        selector = obj["spec"]["selector"]["matchLabels"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert any(k.startswith("app.kubernetes.io/") for k in labels)
    for service in of_kind(objects, "Service"):
        pods = [d for d in of_kind(objects, "Deployment")
                if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, service["metadata"]["name"]
        port_names = {p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


@pytest.mark.parametrize("stage", stages_from("03"))
def test_probes_point_at_declared_ports_and_the_shipped_script(stage):
    c = container(stage)
    port_names = {p["name"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"]["port"] in port_names
    command = c["livenessProbe"]["exec"]["command"]
    assert command[0] == "python" and (STAGES_DIR / stage / command[1]).is_file()
    assert command[1] in (STAGES_DIR / stage / "Dockerfile").read_text()
    # the probe's own wait must fit in its timeout, with room for Python to start
    assert c["livenessProbe"]["timeoutSeconds"] * 1000 >= 2 * 500


@pytest.mark.parametrize("stage", stages_from("04"))
def test_grace_period_covers_prestop_drain_and_margin(stage):
    pod = deployment(stage)["spec"]["template"]["spec"]
    assert container(stage)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_S)]
    drain_s = float(env_of(stage)["DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= PRESTOP_S + drain_s + MARGIN_S


@pytest.mark.parametrize("stage", stages_from("05"))
def test_metrics_port_is_declared_and_annotated_for_scraping(stage):
    template = deployment(stage)["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in container(stage)["ports"]}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] == int(env_of(stage)["METRICS_PORT"])


def test_stage_namespace_is_created_by_the_shared_pieces():
    shared = render(ROOT / "k8s")
    (namespace,) = of_kind(shared, "Namespace")
    for stage in STAGES:
        assert {o["metadata"]["namespace"] for o in render(STAGES_DIR / stage / "k8s")} == {
            namespace["metadata"]["name"]}


def test_loadgen_role_reads_endpointslices_and_pods_only():
    (role,) = [r for r in of_kind(render(ROOT / "k8s"), "Role") if r["metadata"]["name"] == "loadgen"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {(g, r, v) for g, r in [("discovery.k8s.io", "endpointslices"), ("", "pods")]
                       for v in ("get", "list", "watch")}


def test_every_shared_manifest_is_in_the_kustomization():
    """What `kubectl apply -k k8s` applies, and the tests above validate, is
    every file in k8s/ (k8s/optional/ is applied by hand)."""
    rendered = {(o["kind"], o["metadata"]["name"]) for o in render(ROOT / "k8s")}
    files = [p for p in (ROOT / "k8s").rglob("*.yaml")
             if p.name != "kustomization.yaml" and "optional" not in p.relative_to(ROOT / "k8s").parts]
    assert ROOT / "k8s" / "network-policy.yaml" in files
    for path in files:
        for obj in yaml.safe_load_all(path.read_text()):
            assert (obj["kind"], obj["metadata"]["name"]) in rendered, path.relative_to(ROOT)
