"""k8s/network-policy.yaml means what it says, against the real labels: the
load generator's and the doctor's Job pods (cluster_job.job_manifest),
Prometheus' pods (k8s/prometheus) and every stage's echo pods with their
named ports. Rename a label or a port on either side and these fail.

(Strict schema validation of the policy: test_manifests.py, with the rest
of k8s/.)"""

from functools import cache

import pytest

from manifests import VERSIONS, of_kind, render, validation_errors
from network_policy import Pod, admits, isolating, selects
from support import ROOT, STAGES, stages_from
from workshop import doctor
from workshop.backends.cluster_job import CLIENT_LABEL, job_manifest, load_arguments
from workshop.load_generator import LoadSpec
from workshop.stages import stage_dir


@cache
def shared():
    return render(ROOT / "k8s")


@cache
def stage_objects(stage):
    return render(stage_dir(stage) / "k8s")


def policies():
    found = of_kind(shared(), "NetworkPolicy")
    assert found, "k8s/ renders no NetworkPolicy"
    return found


def template_pod(obj):
    """The pod a Deployment's or a Job's template makes, in the object's namespace."""
    template = obj["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    return Pod(obj["metadata"]["namespace"], dict(template["metadata"]["labels"]), ports)


def echo_pod(stage):
    (deployment,) = of_kind(stage_objects(stage), "Deployment")
    return template_pod(deployment)


def prometheus_pod():
    (deployment,) = [d for d in of_kind(shared(), "Deployment") if d["metadata"]["name"] == "prometheus"]
    return template_pod(deployment)


def namespace():
    (obj,) = of_kind(shared(), "Namespace")
    return obj["metadata"]["name"]


def load_job():
    """The kube backend's load Job, as JobLoad creates it."""
    spec = LoadSpec(rate=500, timeout_s=1.0, max_s=10, fault="crash", fault_at_s=1.0, naive_rate=100)
    return job_manifest("echo-loadgen-t", namespace(), load_arguments(namespace(), "echo", spec, "tcp://echo:5555"),
                        deadline_s=160)


def doctor_job():
    """The doctor's echo check Job, as check_echo creates it."""
    return job_manifest("doctor-echo-t", doctor.NAMESPACE,
                        ["echo", "--namespace", doctor.NAMESPACE, "--service", "echo"], deadline_s=120)


JOBS = {"load": load_job, "doctor": doctor_job}


def stranger(ns=None, **labels):
    """A pod nobody declared."""
    return Pod(ns or namespace(), labels)


def test_the_policies_live_in_the_stages_namespace():
    assert {p["metadata"]["namespace"] for p in policies()} == {echo_pod(s).namespace for s in STAGES} == {
        namespace()}


def test_every_pod_in_the_namespace_is_isolated_for_ingress():
    (deny,) = [p for p in policies() if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")
    pods = [echo_pod(s) for s in STAGES] + [prometheus_pod(), template_pod(load_job()), stranger()]
    for pod in pods:
        assert deny in isolating(policies(), pod)
    # nothing at all reaches Prometheus or the Jobs (port-forward does not count)
    for source in [template_pod(load_job()), template_pod(doctor_job()), echo_pod("05"), stranger()]:
        assert not admits(policies(), source, prometheus_pod(), "web")


def test_egress_is_left_open():
    assert all(p["spec"]["policyTypes"] == ["Ingress"] and "egress" not in p["spec"] for p in policies())


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("stage", STAGES)
def test_the_workshops_jobs_reach_the_echo_port_of_every_stage(job, stage):
    assert admits(policies(), template_pod(JOBS[job]()), echo_pod(stage), "zmq")


@pytest.mark.parametrize("job", JOBS)
def test_the_jobs_match_both_peers_explicitly(job):
    """Each peer alone admits the Job's pods: the load generator's labels,
    and the declared client label they carry on purpose."""
    pod = template_pod(JOBS[job]())
    assert CLIENT_LABEL.items() <= pod.labels.items()
    (echo,) = [p for p in policies() if p["spec"]["podSelector"] != {}]
    (zmq_rule,) = [r for r in echo["spec"]["ingress"] if [p["port"] for p in r["ports"]] == ["zmq"]]
    assert len(zmq_rule["from"]) == 2
    assert all(selects(peer["podSelector"], pod.labels) for peer in zmq_rule["from"])


def test_a_declared_client_reaches_the_echo_port_and_nothing_else():
    client = stranger(**CLIENT_LABEL)
    for stage in STAGES:
        assert admits(policies(), client, echo_pod(stage), "zmq")
    assert not admits(policies(), client, echo_pod("05"), "metrics")
    assert not admits(policies(), client, prometheus_pod(), "web")


@pytest.mark.parametrize("stage", STAGES)
def test_undeclared_pods_do_not_reach_the_echo_port(stage):
    target = echo_pod(stage)
    load_labels = template_pod(load_job()).labels
    assert not admits(policies(), stranger(), target, "zmq")
    assert not admits(policies(), prometheus_pod(), target, "zmq")
    assert not admits(policies(), echo_pod(stage), target, "zmq")  # not even another replica
    # the right labels, from another namespace (a podSelector alone means this one)
    assert not admits(policies(), stranger("elsewhere", **load_labels), target, "zmq")
    assert not admits(policies(), stranger("elsewhere", **CLIENT_LABEL), target, "zmq")
    # a client label with another value, or the load generator's name without the rest
    assert not admits(policies(), stranger(**{key: "false" for key in CLIENT_LABEL}), target, "zmq")
    assert not admits(policies(), stranger(**{"app.kubernetes.io/name": "loadgen"}), target, "zmq")


@pytest.mark.parametrize("stage", stages_from("05"))
def test_only_prometheus_reaches_the_metrics_port(stage):
    target = echo_pod(stage)
    assert admits(policies(), prometheus_pod(), target, "metrics")
    for job in JOBS.values():
        assert not admits(policies(), template_pod(job()), target, "metrics")
    assert not admits(policies(), stranger(), target, "metrics")
    assert not admits(policies(), stranger("elsewhere", **prometheus_pod().labels), target, "metrics")


def test_every_port_the_policies_name_is_a_named_port_of_the_pods_they_select():
    pods = [echo_pod(s) for s in STAGES] + [prometheus_pod()]
    named = {port["port"] for p in policies() for rule in p["spec"].get("ingress") or []
             for port in rule.get("ports") or []}
    assert named == {"zmq", "metrics"}  # by name, so a renumbered port keeps working
    for p in policies():
        for rule in p["spec"].get("ingress") or []:
            for port in rule["ports"]:
                selected = [pod for pod in pods if selects(p["spec"]["podSelector"], pod.labels)]
                assert any(port["port"] in pod.ports for pod in selected), (p["metadata"]["name"], port)


def test_without_the_policies_everyone_reaches_everything():
    """The model is not vacuous: the denials above are the policies' doing."""
    for source in [stranger(), stranger("elsewhere")]:
        assert admits([], source, echo_pod("05"), "zmq") and admits([], source, echo_pod("05"), "metrics")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("job", JOBS)
def test_the_job_manifests_pass_strict_validation(job, version):
    assert validation_errors(JOBS[job](), version) is None
