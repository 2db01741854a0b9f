"""The notebooks' cluster-only cells — 05's metrics, 01's per-pod shares —
run on the kube backend against the test API server (tests/kube_cluster.py)
and the in-cluster Prometheus behind its service proxy. Their figures are
what the replicas counted, as Prometheus answers them
(https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries:
a vector of {"metric": labels, "value": [time, "string"]}), and the host
never connects to a pod. (Their scenario cells are the kube scenarios'
tests: tests/test_kube_scenarios.py.)"""

import asyncio
import re
import time
from collections import Counter

import jupytext
import pytest

from fake_cluster import FakeCluster, ready
from kube_cluster import NS, ApiServer, api_client
from support import ROOT
from workshop import backends
from workshop.backends.kube import KubeBackend
from workshop.load_generator import LoadOutcome, LoadResult

pytestmark = [pytest.mark.kmock(cls=ApiServer), pytest.mark.timeout(120)]
PROXY = f"/api/v1/namespaces/{NS}/services/prometheus:9090/proxy/api/v1/query"
AWARE_PER_POD, THROUGH_SERVICE = 10, 30
BUCKETS = ("0.0005", "0.001", "0.005", "+Inf")


class CountingCluster(FakeCluster):
    """Its load generator spreads the endpoint-aware client's requests over
    every ready pod and sends the naive client's down one connection, to the
    pod the Service picked; each pod counts what it answered."""

    def __init__(self, kmock):
        super().__init__(kmock)
        self.counted = Counter()  # pod -> echo_requests_total
        self.history = []         # (when, on our clock, a copy of `counted`) after each change

    def load_outcome(self, namespace, elapsed, naive, resilient=False):
        outcome = self.count_load(namespace, naive)
        self.history.append((time.time(), Counter(self.counted)))
        return outcome

    def counted_at(self, t):
        """What the pods had counted at `t` (our clock)."""
        return next((counts for when, counts in reversed(self.history) if when <= t), Counter())

    def count_load(self, namespace, naive):
        pods = sorted((name, pod["status"]["podIP"]) for name, pod in self.pods(namespace).items() if ready(pod))
        per_endpoint = {f"tcp://{ip}:5555": AWARE_PER_POD for _, ip in pods}
        self.counted.update({name: AWARE_PER_POD for name, _ in pods})
        sent = AWARE_PER_POD * len(pods)
        aware = LoadResult(sent=sent, answered=sent, per_endpoint=per_endpoint)
        if not naive:
            return LoadOutcome(aware)
        self.counted[pods[0][0]] += THROUGH_SERVICE
        return LoadOutcome(aware, LoadResult(sent=THROUGH_SERVICE, answered=THROUGH_SERVICE,
                                             per_endpoint={"tcp://echo:5555": THROUGH_SERVICE}))


class FakePrometheus:
    """The in-cluster Prometheus's instant queries, as the API server's
    proxy passes them on. It scrapes every `scrape_s` on the node's clock
    (kmock's `node_clock_s` off ours): what it answers is what the pods had
    counted at its last scrape, stamped with that scrape's time."""

    def __init__(self, cluster, scrape_s=2.0):
        self.cluster, self.scrape_s, self.queries = cluster, scrape_s, []
        self.scraped_at, self.scraped = None, {}

    def node_now(self):
        return time.time() + self.cluster.kmock.node_clock_s

    def scrape(self):
        """The last scrape: at a multiple of scrape_s on the node's clock, of
        what the pods had counted then."""
        last = self.node_now() // self.scrape_s * self.scrape_s
        if self.scraped_at != last:
            self.scraped_at = last
            counts = self.cluster.counted_at(last - self.cluster.kmock.node_clock_s)
            self.scraped = {pod: counts[pod] for pod in self.cluster.pods(NS)}

    def __call__(self, request):
        query = request.params["query"]
        self.queries.append(query)
        self.scrape()
        if query == "time()":
            now = self.node_now()
            return {"status": "success", "data": {"resultType": "scalar", "result": [now, f"{now:.3f}"]}}
        if query == "echo_requests_total":
            found = [({"__name__": query, "pod": pod, "namespace": NS}, count) for pod, count in self.scraped.items()]
        elif query == "timestamp(echo_requests_total)":
            found = [({"pod": pod, "namespace": NS}, self.scraped_at) for pod in self.scraped]
        elif match := re.fullmatch(r'echo_request_duration_seconds_bucket\{pod="([^"]+)"\}', query):
            found = [({"__name__": "echo_request_duration_seconds_bucket", "pod": match[1], "le": le},
                      self.scraped.get(match[1], 0)) for le in reversed(BUCKETS)]
        else:
            return {"status": "error", "errorType": "bad_data", "error": f"the fake knows no {query!r}"}
        return {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": labels, "value": [self.scraped_at, str(value)]} for labels, value in found]}}


def notebook_cells(name, until=None):
    """The code of a notebook's cells, on the kube backend, QUICK, up to the
    markdown cell that contains `until`."""
    for cell in jupytext.read(ROOT / "notebooks" / f"{name}.py").cells:
        if until is not None and cell.cell_type == "markdown" and until in cell.source:
            return
        if cell.cell_type == "code":
            yield cell.source
            if "parameters" in cell.metadata.get("tags", []):
                yield 'BACKEND = "kube"\nQUICK = True'  # what papermill would inject


@pytest.fixture
def cluster(kmock, monkeypatch):
    """The test cluster, Prometheus behind its proxy, and make_backend("kube")
    answering with a backend on it (its images are not built: no minikube)."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    kmock.resources.load_bundled()
    cluster = CountingCluster(kmock)
    cluster.prometheus = FakePrometheus(cluster)
    kmock["get"][re.compile(re.escape(PROXY))] << cluster.prometheus
    made = []

    def make_backend(name, **options):
        assert name == "kube"
        made.append(KubeBackend(api_client=api_client(kmock), build_images=False, **options))
        return made[-1]
    monkeypatch.setattr(backends, "make_backend", make_backend)
    return cluster


async def run_notebook(cluster, name, until=None):
    """Its cells in this process (the test cluster lives in this event loop),
    with the cluster's controllers running; returns the notebook's names."""
    controllers = asyncio.create_task(cluster.run())
    names = {}

    def run():
        for source in notebook_cells(name, until):
            exec(compile(source, f"notebooks/{name}.py", "exec"), names)
    try:
        await asyncio.to_thread(run)
    finally:
        if controllers.done():
            controllers.result()  # the fake cluster failed: say why
        controllers.cancel()
    return names


@pytest.mark.parametrize("node_clock_s", [0, 10, -10], ids=["node-on-time", "node-10s-ahead", "node-10s-behind"])
async def test_notebook_05_reads_each_replicas_counts_from_the_clusters_prometheus(cluster, pod_connections,
                                                                                  kmock, node_clock_s):
    """Whatever the node's clock: the counts are read from a scrape after the
    load ended, on Prometheus' clock, not the host's."""
    kmock.node_clock_s = node_clock_s
    names = await run_notebook(cluster, "05-metrics")  # its last cell asserts the lesson
    pods = sorted(cluster.pods(NS))
    assert len(pods) == 3 and names["counted"] == {pod: AWARE_PER_POD for pod in pods}
    assert names["load"].answered == 3 * AWARE_PER_POD
    assert names["buckets"] == [(le, AWARE_PER_POD) for le in BUCKETS]  # the smallest bound first
    assert f'echo_request_duration_seconds_bucket{{pod="{names["pod"]}"}}' in cluster.prometheus.queries
    assert pod_connections == []


async def test_notebook_05_fails_when_a_replica_counted_nothing(cluster, pod_connections):
    """Its assert reads the figures: a replica that Prometheus says answered
    nothing fails the notebook."""
    def two_of_three(namespace, naive):
        cluster.counted.update({pod: 10 for pod in sorted(cluster.pods(namespace))[:2]})
        cluster.counted.update(sorted(cluster.pods(namespace))[2:])  # its readiness echo: one
        return LoadOutcome(LoadResult(sent=20, answered=20))
    cluster.count_load = two_of_three
    with pytest.raises(AssertionError, match="the load reached every replica"):
        await run_notebook(cluster, "05-metrics")


async def test_notebook_01_measures_the_shares_from_the_replicas_counts(cluster, pod_connections):
    names = await run_notebook(cluster, "01-plain", until="## A rolling restart under load")
    pods = sorted(cluster.pods(NS))
    assert names["shares"] == {"through the Service": {pods[0]: THROUGH_SERVICE},
                               "endpoint-aware": {pod: AWARE_PER_POD for pod in pods}}
    assert pod_connections == []
