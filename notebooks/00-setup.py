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
# Standard enforced), the load generator's ServiceAccount and Role, the NetworkPolicies
# that let only the workshop's Jobs reach the echo pods (enforced after `minikube start
# --cni=calico`; the default CNI ignores them), a minimal Prometheus (all four are
# `kubectl apply -k k8s`), and the images (`minikube image build`, one per stage, plus
# the load generator). minikube exits 0 even when a build fails, so each image is checked
# on the node, and a failed build stops here with the command that shows why.
#
# Then the **doctor** checks every piece, one line each, and ends with one real echo
# through an in-cluster Job. A `FAIL` line comes with the one command that fixes it; run
# it, then this notebook again. From a terminal: `python -m workshop doctor`.
#
# Locally there is nothing to prepare.

# %%
from workshop import doctor

if backend_name == "kube":
    context = notebook_setup.prepare_kube()
    doctor_passed = doctor.run(context=context) == 0
else:
    print("local backend: nothing to prepare")

# %% [markdown]
# A first look on the local backend: one stage, deployed and answering. The feed below is
# what the load generator follows — the ready, non-terminating endpoints. (On a cluster,
# the doctor's last check did this from inside the cluster.)

# %%
from workshop.backends import make_backend
from workshop.client import echo_once

if backend_name == "local":
    with make_backend("local") as backend:
        seconds = backend.deploy("01")
        _, endpoints = backend.feed.snapshot()
        answering = [echo_once(e.address) for e in sorted(endpoints)]
    print(f"01-plain deployed in {seconds:.1f} s with {len(endpoints)} endpoints")
    for endpoint in sorted(endpoints):
        print(" ", endpoint.pod, endpoint.address)

# %%
if backend_name == "kube":
    assert doctor_passed, "the doctor found a problem: run the fix under its FAIL line, then this notebook"
else:
    assert len(endpoints) == 3, "the Deployment asks for three replicas"
    assert all(answering), "every local endpoint echoes"
