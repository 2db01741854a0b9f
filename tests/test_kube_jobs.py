"""The load Job's life on the kube backend, against the test cluster
(tests/kube_cluster.py) and, for its signals, as a real process:

- its clock is placed on ours through the node's measured offset, with the
  node's clock 10 s ahead or behind;
- stop() reaches the Job: its pod is annotated and the load generator, which
  watches its own pod, stops sending;
- SIGTERM (PID 1 in its container) stops the sending, prints the results
  and exits within the pod's short grace;
- a backend deletes the Jobs it started when it closes, their pods too;
- no watch thread outlives a failed deploy; watches ask for bookmarks.
"""

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from fake_cluster import FakeCluster
from kube_cluster import NS, ApiServer, api_client, live
from support import ROOT, wait_for
from workshop.backends import cluster_job
from workshop.backends.cluster_job import GRACE_S, STOP_ANNOTATION, records, watch_for_stop
from workshop.backends.json_api import KubeApi
from workshop.backends.kube import KubeBackend
from workshop.backends.kubelet import AS_PID_1
from workshop.backends.node_clock import NodeClock
from workshop.load_generator import LoadSpec

pytestmark = pytest.mark.kmock(cls=ApiServer)
LONG_LOAD = LoadSpec(rate=100, max_s=60)


async def with_cluster(kmock, work, **cluster_options):
    """Run `work(backend, cluster)` in a thread while the fake cluster runs."""
    kmock.resources.load_bundled()
    cluster = FakeCluster(kmock, **cluster_options)
    controllers = asyncio.create_task(cluster.run())
    backend = KubeBackend(api_client=api_client(kmock))
    try:
        return await asyncio.to_thread(work, backend, cluster)
    finally:
        await asyncio.to_thread(backend.close)
        if controllers.done():
            controllers.result()  # the fake cluster failed: say why
        controllers.cancel()


def started_load(backend, cluster, spec=LONG_LOAD):
    backend.deploy("01", timeout=30)
    load = backend.start_load(spec)
    wait_for(lambda: load.job.name in cluster.loads_started, 10, message="the load generator's start")
    return load


# -- the Job's clock --

@pytest.mark.parametrize("node_clock_s", [10, -10], ids=["node-10s-ahead", "node-10s-behind"])
async def test_the_loads_start_is_placed_on_our_clock_whatever_the_nodes_clock(kmock, node_clock_s):
    kmock.node_clock_s = node_clock_s

    def work(backend, cluster):
        load = started_load(backend, cluster)
        # The host looks late (it polls while it acts): the start must come from the
        # log's time, placed through the offset, not from when the line was read.
        time.sleep(1.5)
        elapsed = load.elapsed()
        truth = time.monotonic() - cluster.loads_started[load.job.name]
        return elapsed, truth, backend.api.clock
    elapsed, truth, clock = await with_cluster(kmock, work)
    assert abs(clock.offset_s() - node_clock_s) <= clock.uncertainty_s() < 1
    assert abs(elapsed - truth) <= clock.uncertainty_s() + 0.1


def test_the_node_clock_narrows_to_the_true_offset_from_whole_second_dates():
    """Dates in whole seconds, answers 20 ms apart in flight, polled at
    every phase of the node's second: the interval closes in on the truth."""
    true_offset, clock = 10.37, NodeClock()
    for i in range(40):
        sent = 1000.0 + i * 0.53
        node = sent + 0.01 + true_offset   # when the server wrote its Date
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(int(node)))
        clock.observe(sent, date, sent + 0.02)
    assert abs(clock.offset_s() - true_offset) <= clock.uncertainty_s() < 0.05


def test_a_stepped_node_clock_starts_the_estimate_again():
    clock = NodeClock()
    for offset, sent in [(5.2, 100.0), (5.2, 100.6), (-3.0, 200.0)]:
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(int(sent + offset)))
        clock.observe(sent, date, sent + 0.01)
    assert abs(clock.offset_s() - -3.0) <= clock.uncertainty_s() <= 0.51


# -- stop() reaches the Job --

async def test_stop_annotates_the_jobs_pod_and_the_load_ends_early(kmock):
    def work(backend, cluster):
        load = started_load(backend, cluster)
        load.stop()
        stopped_at = time.monotonic()
        outcome = load.result(timeout_s=10)
        # read now: once the backend closes, its Jobs and their pods are deleted
        annotations = live(kmock, "v1/pods")[load.job.pod]["metadata"]["annotations"]
        return load, outcome, time.monotonic() - stopped_at, cluster, annotations
    load, outcome, took_s, cluster, annotations = await with_cluster(kmock, work)
    assert annotations[STOP_ANNOTATION] == "true"
    assert cluster.loads_ran_s[load.job.name] < 5 < LONG_LOAD.max_s
    assert took_s < 5 and outcome.aware is not None


async def test_the_load_generator_watches_its_own_pod_for_the_stop(kmock):
    kmock.resources.load_bundled()
    pods = f"/api/v1/namespaces/{NS}/pods"
    for name in ("echo-loadgen-a-x1", "someone-else"):
        await kmock.post(pods, json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}})
    stop = threading.Event()
    watcher = await asyncio.to_thread(watch_for_stop, KubeApi(api_client(kmock)), NS, "echo-loadgen-a-x1", stop)
    try:
        await kmock.patch(f"{pods}/someone-else", json={"metadata": {"annotations": {STOP_ANNOTATION: "true"}}})
        assert not await asyncio.to_thread(stop.wait, 0.5)  # another pod's annotation is not ours
        await kmock.patch(f"{pods}/echo-loadgen-a-x1", json={"metadata": {"annotations": {STOP_ANNOTATION: "true"}}})
        assert await asyncio.to_thread(stop.wait, 5)
    finally:
        await asyncio.to_thread(watcher.stop)


# -- closing: the Jobs go --

async def test_closing_the_backend_deletes_its_jobs_and_their_pods(kmock):
    def work(backend, cluster):
        load = started_load(backend, cluster)
        wait_for(lambda: load.job.find_pod(), 5, message="the Job's pod")
        backend.close()
        wait_for(lambda: load.job.pod not in cluster_pods(kmock), 5, message="the Job's pod gone")
        return load
    load = await with_cluster(kmock, work)
    assert load.job.name not in {key[2] for key in kmock.objects.keys() if key[0] == "batch/v1/jobs"
                                 and not kmock.objects[key].deleted}
    (delete,) = [r for r in list(kmock) if r.method.value == "DELETE" and r.url.path.endswith(f"/jobs/{load.job.name}")]
    assert delete.data["propagationPolicy"] == "Background"  # its pods go too, without waiting for them


def cluster_pods(kmock):
    return {key[2] for key in list(kmock.objects.keys()) if key[0] == "v1/pods" and not kmock.objects[key].deleted}


def test_the_jobs_pod_has_a_short_grace_and_knows_its_own_name():
    from workshop.backends.cluster_job import POD_NAME_ENV, job_manifest
    pod = job_manifest("j", NS, ["load"], 60)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == GRACE_S <= 10  # not the 30 s default
    (env,) = pod["containers"][0]["env"]
    assert env == {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


# -- SIGTERM, as PID 1 in its container --

def load_generator(*arguments):
    """`python -m workshop.backends.cluster_job ...` with PID 1's signal
    semantics (SIGTERM ignored unless it installs a handler)."""
    return subprocess.Popen([sys.executable, *AS_PID_1, "-m", "workshop.backends.cluster_job", *arguments],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_the_load_and_prints_its_results_within_the_grace(start_server):
    server = start_server("01")
    generator = load_generator("load", "--endpoint", server.endpoint, "--rate", "200", "--seconds", "60")
    try:
        first = generator.stdout.readline()  # blocks until the load's clock starts
        assert json.loads(first)["started"]
        time.sleep(1)  # a second of load, to have something to print
        generator.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = generator.communicate(timeout=GRACE_S)
    finally:
        generator.kill()
    took_s = time.monotonic() - signalled
    totals = {r["client"]: r["result"] for r in records(out.splitlines()) if "result" in r}
    assert generator.returncode == 0 and took_s < 3, err
    assert totals["aware"]["sent"] >= 100 and totals["aware"]["lost"] == 0
    assert any("done" in r for r in records(out.splitlines()))


def test_sigterm_before_the_load_started_exits_at_once():
    """Waiting for an endpoint that never echoes (it accepts TCP, never
    speaks ZeroMQ), SIGTERM ends it at once: nothing to print yet."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(10)
        generator = load_generator("load", "--endpoint", f"tcp://127.0.0.1:{silent.getsockname()[1]}")
        try:
            connection, _ = silent.accept()  # it is checking the endpoint: its handler is in place
            connection.close()
            generator.send_signal(signal.SIGTERM)
            generator.communicate(timeout=GRACE_S)
        finally:
            generator.kill()
    assert generator.returncode == 128 + signal.SIGTERM


# -- watches --

async def test_a_failed_deploy_leaves_no_watch_thread_running(kmock):
    kmock.resources.load_bundled()
    backend = KubeBackend(api_client=api_client(kmock))  # no controllers: the rollout never completes
    with pytest.raises(TimeoutError):
        await asyncio.to_thread(backend.deploy, "01", None, False, 1)
    assert [t.name for t in threading.enumerate() if t.name.startswith("watch ")] == []


async def test_watches_ask_for_bookmarks_and_read_them(kmock):
    def work(backend, cluster):
        backend.deploy("01", timeout=30)
        return [w.watcher if hasattr(w, "watcher") else w for w in backend._watchers]
    watchers = await with_cluster(kmock, work)
    watches = [r for r in list(kmock) if r.params.get("watch") == "true"]
    assert watches and all(r.params.get("allowWatchBookmarks") == "true" for r in watches)
    assert all(w.bookmarks >= 1 for w in watchers)


# -- teardown is not measured --

async def test_the_previous_runs_pods_go_without_their_grace_period(kmock):
    """01-03 ignore SIGTERM: each old pod would hold its 30 s grace (here
    5 s). A new deploy deletes them with gracePeriodSeconds=0 instead."""
    def work(backend, cluster):
        backend.deploy("01", timeout=30)
        old = {pod.name for pod in backend.pods()}
        started = time.monotonic()
        backend.deploy("01", timeout=30)
        return old, time.monotonic() - started
    old, took_s = await with_cluster(kmock, work, grace_s=5)
    assert old and old <= kmock.deleted_without_grace
    assert took_s < 5  # not one grace period


def test_a_resilient_scenarios_job_runs_the_resilient_client():
    """The client's half on a cluster: the Job's load generator keeps the
    deadlines (--resilient), the plain scenarios' does not."""
    resilient = cluster_job.load_arguments(NS, "echo", LoadSpec(resilient_rate=150), "tcp://echo:5555")
    plain = cluster_job.load_arguments(NS, "echo", LoadSpec(), "tcp://echo:5555")
    assert cluster_job.parse_args(resilient).resilient_rate == 150 and not cluster_job.parse_args(plain).resilient_rate
