"""`python -m workshop doctor` against kmock (the API server) and a fake
`minikube` on PATH (test_minikube.FakeMinikube). The test plays what a real
cluster would: the namespace (kmock cannot create Namespaces, so its GET is
answered by a reaction), the objects `kubectl apply -k k8s` makes, and the
controllers that roll out stage 01 and run the doctor's echo Job."""

import asyncio
import json
import sys

import kmock as km
import pytest
import urllib3
from kubernetes import client
from kubernetes.client import rest

from fake_minikube import FakeMinikube
from kube_cluster import NS, VERSION, ApiServer, JsonOnlyClient, api_client
from manifests import of_kind
from network_policy import Pod, admits
from support import ROOT, STAGES, STAGES_DIR, free_port
from workshop import doctor, notebook_setup
from workshop.backends.cluster_job import LOADGEN_IMAGE, line
from workshop.backends.kube import api_path
from workshop.manifests import render

pytestmark = pytest.mark.kmock(cls=ApiServer)
APPLY = "  fix: kubectl apply -k k8s"
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {
    "app.kubernetes.io/part-of": "cloudnative-echo", "pod-security.kubernetes.io/enforce": "restricted"}}}


class Cluster:
    """What a healthy cluster holds after `kubectl apply -k k8s` and `python -m
    workshop images`; each test takes one piece away."""

    def __init__(self, kmock, minikube):
        self.kmock, self.minikube = kmock, minikube
        self.namespace = NAMESPACE
        self.skip = set()                 # (kind, name) not to create
        self.job_fails = False
        self.job_log = line({"echo": {"endpoints": 3}}) + "\n"
        self.available_prometheus = 1

    def answer(self):
        """What kmock cannot store: /version/ (asked with a trailing slash) and the Namespace."""
        self.kmock.resources.load_bundled()
        self.kmock["get"]["/version/"] << VERSION
        if self.namespace is not None:
            self.kmock["get"][f"/api/v1/namespaces/{NS}"] << self.namespace

    async def create(self):
        self.answer()
        for obj in render(ROOT / "k8s"):
            key = (obj["kind"], obj["metadata"]["name"])
            if obj["metadata"]["name"] in ("loadgen", "prometheus") and obj["kind"] != "Namespace" \
                    and key not in self.skip:
                await self.kmock.post(api_path(obj)[0], json=obj)
        await self.kmock.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/prometheus", json={"status": {
            "replicas": 1, "availableReplicas": self.available_prometheus}})
        for stage in STAGES:
            self.minikube.add_image(f"cloudnative-echo:{stage}", f"id-{stage}")
        self.minikube.add_image(LOADGEN_IMAGE, "id-loadgen")

    async def controllers(self):
        """The Deployment and EndpointSlice controllers for stage 01, then the
        Job controller and the kubelet for the doctor's echo Job."""
        deployments = "apps/v1/deployments"
        while not self.live(deployments, "echo"):
            await asyncio.sleep(0.02)
        await self.kmock.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/echo", json={"status": {
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}})
        await self.kmock.post(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", json={
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "echo-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4", "ports": [{"name": "zmq", "port": 5555}],
            "endpoints": [{"addresses": [f"10.244.0.{i}"], "conditions": {"ready": True}}
                          for i in (1, 2, 3)]})
        while not (jobs := [name for name in self.names("batch/v1/jobs") if name.startswith("doctor-echo-")]):
            await asyncio.sleep(0.02)
        (job,) = jobs
        await self.kmock.post(f"/api/v1/namespaces/{NS}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job}-x1y2z", "namespace": NS, "labels": {"job-name": job}},
            "spec": {"containers": [{"name": "loadgen", "image": LOADGEN_IMAGE}]}})
        self.kmock[km.subresource("log")] << self.job_log.encode()
        await self.kmock.patch(f"/apis/batch/v1/namespaces/{NS}/jobs/{job}", json={"status": {
            "failed" if self.job_fails else "succeeded": 1}})

    def names(self, resource):
        return [key[2] for key in list(self.kmock.objects.keys()) if key[0] == resource and key[1] == NS]

    def live(self, resource, name):
        try:
            return not self.kmock.objects[resource, NS, name].deleted
        except KeyError:
            return False

    async def examine(self, context="minikube"):
        """The doctor's lines and exit code."""
        await self.create()
        controllers = asyncio.create_task(self.controllers())
        lines = []
        try:
            code = await asyncio.to_thread(doctor.run, context, api_client(self.kmock), lines.append,
                                           deploy_timeout_s=20, job_timeout_s=20, prometheus_wait_s=1)
        finally:
            controllers.cancel()
        return "\n".join(lines), code


@pytest.fixture
def cluster(kmock, tmp_path, monkeypatch):
    return Cluster(kmock, FakeMinikube(tmp_path / "bin", monkeypatch))


def failure(report, what):
    """The FAIL line about `what` and the line after it (its fix)."""
    lines = report.splitlines()
    (index,) = [i for i, text in enumerate(lines) if text.startswith(f"FAIL {what}")]
    return lines[index], next(text for text in lines[index + 1:] if text.startswith("  fix: "))


async def test_a_ready_cluster_passes_every_check(cluster):
    report, code = await cluster.examine()
    lines = report.splitlines()
    assert [text[:5] for text in lines] == ["ok   "] * len(doctor.CHECKS), report
    assert lines[0] == "ok   kubeconfig context: minikube"
    assert lines[-1].endswith(f"stage {STAGES[-1]} answered through Service echo, 3 endpoints")  # the most exercised
    assert code == 0
    # on a cluster that enforces k8s/network-policy.yaml, its Job's pods may reach the echo port
    (created,) = [r.data for r in list(cluster.kmock) if r.method.value == "POST" and r.url.path.endswith("/jobs")]
    assert not cluster.live("batch/v1/jobs", created["metadata"]["name"])  # it passed: deleted, not left behind
    labels = created["spec"]["template"]["metadata"]["labels"]
    (deployment,) = of_kind(render(STAGES_DIR / STAGES[-1] / "k8s"), "Deployment")
    echo = Pod(NS, dict(deployment["spec"]["template"]["metadata"]["labels"]), {"zmq": 5555})
    assert admits(of_kind(render(ROOT / "k8s"), "NetworkPolicy"), Pod(NS, labels), echo, "zmq")


async def test_a_namespace_without_its_pod_security_label_fails_with_apply(cluster):
    cluster.namespace = {**NAMESPACE, "metadata": {"name": NS, "labels": {"app.kubernetes.io/part-of": NS}}}
    report, code = await cluster.examine()
    fail, fix = failure(report, f"namespace {NS}")
    assert "pod-security.kubernetes.io/enforce=restricted" in fail
    assert fix == APPLY
    assert code == 1


async def test_a_missing_namespace_skips_what_lives_in_it(cluster):
    cluster.namespace = None  # kmock answers 404, as an API server would
    report, code = await cluster.examine()
    assert failure(report, f"namespace {NS}") == (
        f"FAIL namespace {NS}, Pod Security restricted: it does not exist", APPLY)
    assert [text.split(":")[0] for text in report.splitlines() if text.startswith("skip")] == [
        "skip RBAC for the load generator (ServiceAccount, Role, RoleBinding loadgen)",
        "skip Prometheus is available", "skip an echo through an in-cluster Job"]
    assert code == 1


async def test_a_missing_rolebinding_fails_with_apply(cluster):
    cluster.skip.add(("RoleBinding", "loadgen"))
    report, code = await cluster.examine()
    assert failure(report, "RBAC for the load generator") == (
        "FAIL RBAC for the load generator (ServiceAccount, Role, RoleBinding loadgen): "
        "RoleBinding loadgen is missing", APPLY)
    assert code == 1


async def test_a_missing_image_fails_with_the_images_command(cluster):
    await cluster.create()
    state = cluster.minikube.read()
    del state["images"]["id-loadgen"]
    cluster.minikube.write(state)
    cluster.create = lambda: asyncio.sleep(0)  # created above, less the image
    report, code = await cluster.examine()
    fail, fix = failure(report, "the images on the node")
    assert fail == f"FAIL the images on the node: missing {LOADGEN_IMAGE}"
    assert fix == f"  fix: {doctor.interpreter()} -m workshop images --context minikube"
    assert doctor.interpreter() in (".venv/bin/python", sys.executable)  # the one running, as typed
    assert "skip an echo through an in-cluster Job: needs the images on the node" in report
    assert code == 1


async def test_prometheus_without_an_available_replica_fails(cluster):
    cluster.available_prometheus = 0
    report, code = await cluster.examine()
    fail, fix = failure(report, "Prometheus is available")
    assert fail.endswith("no available replica after 1 s")
    assert fix == f"  fix: kubectl -n {NS} describe deployment/prometheus"
    assert code == 1


async def test_prometheus_still_rolling_out_is_waited_for(cluster):
    cluster.available_prometheus = 0

    async def its_rollout():
        await asyncio.sleep(0.5)  # its pod starts a moment after the doctor first looks
        await cluster.kmock.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/prometheus", json={"status": {
            "replicas": 1, "availableReplicas": 1}})
    rollout = asyncio.create_task(its_rollout())
    report, code = await cluster.examine()
    await rollout
    assert "ok   Prometheus is available" in report.splitlines()
    assert code == 0, report


async def test_a_failing_echo_job_shows_its_log_and_how_to_read_it(cluster):
    cluster.job_fails = True
    cluster.job_log = "Traceback (most recent call last):\nSystemExit: no ready endpoints for service echo\n"
    report, code = await cluster.examine()
    fail, fix = failure(report, "an echo through an in-cluster Job")
    (job,) = [name for name in cluster.names("batch/v1/jobs") if name.startswith("doctor-echo-")]
    assert fail == f"FAIL an echo through an in-cluster Job: Job {job} failed; its last log lines:"
    assert "    SystemExit: no ready endpoints for service echo" in report
    assert fix == f"  fix: kubectl -n {NS} logs job/{job}"
    assert code == 1


async def test_a_context_that_is_not_a_minikube_profile_passes_on_its_echo(cluster):
    report, code = await cluster.examine(context="kind-workshop")
    lines = report.splitlines()
    assert any(text.startswith("ok   the context is a minikube profile: 'kind-workshop' is not") for text in lines)
    assert "ok   the images on the node: not listed (not a minikube profile): the echo check decides" in lines
    assert lines[-1].startswith("ok   an echo through an in-cluster Job")  # which the images' presence decides
    assert code == 0, report


async def test_the_fix_names_the_profile_examined(cluster):
    await cluster.create()
    cluster.minikube.update(profiles=["minikube", "workshop"])
    state = cluster.minikube.read()
    del state["images"]["id-loadgen"]
    cluster.minikube.write(state)
    cluster.create = lambda: asyncio.sleep(0)  # created above, less the image
    report, code = await cluster.examine(context="workshop")
    fail, fix = failure(report, "the images on the node")
    assert fix == f"  fix: {doctor.interpreter()} -m workshop images --context workshop"
    assert code == 1


def test_no_api_server_fails_with_minikube_start_and_skips_the_cluster_checks(tmp_path, monkeypatch):
    FakeMinikube(tmp_path / "bin", monkeypatch)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nobody listens here
    lines = []
    code = doctor.run("minikube", client.ApiClient(configuration), lines.append)
    assert lines[0] == "ok   kubeconfig context: minikube"
    assert lines[1].startswith("FAIL the API server answers: nobody answers")
    assert lines[1].endswith("\n  fix: minikube start -p minikube")  # the profile examined
    assert [text.split(":")[0] for text in lines[3:]] == [f"skip {check.what}" for check in doctor.CHECKS[3:]]
    assert code == 1


async def test_notebook_00_prepares_a_cluster_that_passes_the_doctor(cluster):
    """Its kube path: k8s/ applied, the images built into the minikube profile, the doctor passing."""
    cluster.answer()

    class Client(JsonOnlyClient):
        def call_api(self, method, url, header_params=None, body=None, *arguments, **options):
            if method == "POST" and url.endswith("/api/v1/namespaces"):  # kmock cannot even parse this path
                created = urllib3.HTTPResponse(body=json.dumps(body).encode(), status=201, preload_content=False,
                                               headers={"Content-Type": "application/json"})
                return rest.RESTResponse(created)
            return super().call_api(method, url, header_params, body, *arguments, **options)

    configuration = client.Configuration()
    configuration.host = str(cluster.kmock.url).rstrip("/")
    progress = []
    context = await asyncio.to_thread(notebook_setup.prepare_kube, "minikube", Client(configuration),
                                      progress.append)
    assert progress[0].startswith("applied: Namespace/cloudnative-echo, ")
    assert "NetworkPolicy/default-deny-ingress" in progress[0] and "NetworkPolicy/echo" in progress[0]
    assert not cluster.kmock.objects["networking.k8s.io/v1/networkpolicies", NS, "echo"].deleted
    assert progress[-1].startswith(f"built {LOADGEN_IMAGE} in ")
    await cluster.kmock.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/prometheus", json={"status": {
        "replicas": 1, "availableReplicas": 1}})  # its controller
    cluster.create = lambda: asyncio.sleep(0)  # prepared above
    report, code = await cluster.examine(context)
    assert code == 0, report
