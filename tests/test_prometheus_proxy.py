"""The in-cluster Prometheus, asked from the host through the API server's
service proxy (workshop/backends/prometheus_proxy.py), against the test API
server: the path and parameters a real API server proxies, Prometheus' HTTP
API JSON (https://prometheus.io/docs/prometheus/latest/querying/api/), and
a clear error when the proxy cannot reach it."""

import asyncio
import re
import time

import pytest

from kube_cluster import NS, ApiServer, api_client
from workshop.backends import prometheus_proxy
from workshop.backends.json_api import KubeApi
from workshop.backends.prometheus_proxy import PrometheusUnreachable

pytestmark = pytest.mark.kmock(cls=ApiServer)
PROXY = f"/api/v1/namespaces/{NS}/services/prometheus:9090/proxy/"


def matrix(*series):
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": labels, "values": [[t, str(v)] for t, v in values]} for labels, values in series]}}


async def test_a_range_query_goes_through_the_service_proxy(kmock):
    asked = []

    def prometheus(request):
        asked.append((request.url.path, dict(request.params)))
        return matrix(({"pod": "echo-a"}, [(100, 1.5), (101, 2.5)]), ({"pod": "echo-b"}, [(100, 0)]))
    kmock["get"][re.compile(re.escape(PROXY) + "api/v1/query_range")] << prometheus
    found = await asyncio.to_thread(prometheus_proxy.query_range, KubeApi(api_client(kmock)),
                                    "sum by (pod) (rate(echo_requests_total[30s]))", 100, 101, 1)
    assert found == [({"pod": "echo-a"}, [(100.0, 1.5), (101.0, 2.5)]), ({"pod": "echo-b"}, [(100.0, 0.0)])]
    (path, parameters), = asked
    assert path == PROXY + "api/v1/query_range"
    assert parameters == {"query": "sum by (pod) (rate(echo_requests_total[30s]))", "start": "100.000",
                          "end": "101.000", "step": "1"}


async def test_requests_per_pod_reads_each_pods_counter(kmock):
    kmock["get"][re.compile(re.escape(PROXY) + "api/v1/query")] << {"status": "success", "data": {
        "resultType": "vector", "result": [
            {"metric": {"__name__": "echo_requests_total", "pod": name}, "value": [time.time(), str(count)]}
            for name, count in (("echo-a", 120), ("echo-b", 0))]}}
    found = await asyncio.to_thread(prometheus_proxy.requests_per_pod, KubeApi(api_client(kmock)))
    assert found == {"echo-a": 120.0, "echo-b": 0.0}


async def test_a_proxy_that_cannot_reach_prometheus_says_what_to_check(kmock):
    kmock["get"][re.compile(re.escape(PROXY) + ".*")] << 503 << {"kind": "Status", "code": 503,
                                                                 "message": "no endpoints available for service"}
    with pytest.raises(PrometheusUnreachable) as unreachable:
        await asyncio.to_thread(prometheus_proxy.query, KubeApi(api_client(kmock)), "up")
    assert "503" in str(unreachable.value) and "rollout status deployment/prometheus" in str(unreachable.value)


async def test_a_query_prometheus_refuses_is_its_own_error(kmock):
    kmock["get"][re.compile(re.escape(PROXY) + ".*")] << {"status": "error", "errorType": "bad_data",
                                                          "error": "parse error at char 5"}
    with pytest.raises(PrometheusUnreachable, match="bad_data: parse error at char 5"):
        await asyncio.to_thread(prometheus_proxy.query, KubeApi(api_client(kmock)), "rate(")
