"""The in-cluster Prometheus (k8s/prometheus), asked from the host through
the API server's service proxy: no port-forward, and no pod IP to reach.

    /api/v1/namespaces/<ns>/services/prometheus:9090/proxy/api/v1/query_range

(https://kubernetes.io/docs/tasks/access-application-cluster/access-cluster-services/#manually-constructing-apiserver-proxy-urls;
the answer is Prometheus' HTTP API JSON,
https://prometheus.io/docs/prometheus/latest/querying/api/.)

The NetworkPolicies (k8s/network-policy.yaml) deny every ingress to the
Prometheus pod. The proxied request comes from the API server, which runs
on the control-plane node with the host's network, and traffic from a pod's
own node is always allowed
(https://kubernetes.io/docs/concepts/services-networking/network-policies/):
on one node (minikube's default) that is Prometheus' node. On several
nodes with an enforcing CNI, a Prometheus on a worker is out of reach
(503 from the proxy): `PrometheusUnreachable` says so.
"""

import time

from kubernetes.client.rest import ApiException

NAMESPACE = "cloudnative-echo"
SERVICE = "prometheus:9090"     # the Service and its port, as the proxy path names them
SCRAPE_S = 5                    # k8s/prometheus/configmap.yaml's scrape_interval


class PrometheusUnreachable(RuntimeError):
    """The proxy could not reach Prometheus, or Prometheus refused the query."""


def proxy_path(namespace=NAMESPACE, endpoint="api/v1/query_range"):
    return f"/api/v1/namespaces/{namespace}/services/{SERVICE}/proxy/{endpoint}"


def _ask(api, endpoint, namespace, **parameters):
    try:
        answer = api.get(proxy_path(namespace, endpoint), **parameters)
    except ApiException as error:
        raise PrometheusUnreachable(
            f"the API server's proxy to Prometheus answered {error.status} {error.reason}. Is it running "
            f"(`.venv/bin/kubectl -n {namespace} rollout status deployment/prometheus`)? On several nodes with "
            "a CNI that enforces k8s/network-policy.yaml, only a Prometheus on the control-plane node is "
            "reachable this way.") from None
    if answer.get("status") != "success":
        raise PrometheusUnreachable(f"Prometheus refused the query: {answer.get('errorType')}: {answer.get('error')}")
    return answer["data"]


def query_range(api, query, start, end, step_s=1.0, namespace=NAMESPACE):
    """`query` (PromQL) from `start` to `end` (Unix times), every `step_s`:
    a list of (labels, [(t, value), ...]), one per series. `api`: a KubeApi."""
    data = _ask(api, "api/v1/query_range", namespace, query=query, start=f"{start:.3f}", end=f"{end:.3f}",
                step=f"{step_s:g}")
    return [(series["metric"], [(float(t), float(v)) for t, v in series["values"]]) for series in data["result"]]


def query(api, query, at=None, namespace=NAMESPACE):
    """`query` (PromQL) at one instant (default: now): {labels as a sorted
    tuple of pairs: value}."""
    parameters = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
    data = _ask(api, "api/v1/query", namespace, **parameters)
    return {tuple(sorted(series["metric"].items())): float(series["value"][1]) for series in data["result"]}


def now(api, namespace=NAMESPACE):
    """Prometheus' own clock, the one its scrape times are on: the node's,
    which on a VM driver may be seconds off the host's."""
    data = _ask(api, "api/v1/query", namespace, query="time()")
    return float(data["result"][0])  # a scalar: [time, "value"], the value being the time itself


def requests_per_pod(api, namespace=NAMESPACE):
    """Each echo pod's `echo_requests_total` (stage 05 and later), as
    Prometheus last scraped it: {pod name: count}."""
    found = query(api, "echo_requests_total", namespace=namespace)
    return {dict(labels).get("pod"): value for labels, value in found.items()}


def after_next_scrape(api, pods=(), namespace=NAMESPACE, timeout_s=4 * SCRAPE_S):
    """requests_per_pod() once Prometheus has scraped every echo pod it
    knows, and each of `pods` (names: a new one it may not know yet), after
    this moment: a count read right after a load would miss its last seconds.
    The moment is taken on Prometheus' clock (now()), not the host's."""
    since = now(api, namespace)
    deadline = time.monotonic() + timeout_s
    while True:
        scraped = {dict(labels).get("pod"): t for labels, t in
                   query(api, "timestamp(echo_requests_total)", namespace=namespace).items()}
        if scraped and min(scraped.values()) > since and all(scraped.get(pod, since) > since for pod in pods):
            return requests_per_pod(api, namespace)
        if time.monotonic() > deadline:
            missing = sorted(pod for pod in pods if pod not in scraped)
            raise PrometheusUnreachable(f"Prometheus did not scrape the echo pods within {timeout_s} s"
                                        + (f" (never: {', '.join(missing)})" if missing else ""))
        time.sleep(1)  # its next scrape is at most SCRAPE_S away
