"""Every scenario runs on the kube backend against an API server that behaves
like a real one where it matters (tests/kube_cluster.py), and:

- the host never connects to a pod address: on minikube's docker and VM
  drivers pod IPs are reachable only from inside the cluster;
- while a scenario runs, the driver makes at most a few API requests per
  second (watches, and polls no faster than twice a second);
- a Deployment being deleted in the foreground is waited for, never patched.
"""

import asyncio
import time

import pytest

from fake_cluster import FakeCluster
from kube_cluster import NS, ApiServer, api_client
from workshop import scenarios
from workshop.backends.kube import KubeBackend
from workshop.manifests import render
from workshop.scenarios import SCENARIOS, run_scenario
from workshop.stages import stage_dir

REQUESTS_PER_SECOND_BOUND = 6
pytestmark = pytest.mark.kmock(cls=ApiServer)


def our_requests(kmock):
    """(monotonic time, method, path) of every request the kubernetes client
    makes; kmock's own (the fake cluster's) are left out."""
    seen = []

    def record(request):
        if "OpenAPI-Generator" in request.headers.get("User-Agent", ""):
            seen.append((time.monotonic(), request.method.value, request.url.path))
        raise NotImplementedError  # recorded: now let kmock answer it
    kmock.override >> record
    return seen


def most_in_one_second(times):
    times, first, most = sorted(times), 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - 1:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.timeout(240)
async def test_every_scenario_runs_on_kube_without_the_host_touching_a_pod(kmock, pod_connections, monkeypatch):
    # what is tested here is how the backend runs each scenario, not its figures: the
    # lengths that show a lesson (a 25 s hang that never leaves) are shortened
    monkeypatch.setattr(scenarios.RollingRestart, "min_s", 2)
    monkeypatch.setattr(scenarios.Hang, "never_out_s", 4)
    monkeypatch.setattr(scenarios.HostileClient, "watch_s", 2)
    kmock.resources.load_bundled()
    cluster = FakeCluster(kmock)
    controllers = asyncio.create_task(cluster.run())
    requests = our_requests(kmock)
    backend = KubeBackend(api_client=api_client(kmock))
    results, load_windows = {}, []
    try:
        for name in SCENARIOS:
            results[name] = await asyncio.to_thread(run_scenario, backend, "01", name)
            job_created = next(t for t, method, path in reversed(requests) if method == "POST" and "/jobs" in path)
            load_windows.append((job_created, time.monotonic()))
    finally:
        await asyncio.to_thread(backend.close)
        if controllers.done():
            controllers.result()  # the fake cluster failed: say why
        controllers.cancel()
    assert pod_connections == []
    assert set(results) == set(SCENARIOS) and all(r.backend == "kube" and r.sent == 2 for r in results.values())
    assert results["crash"].crash_log_records == 1  # read from the previous container's log
    assert results["rolling-restart"].via_service_sent == 1  # the naive client ran, through the Service
    assert results["hang"].resilient_sent == 3 and results["hang"].retries == 1  # the resilient one, in the Job
    assert results["rolling-restart"].sigkills == 3  # the old pods' last status: exit code 137
    assert results["hostile-client"].oom_kills == 1  # the victim's lastState: OOMKilled
    # each load stopped when its scenario had seen enough (stop() reached the Job), not at its max_s:
    # the same scenario gives comparable figures on both backends
    ran_long = [(name, r.duration_s, r.wall_s) for name, r in results.items()
                if r.duration_s >= SCENARIOS[name].max_s - 0.3]
    assert not ran_long
    during_load = [t for t, _, _ in requests if any(start <= t <= end for start, end in load_windows)]
    assert most_in_one_second(during_load) <= REQUESTS_PER_SECOND_BOUND


@pytest.mark.timeout(60)
async def test_a_deployment_being_deleted_is_waited_for_then_created_never_patched(kmock):
    kmock.resources.load_bundled()
    backend = KubeBackend(api_client=api_client(kmock))
    (deployment,) = [o for o in render(stage_dir("01") / "k8s") if o["kind"] == "Deployment"]
    await asyncio.to_thread(backend.apply, deployment)
    await asyncio.to_thread(backend.api.delete, f"/apis/apps/v1/namespaces/{NS}/deployments/echo",
                            propagationPolicy="Foreground")
    stored = kmock.objects["apps/v1/deployments", NS, "echo"]
    assert stored["metadata"]["deletionTimestamp"] and stored["metadata"]["finalizers"] == ["foregroundDeletion"]
    before = len(kmock)

    async def garbage_collector():
        await asyncio.sleep(1.5)  # the dependents take this long to go
        await kmock.patch(f"/apis/apps/v1/namespaces/{NS}/deployments/echo", json={"metadata": {"finalizers": None}})
    collected = asyncio.create_task(garbage_collector())
    started = time.monotonic()
    await asyncio.to_thread(backend.apply, deployment)
    await collected
    assert time.monotonic() - started >= 1.5  # it waited for the old one to be gone...
    assert not kmock.objects["apps/v1/deployments", NS, "echo"]["metadata"].get("deletionTimestamp")
    requests = [(r.method.value, r.url.path) for r in list(kmock)[before:]  # kmock's log: 409s included
                if "OpenAPI-Generator" in r.headers.get("User-Agent", "")]
    assert ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/echo") not in requests
    assert requests.count(("POST", f"/apis/apps/v1/namespaces/{NS}/deployments")) >= 2  # 409 first, then created


@pytest.mark.timeout(60)
async def test_a_second_deploy_over_the_services_empty_endpointslice(kmock):
    """Between two deploys the Service has no pod: a real API server sends its
    EndpointSlice with `"endpoints": null, "ports": null` (a Go slice without
    omitempty), which the client's typed models reject."""
    kmock.resources.load_bundled()
    cluster = FakeCluster(kmock)
    controllers = asyncio.create_task(cluster.run())
    backend = KubeBackend(api_client=api_client(kmock))
    try:
        await asyncio.to_thread(backend.deploy, "01", None, False, 30)
        first = {pod.name for pod in backend.pods()}
        await asyncio.to_thread(backend.deploy, "01", None, False, 30)
        assert len(backend.feed.snapshot()[1]) == 3
        assert first.isdisjoint(pod.name for pod in backend.pods())  # a fresh Deployment's pods
        listed = await kmock.get(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices")
        assert "kind" not in (await listed.json())["items"][0]  # list items, as Go sends them
    finally:
        await asyncio.to_thread(backend.close)
        if controllers.done():
            controllers.result()
        controllers.cancel()
    placeholder = [sent for sent in cluster.slices_sent if not sent]
    assert placeholder, "the slice was never empty between the deploys: the test shows nothing"
