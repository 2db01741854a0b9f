"""The Kubernetes backend's API calls, against kmock: an in-memory Kubernetes
API emulator (no API server installs here). kmock stores objects and serves
lists and watches, but runs no controllers — where a test needs a rollout or
an EndpointSlice, the test plays the controller through the API.

The backend's calls are blocking (the kubernetes client); kmock serves on this
test's event loop, so every backend call runs in a thread."""

import asyncio
import json
import time

import kmock as km
import pytest
from kubernetes import client

from kube_cluster import NS, VERSION, ApiServer, api_client
from support import ROOT, STAGES, free_port, wait_for
from workshop import notebook_setup
from workshop.backends.cluster_job import JobLoad, line, outcome_lines, started_record
from workshop.backends.endpointslices import EndpointSliceWatcher, ready_endpoints
from workshop.backends.json_api import KubeApi
from workshop.backends.list_watch import BACKOFF_FIRST_S
from workshop.backends.kube import RESTARTED_AT, KubeBackend, api_path
from workshop.load_generator import FaultSent, LoadOutcome, LoadResult, LoadSpec
from workshop.manifests import load_stage, render
from workshop.stages import stage_dir

pytestmark = pytest.mark.kmock(cls=ApiServer)
DEPLOYMENTS = "apps/v1/deployments"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/cloudnative-echo/endpointslices"


@pytest.fixture
def backend(kmock):
    kmock.resources.load_bundled()  # so that listing a still-empty resource type works
    kube = KubeBackend(api_client=api_client(kmock))
    yield kube
    kube.close()


def stored(kmock, resource, name):
    """The live object, or None. (`key in kmock.objects` does not match here.)"""
    try:
        obj = kmock.objects[resource, NS, name]
    except KeyError:
        return None
    return None if obj.deleted else obj


def endpoint_slice(name, addresses, ready=True):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": f"echo-{ip}"}} for ip in addresses],
            "ports": [{"name": "zmq", "port": 5555}]}


async def test_apply_creates_every_object_then_patches_what_exists(kmock, backend):
    objects = render(stage_dir("04") / "k8s")
    for obj in objects:
        await asyncio.to_thread(backend.apply, obj)
    assert kmock.objects[DEPLOYMENTS, NS, "echo"]["spec"]["replicas"] == 3
    assert kmock.objects["v1/services", NS, "echo"]["spec"]["ports"][0]["port"] == 5555
    changed = json.loads(json.dumps(objects[-1] if objects[-1]["kind"] == "Deployment" else objects[0]))
    changed["spec"]["replicas"] = 5
    await asyncio.to_thread(backend.apply, changed)  # exists: 409, then a merge patch
    assert kmock.objects[DEPLOYMENTS, NS, "echo"]["spec"]["replicas"] == 5


async def act_as_controllers(kmock, replicas=3):
    """What the Deployment and EndpointSlice controllers would do: report the
    rollout done and publish the pods' endpoints."""
    while stored(kmock, DEPLOYMENTS, "echo") is None:
        await asyncio.sleep(0.01)  # until the backend has applied it
    await kmock.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/echo", json={"status": {
        "observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
        "availableReplicas": replicas}})
    await kmock.post(SLICES, json=endpoint_slice("echo-1", [f"10.0.0.{i}" for i in range(1, replicas + 1)]))


async def test_deploy_applies_the_stage_with_env_and_waits_for_rollout_and_endpoints(kmock, backend):
    controllers = asyncio.create_task(act_as_controllers(kmock))
    try:
        await asyncio.to_thread(backend.deploy, "04", {"ECHO_FAULTS": "1"}, 20)
    finally:
        controllers.cancel()
    container = kmock.objects[DEPLOYMENTS, NS, "echo"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "ECHO_FAULTS", "value": "1"} in container["env"]
    _, endpoints = backend.feed.snapshot()
    assert sorted(e.address for e in endpoints) == [f"tcp://10.0.0.{i}:5555" for i in (1, 2, 3)]


async def test_rollout_restart_patches_the_pod_template_like_kubectl(kmock, backend):
    backend.spec = load_stage("04")
    for obj in render(stage_dir("04") / "k8s"):
        await asyncio.to_thread(backend.apply, obj)
    await asyncio.to_thread(backend.rollout_restart, {"ECHO_STARTUP_DELAY": "2"})
    template = kmock.objects[DEPLOYMENTS, NS, "echo"]["spec"]["template"]
    assert RESTARTED_AT in template["metadata"]["annotations"]
    assert {"name": "ECHO_STARTUP_DELAY", "value": "2"} in template["spec"]["containers"][0]["env"]
    # A strategic merge: the API server merges containers and env entries by
    # name. (kmock applies any patch as a JSON merge patch, which would replace
    # the whole container list: a real server must be told which it is.)
    (patch,) = [r for r in list(kmock) if r.method.value == "PATCH"]
    assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"


async def test_scale_patches_the_scale_subresource(kmock, backend):
    backend.spec = load_stage("04")
    for obj in render(stage_dir("04") / "k8s"):
        await asyncio.to_thread(backend.apply, obj)
    await asyncio.to_thread(backend.scale, 1)
    assert kmock.objects[DEPLOYMENTS, NS, "echo"]["spec"]["replicas"] == 1


async def test_delete_pod_and_read_its_log(kmock, backend):
    backend.spec = load_stage("02")
    await kmock.post(f"/api/v1/namespaces/{NS}/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo-x", "namespace": NS},
        "spec": {"containers": [{"name": "echo", "image": "cloudnative-echo:02-logging"}]}})
    kmock[km.subresource("log")] << b'{"level": "ERROR", "message": "echo server crashed"}\n'
    assert "crashed" in await asyncio.to_thread(backend.logs, "echo-x")
    await asyncio.to_thread(backend.delete_pod, "echo-x")
    assert stored(kmock, "v1/pods", "echo-x") is None


async def test_endpointslice_watch_follows_changes_and_relists_after_410(kmock):
    kmock.resources.load_bundled()
    await kmock.post(SLICES, json=endpoint_slice("echo-a", ["10.0.0.1"]))
    # The first watch is told its resourceVersion is too old, as an API server may.
    kmock[km.action.WATCH][:1] << (GONE,)
    watcher = await asyncio.to_thread(EndpointSliceWatcher(KubeApi(api_client(kmock)), NS, "echo").start)
    try:
        assert {e.address for e in watcher.feed.snapshot()[1]} == {"tcp://10.0.0.1:5555"}
        await kmock.post(SLICES, json=endpoint_slice("echo-b", ["10.0.0.2"]))
        await kmock.post(SLICES, json=endpoint_slice("echo-c", ["10.0.0.3"], ready=False))
        assert await asyncio.to_thread(watcher.feed.wait_until, lambda e: len(e) == 2, 10)
        assert {e.address for e in watcher.feed.snapshot()[1]} == {"tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"}
        assert watcher.relists == 2  # the first list, and the one after 410 Gone
    finally:
        watcher.stop()


GONE = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "code": 410, "reason": "Expired",
                                    "message": "too old resource version"}}


async def test_repeated_410s_back_off_before_listing_again(kmock):
    kmock.resources.load_bundled()
    lists = []

    def record_list(request):
        if request.params.get("watch") != "true":
            lists.append(time.monotonic())
        raise NotImplementedError  # recorded: kmock answers it
    kmock.override >> record_list
    kmock[km.action.WATCH][:4] << (GONE,)  # four watches in a row: 410
    watcher = await asyncio.to_thread(EndpointSliceWatcher(KubeApi(api_client(kmock)), NS, "echo").start)
    try:
        await asyncio.to_thread(wait_for, lambda: len(lists) >= 5, 15, 0.05, "five lists")
    finally:
        watcher.stop()
    gaps = [round(b - a, 2) for a, b in zip(lists, lists[1:])]
    assert gaps[0] < BACKOFF_FIRST_S  # the first 410: list again at once
    assert gaps[1] >= 0.5 and gaps[2] >= 1.0 and gaps[3] >= 2.0, gaps  # then back off, doubling


async def test_a_silent_watch_is_given_up_after_the_read_timeout(kmock):
    """kmock, like a dead connection, never ends a watch: without a client-side
    read timeout the watcher would wait for ever."""
    kmock.resources.load_bundled()
    watcher = await asyncio.to_thread(
        EndpointSliceWatcher(KubeApi(api_client(kmock)), NS, "echo", read_timeout_s=1).start)
    try:
        await asyncio.to_thread(wait_for, lambda: watcher.watcher.watches >= 2, 10, 0.05, "a second watch")
        await kmock.post(SLICES, json=endpoint_slice("echo-a", ["10.0.0.1"]))
        assert await asyncio.to_thread(watcher.feed.wait_until, bool, 10)  # and it still follows changes
    finally:
        watcher.stop()


def test_an_endpoint_whose_readiness_is_unknown_counts_as_ready():
    """The API: a nil `ready` is to be read as ready; terminating ones never are."""
    endpoint_slice_json = endpoint_slice("echo-a", ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    conditions = [{"ready": None}, {}, {"ready": False}, {"ready": True, "terminating": True}]
    for endpoint, condition in zip(endpoint_slice_json["endpoints"], conditions):
        endpoint["conditions"] = condition
    assert {e.address for e in ready_endpoints(endpoint_slice_json, "zmq")} == {
        "tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"}


async def test_load_job_runs_in_cluster_and_its_log_is_read_back(kmock, backend):
    backend.spec = load_stage("04")
    spec = LoadSpec(rate=500, timeout_s=1.0, max_s=5, fault="crash", fault_at_s=1.0, naive_rate=100)
    load = await asyncio.to_thread(JobLoad, backend.api, NS, "echo", spec, "tcp://echo:5555", "echo-loadgen-t")
    job = kmock.objects["batch/v1/jobs", NS, "echo-loadgen-t"]
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "loadgen"
    command = pod_spec["containers"][0]["command"]
    assert command[:4] == ["python", "-m", "workshop.backends.cluster_job", "load"]
    assert ["--fault", "crash"] == command[command.index("--fault"):][:2]
    assert ["--service-address", "tcp://echo:5555"] == command[command.index("--service-address"):][:2]
    # the Job controller and kubelet: a pod, its log, and success
    await kmock.post(f"/api/v1/namespaces/{NS}/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo-loadgen-t-abc", "namespace": NS,
                                                         "labels": {"job-name": "echo-loadgen-t"}},
        "spec": {"containers": [{"name": "loadgen", "image": "cloudnative-echo:loadgen"}]}})
    aware = LoadResult(sent=3, answered=2, lost=1, samples=[(0.1, 0.0004, "tcp://10.0.0.1:5555"),
                                                            (0.2, None, "tcp://10.0.0.2:5555"),
                                                            (0.3, 0.0005, "tcp://10.0.0.1:5555")],
                       per_endpoint={"tcp://10.0.0.1:5555": 2, "tcp://10.0.0.2:5555": 1})
    naive = LoadResult(sent=1, answered=1, samples=[(0.1, 0.0003, "tcp://echo:5555")],
                       per_endpoint={"tcp://echo:5555": 1})
    fault = FaultSent("echo-a", "tcp://10.0.0.1:5555", 1.0)
    sent = LoadOutcome(aware=aware, naive=naive, fault=fault)
    started = {**started_record(), "at": time.time() - 2}  # the Job started 2 s ago, by its clock
    log = "\n".join([line(started), line({"fault": vars(fault)}), "a stray line", *outcome_lines(sent)]) + "\n"
    kmock[km.subresource("log")] << log.encode()
    elapsed = await asyncio.to_thread(load.elapsed)  # its clock, not when we read the line
    assert abs(elapsed - 2) <= backend.api.clock.uncertainty_s() + 0.1
    await kmock.patch(f"/apis/batch/v1/namespaces/{NS}/jobs/echo-loadgen-t", json={"status": {"succeeded": 1}})
    received = await asyncio.to_thread(load.result, 10)
    assert received == sent


async def test_setup_notebook_picks_kube_when_the_api_answers_and_prepares_it(kmock, backend):
    # kmock quirk: the client asks for /version/ (trailing slash), which kmock does not serve
    kmock["get"]["/version/"] << VERSION
    assert await asyncio.to_thread(notebook_setup.choose_backend, "auto", backend.api_client) == "kube"
    shared = render(ROOT / "k8s")
    assert [o["kind"] for o in shared].count("Namespace") == 1
    applied = await asyncio.to_thread(notebook_setup.prepare_cluster, backend, shared)
    assert {"Namespace/cloudnative-echo", "ServiceAccount/loadgen", "Role/loadgen", "RoleBinding/loadgen",
            "ConfigMap/prometheus", "Deployment/prometheus", "Service/prometheus",
            "NetworkPolicy/default-deny-ingress", "NetworkPolicy/echo"} <= set(applied)
    assert kmock.namespaces[NS]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert stored(kmock, "rbac.authorization.k8s.io/v1/roles", "loadgen") is not None
    assert stored(kmock, "networking.k8s.io/v1/networkpolicies", "echo") is not None


def test_every_object_we_apply_goes_to_its_resources_real_path(kmock):
    """api_path's plurals, checked against a real API server's discovery
    (kmock's bundled copy): NetworkPolicy is networkpolicies, not ...policys."""
    kmock.resources.load_bundled()
    plurals = {("/".join(filter(None, (r.group, r.version))), kmock.resources[r].kind): r.plural
               for r in kmock.resources}
    objects = render(ROOT / "k8s") + [o for stage in STAGES for o in render(stage_dir(stage) / "k8s")]
    assert "NetworkPolicy" in {o["kind"] for o in objects}
    for obj in objects:
        path, name = api_path(obj)
        assert path.rsplit("/", 1)[1] == plurals[obj["apiVersion"], obj["kind"]], obj["kind"]
        assert name == obj["metadata"]["name"]


def test_setup_notebook_falls_back_to_local_when_no_cluster_answers():
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nobody listens here
    assert notebook_setup.choose_backend("auto", client.ApiClient(configuration)) == "local"
    assert notebook_setup.choose_backend("local") == "local"
    with pytest.raises(ValueError):
        notebook_setup.choose_backend("minikube")


def test_a_pods_container_runs_are_read_from_its_statuses_as_the_watch_shows_them():
    """Each restart (restartCount up, lastState's reason) closes a run and opens the
    next; a pod first seen after restarts does not reopen its run on every event."""
    from workshop.backends.kube import note_history

    def pod(restarts, state, last=None):
        status = {"name": "echo", "restartCount": restarts, "state": state}
        if last:
            status["lastState"] = {"terminated": last}
        return {"metadata": {"name": "echo-a"}, "status": {"podIP": "10.244.0.9", "containerStatuses": [status]}}
    histories = {}
    for seen in (pod(2, {"running": {}}, {"reason": "Error"}),               # first seen after two restarts
                 pod(2, {"running": {}}, {"reason": "Error"}),               # ... and again, unchanged
                 pod(3, {"running": {}}, {"reason": "OOMKilled"}),            # a restart between two events
                 pod(3, {"terminated": {"reason": "Completed"}})):           # its end
        note_history(histories, seen, 5555)
    runs = histories["echo-a"].runs
    assert [(r.restart_count, r.reason) for r in runs] == [(2, "OOMKilled"), (3, "Completed")]
    assert histories["echo-a"].address == "tcp://10.244.0.9:5555" and histories["echo-a"].oom_kills == 1
