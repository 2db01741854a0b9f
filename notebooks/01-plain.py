# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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

from workshop import notebook_setup, report
from workshop.backends import make_backend
from workshop.parallel_runs import run_all
from workshop.load_generator import LoadGenerator

backend_name = notebook_setup.choose_backend(BACKEND)
print("backend:", backend_name)

# %% [markdown]
# ## Long-lived connections defeat the Service's load balancing
#
# A Service balances per **connection**. A ZeroMQ client connects once and keeps the
# connection, so everything it sends goes to the one pod the Service picked. The talk's
# answer: ask the API for the Service's endpoints and connect to **every** pod — and follow
# them as pods come and go. Below, the same load twice: once through one connection (as
# through a Service), once endpoint-aware. (Locally, "through a Service" means one
# connection to the pod a Service would have picked.)

# %%
seconds = 1 if QUICK else 3
if backend_name == "local":
    with make_backend("local") as backend:
        backend.deploy("01")
        _, endpoints = backend.feed.snapshot()
        pinned = sorted(endpoints)[0].address
        naive = LoadGenerator(naive_address=pinned, rate=500).run(seconds)
        aware = LoadGenerator(backend.feed, rate=500).run(seconds)
    shares = {"one connection": naive.per_endpoint, "endpoint-aware": aware.per_endpoint}
    fig, ax = plt.subplots(figsize=(7, 3))
    for row, (label, per_endpoint) in enumerate(shares.items()):
        left = 0
        for endpoint in sorted(e.address for e in endpoints):
            share = per_endpoint.get(endpoint, 0) / max(1, sum(per_endpoint.values())) * 100
            ax.barh(row, share, left=left)
            left += share
    ax.set_yticks(range(len(shares)), list(shares))
    ax.set_xlabel("share of requests per pod (%)")
    ax.set_title("which pods did the work")
    plt.show()
    print({label: sorted(p.values()) for label, p in shares.items()})
else:
    print("On the cluster: the rolling restart below measures a naive client through the real Service")

# %% [markdown]
# ## A rolling restart under load
#
# `kubectl rollout restart`: every replica replaced, while the load generator sends 500
# requests per second. Stage 01 has no SIGTERM handler: each old replica dies with its
# queues, and it dies while clients still send to it — they learn of its removal a moment
# later. Marks above the line are lost requests.

# %%
results = run_all(["01"], ["rolling-restart"], backend=backend_name, quick=QUICK, progress=print)
rolling = results[0]
report.figure(results)
plt.show()
print(report.scoreboard(results))

# %%
assert rolling.lost > 0, "stage 01 loses requests in a rolling restart: the lesson of stage 04"
if backend_name == "local":
    assert max(shares["one connection"].values()) == sum(shares["one connection"].values())
    assert len(shares["endpoint-aware"]) == 3
