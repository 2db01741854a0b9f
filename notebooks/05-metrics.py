# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (workshop .venv)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 — Metrics: never run blind
#
# Chapter: [stages/05-metrics/README.md](../stages/05-metrics/README.md). Each replica
# serves `/metrics`: a request counter, a latency histogram, a drain gauge, and counters
# of bad peers. Here we put load on stage 05 and read what the replicas say about it.
# On a cluster, the Prometheus from `k8s/` scrapes them for you:
# `kubectl -n cloudnative-echo port-forward service/prometheus 9090:9090`, then query
# `sum(rate(echo_requests_total[1m]))` or
# `histogram_quantile(0.99, sum by (le) (rate(echo_request_duration_seconds_bucket[1m])))`.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
from urllib.request import urlopen

import matplotlib.pyplot as plt
from prometheus_client.parser import text_string_to_metric_families

from workshop import notebook_setup
from workshop.backends import make_backend
from workshop.load_generator import LoadGenerator

backend_name = notebook_setup.choose_backend(BACKEND)
print("backend:", backend_name)


def scrape(url):
    with urlopen(url, timeout=2) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


# %% [markdown]
# Locally we can reach every replica's `/metrics` directly (on a cluster, use the
# Prometheus above: pod IPs are inside the cluster).

# %%
if backend_name == "local":
    with make_backend("local") as backend:
        backend.deploy("05")
        load = LoadGenerator(backend.feed, rate=500).run(1 if QUICK else 3)
        metrics = {p.name: scrape(p.metrics_url) for p in backend.pods()}
    counted = {pod: next(s.value for s in m["echo_requests"].samples if s.name == "echo_requests_total")
               for pod, m in metrics.items()}
    print(f"load generator: {load.answered} answered; replicas counted: {counted}")
else:
    print("cluster: see the Prometheus queries above")

# %% [markdown]
# The latency histogram of one replica: how many echoes fell under each bucket boundary.

# %%
if backend_name == "local":
    pod = sorted(metrics)[0]
    buckets = [(s.labels["le"], s.value) for s in metrics[pod]["echo_request_duration_seconds"].samples
               if s.name.endswith("_bucket")]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar([le for le, _ in buckets], [count for _, count in buckets])
    ax.set_xlabel("le: upper bound of the bucket (s)")
    ax.set_ylabel("echoes (cumulative)")
    ax.set_title(f"echo_request_duration_seconds on {pod}")
    ax.tick_params(axis="x", rotation=45)
    plt.show()

# %%
if backend_name == "local":
    # every answered request was counted by the replica that answered it
    # (plus the driver's readiness echoes)
    assert sum(counted.values()) >= load.answered > 0
    assert all(count > 0 for count in counted.values()), "the load reached every replica"
