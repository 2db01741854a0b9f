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
# # 01 — A plain ZeroMQ echo service
#
# Chapter: [stages/01-plain/README.md](../stages/01-plain/README.md). A ROUTER, a poll loop,
# no exception handling — crash-only: three replicas and the restart policy are the error
# handling. Two things to see here: **load balancing** with long-lived connections, and
# what a **rolling restart** costs a stage that does nothing about it.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, pod_metrics, report
from workshop.backends import make_backend
from workshop.parallel_runs import run_all

backend_name = notebook_setup.choose_backend(BACKEND)
print("backend:", backend_name)

# %% [markdown]
# ## Long-lived connections defeat the Service's load balancing
#
# A Service balances per **connection**. A ZeroMQ client connects once and keeps the
# connection, so everything it sends goes to the one pod the Service picked. The talk's
# answer: ask the API for the Service's endpoints and connect to **every** pod — and follow
# them as pods come and go. Below, the same load twice: once through the Service, once
# endpoint-aware, both at once. (Locally the Service is `workshop/backends/local_service.py`:
# a relay that picks a ready pod per new connection, as kube-proxy does.)
#
# Stage 01 counts nothing, so this cell deploys stage 05, whose replicas count what they
# answer (its lesson; the Service's balancing is the same for every stage). The figures are
# the replicas' own: read from their `/metrics` locally, from the in-cluster Prometheus on a
# cluster. The endpoint-aware client knows where it sent each request; what came through the
# Service is what each pod counted less that (give or take a few readiness echoes).

# %%
seconds = 1 if QUICK else 3
with make_backend(backend_name) as backend:
    backend.deploy("05")  # the same Service, replicas that count what they answer
    shares = pod_metrics.balancing_shares(backend, rate=150, seconds=seconds)
    pods = sorted(pod.name for pod in backend.pods())
fig, ax = plt.subplots(figsize=(7, 3))
for row, (label, per_pod) in enumerate(shares.items()):
    left = 0
    for pod in pods:
        share = per_pod.get(pod, 0) / max(1, sum(per_pod.values())) * 100
        ax.barh(row, share, left=left)
        left += share
ax.set_yticks(range(len(shares)), list(shares))
ax.set_xlabel("share of the traffic per pod (%)")
ax.set_title("which pods did the work")
plt.show()
print({label: {pod: round(n) for pod, n in sorted(per_pod.items())} for label, per_pod in shares.items()})

# %% [markdown]
# ## A rolling restart under load
#
# `kubectl rollout restart`: every replica replaced, while the load generator sends 500
# requests per second. Stage 01 has no SIGTERM handler, and in its container Python is
# **PID 1**: the kernel gives PID 1 no default action for SIGTERM, so it is ignored. Each
# old pod leaves the endpoints (the endpoint-aware client stops sending to it) but keeps
# running until the grace period — 30 s, the default — ends in SIGKILL. Nothing sent to a pod
# going away is lost, but every rollout costs 30 s and three SIGKILLs. (What 01 does lose in a
# rollout is *not-listening*: sent to a new pod listed before it listens — it has no readiness
# probe; how many depends on how fast Python starts. Stage 03 fixes that.)
#
# Run the same image under an init process (tini, dumb-init) and Python is no longer
# PID 1: SIGTERM kills it at once, with the requests in flight — sent before the clients
# learned it was leaving (*going-away*). Locally the endpoint feed lags 0.5 s, so about 60 to
# 75 are lost at 150 requests/s; on a cluster SIGTERM and the EndpointSlice update reach their
# targets within milliseconds of each other, and the loss is a race: none to a handful.
# Marks above the line are lost requests.

# %%
results = run_all(["01"], ["rolling-restart", "rolling-restart-init"], backend=backend_name, progress=print)
rolling, under_init = results
report.figure(results)
plt.show()
print(report.scoreboard(results))

# %%
assert rolling.sigkills == 3 and rolling.rollout_s >= 30, "as PID 1, SIGTERM waits for the grace period's SIGKILL"
assert rolling.lost_by_cause.get("going-away", 0) == 0, "an old pod serves on until the client has moved on"
assert under_init.sigkills == 0 and max(under_init.pod_exit_s) < 10, "under an init process, SIGTERM kills at once"
if backend_name == "local":
    # Locally the endpoint feed lags SIGTERM by 0.5 s, so what was sent in that time is lost; on a
    # cluster SIGTERM and the EndpointSlice update race (none to a handful lost): not asserted there.
    assert under_init.lost_by_cause.get("going-away", 0) > 0, "sent to a pod already dead"
through_service, aware = shares["through the Service"], shares["endpoint-aware"]
assert max(through_service.values()) >= 0.9 * sum(through_service.values()), "one connection, one pod"
assert len(aware) == 3 and min(aware.values()) >= 0.2 * sum(aware.values()), "every pod a third"
