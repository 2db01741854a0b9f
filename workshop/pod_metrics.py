"""What each echo replica counts (stage 05 on), read where the backend can
reach it: locally from each pod's /metrics; on a cluster from the in-cluster
Prometheus, through the API server's proxy (pod IPs are reachable only from
inside the cluster; backends/prometheus_proxy.py). The notebooks' figures are
the replicas' own on both backends."""

from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families

from .backends import prometheus_proxy
from .load_generator import LoadSpec

REQUESTS = "echo_requests_total"
LATENCY_BUCKETS = "echo_request_duration_seconds_bucket"


def scrape(url):
    """One /metrics page: {sample name: [(labels, value)]}."""
    with urlopen(url, timeout=2) as response:
        samples = {}
        for family in text_string_to_metric_families(response.read().decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return samples


def requests_per_pod(backend):
    """{pod: echo_requests_total} as of now. On a cluster, as Prometheus
    scrapes it next (every ready pod included): a count read right after a
    load would miss its last seconds."""
    if backend.name == "kube":
        ready = [pod.name for pod in backend.pods() if pod.ready and not pod.terminating]
        return prometheus_proxy.after_next_scrape(backend.api, pods=ready)
    return {pod.name: sum(value for _, value in scrape(pod.metrics_url)[REQUESTS])
            for pod in backend.pods() if pod.metrics_url}


def latency_buckets(backend, pod):
    """One replica's latency histogram: [(le, echoes at or under it)], the
    smallest bound first."""
    if backend.name == "kube":
        found = prometheus_proxy.query(backend.api, f'{LATENCY_BUCKETS}{{pod="{pod}"}}')
        buckets = [(dict(labels)["le"], value) for labels, value in found.items()]
    else:
        (url,) = [p.metrics_url for p in backend.pods() if p.name == pod]
        buckets = [(labels["le"], value) for labels, value in scrape(url)[LATENCY_BUCKETS]]
    return sorted(buckets, key=lambda bucket: float(bucket[0]))


def increase(after, before):
    """What each pod counted in between: a pod new since `before` counted
    from 0, and so did one whose counter went down (its container restarted)."""
    return {pod: count - before.get(pod, 0) if count >= before.get(pod, 0) else count
            for pod, count in after.items()}


def balancing_shares(backend, rate, seconds):
    """One load of `seconds`: an endpoint-aware client and a naive one
    through the Service, at `rate` each, on a stage that counts (05 on).
    Returns {"through the Service": {pod: requests}, "endpoint-aware": {...}}.

    The endpoint-aware client knows where it sent each request; the naive
    one knows only the Service's address. What the Service sent each pod is
    what the pod counted less what the endpoint-aware client sent it (plus a
    few: the load's readiness echo, the probes)."""
    pod_at = {pod.address: pod.name for pod in backend.pods()}
    before = requests_per_pod(backend)
    outcome = backend.start_load(LoadSpec(rate=rate, naive_rate=rate, max_s=seconds)).result()
    aware = {pod_at.get(endpoint, endpoint): sent for endpoint, sent in outcome.aware.per_endpoint.items()}
    counted = increase(requests_per_pod(backend), before)
    through_service = {pod: count - aware.get(pod, 0) for pod, count in counted.items()}
    return {"through the Service": {pod: n for pod, n in through_service.items() if n > 0},
            "endpoint-aware": aware}
