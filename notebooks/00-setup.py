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
# # 00 — Setup: which tools you have, and where the stages will run
#
# The workshop runs on one of two **backends**:
#
# - **kube**: your cluster (minikube) through the current kubeconfig context. Images are
#   built into minikube, the load generator runs in the cluster as a Job.
# - **local**: no cluster needed. Each stage runs as real processes on loopback addresses
#   (127.0.0.2, 127.0.0.3, …), and the driver plays kubelet, Deployment controller and
#   EndpointSlice controller from the stage's own manifests. Its docstring
#   (`workshop/backends/local.py`) says exactly what it approximates and what it does not.
#
# `BACKEND = "auto"` picks **kube** when a cluster answers, else **local**. Every later
# notebook has the same parameter.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
from workshop import notebook_setup

for tool, path in notebook_setup.tools().items():
    print(f"{tool:<9} {path or 'not found'}")

# %%
backend_name = notebook_setup.choose_backend(BACKEND)
print(f"backend: {backend_name}")

# %% [markdown]
# On a cluster, prepare it once: the namespace (with the *restricted* Pod Security
# Standard enforced), the load generator's ServiceAccount and Role, a minimal Prometheus,
# and the images (`minikube image build`, one per stage, plus the load generator).
# Locally there is nothing to prepare.

# %%
from workshop.backends import make_backend

if backend_name == "kube":
    with make_backend("kube") as cluster:
        applied, built = notebook_setup.prepare_cluster(cluster)
    print("applied:", ", ".join(applied))
    print("built:", ", ".join(built) or "nothing (no minikube: see the chapters' build commands)")
else:
    print("local backend: nothing to prepare")

# %% [markdown]
# A first look: one stage, deployed and answering. The feed below is what the load
# generator follows — the ready, non-terminating endpoints.

# %%
from workshop.client import echo_once

with make_backend(backend_name) as backend:
    seconds = backend.deploy("01")
    _, endpoints = backend.feed.snapshot()
    answering = [echo_once(e.address) for e in sorted(endpoints)] if backend_name == "local" else []
print(f"01-plain deployed in {seconds:.1f} s with {len(endpoints)} endpoints")
for endpoint in sorted(endpoints):
    print(" ", endpoint.pod, endpoint.address)

# %%
assert len(endpoints) == 3, "the Deployment asks for three replicas"
assert backend_name != "local" or all(answering), "every local endpoint echoes"
