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
# serves `/metrics`: a request counter, a latency histogram and a drain gauge. Here we
# put load on stage 05 and read what the replicas say about it.
# On a cluster the Prometheus from `k8s/` scrapes them; to ask it yourself,
# `.venv/bin/kubectl -n cloudnative-echo port-forward service/prometheus 9090:9090`, then query
# `sum(rate(echo_requests_total[1m]))` or
# `histogram_quantile(0.99, sum by (le) (rate(echo_request_duration_seconds_bucket[1m])))`.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, pod_metrics
from workshop.backends import make_backend
from workshop.load_generator import LoadSpec

backend_name = notebook_setup.choose_backend(BACKEND)
print("backend:", backend_name)

# %% [markdown]
# Stage 05 under load for a few seconds, and what each replica counted meanwhile.
# Locally the driver reads every replica's `/metrics` itself. On a cluster pod IPs are
# inside the cluster: the figures are what the in-cluster Prometheus scraped (every 5 s),
# asked through the API server's proxy — `echo_requests_total` per `pod`, the same query
# you would type at `http://localhost:9090` after the port-forward above.

# %%
seconds = 1 if QUICK else 3
with make_backend(backend_name) as backend:
    backend.deploy("05")
    before = pod_metrics.requests_per_pod(backend)
    load = backend.start_load(LoadSpec(rate=150, max_s=seconds)).result().aware
    counted = pod_metrics.increase(pod_metrics.requests_per_pod(backend), before)
    pod = max(counted, key=counted.get)
    buckets = pod_metrics.latency_buckets(backend, pod)
print(f"load generator: {load.answered} answered; replicas counted: {counted}")

# %% [markdown]
# The latency histogram of one replica: how many echoes fell under each bucket boundary.

# %%
fig, ax = plt.subplots(figsize=(8, 3))
ax.bar([le for le, _ in buckets], [count for _, count in buckets])
ax.set_xlabel("le: upper bound of the bucket (s)")
ax.set_ylabel("echoes (cumulative)")
ax.set_title(f"echo_request_duration_seconds on {pod}")
ax.tick_params(axis="x", rotation=45)
plt.show()

# %%
# every answered request was counted by the replica that answered it (plus the
# load's readiness echo and the probes' echoes: a handful), each replica about a third
assert sum(counted.values()) >= load.answered > 0
assert len(counted) == 3 and min(counted.values()) >= load.answered / 5, "the load reached every replica"
assert buckets[-1][0] == "+Inf" and buckets[-1][1] >= counted[pod], "every echo falls under +Inf"
