"""What notebook 00 needs: which tools are here, which backend to use, and
getting a cluster ready for the workshop (then `doctor` checks it)."""

import shutil
import sys

from .manifests import render
from .stages import ROOT, all_stages

TOOLS = ("kubectl", "minikube", "podman", "docker")


def tools():
    """Each tool's path, or None where it is missing."""
    return {"python": sys.executable, **{tool: shutil.which(tool) for tool in TOOLS}}


def cluster_answers(api_client=None, timeout_s=3):
    """True if the current kubeconfig context (or `api_client`) has an API server that answers."""
    from kubernetes import config

    from .backends.json_api import KubeApi
    from .backends.minikube import kubeconfig_file
    try:
        if api_client is None:
            api_client = config.new_client_from_config(config_file=kubeconfig_file())
        KubeApi(api_client).get("/version", timeout_s=timeout_s)
        return True
    except Exception:  # no kubeconfig, no context, or nobody answering: all mean "no cluster"
        return False


def choose_backend(preference="auto", api_client=None):
    """"kube" when asked for; with "auto", kube when the current context is a
    minikube profile whose cluster answers (never some other cluster the
    kubeconfig happens to point at), else "local"."""
    from .backends import minikube
    if preference not in ("auto", "local", "kube"):
        raise ValueError(f"BACKEND must be auto, local or kube, not {preference!r}")
    if preference == "auto":
        ours = api_client is not None or minikube.current_context() in minikube.profiles()
        return "kube" if ours and cluster_answers(api_client) else "local"
    return preference


def prepare_cluster(backend, objects=None):
    """Apply the shared pieces (`objects`, default: k8s/ — the namespace, the
    load generator's RBAC, the NetworkPolicies, Prometheus); return what was
    applied."""
    applied = []
    for obj in objects if objects is not None else render(ROOT / "k8s"):
        backend.apply(obj)
        applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return applied


def prepare_kube(context=None, api_client=None, progress=print):
    """Notebook 00 on a cluster: apply k8s/ and, if the context is a minikube
    profile, build every stage's image and the load generator's into it
    (each checked on the node). Returns the context, for the doctor."""
    from .backends import minikube
    from .backends.kube import KubeBackend
    known = minikube.profiles()  # asked once: seconds on VM drivers
    context = minikube.choose_context(context, known=known)  # refuses a current context that is not minikube
    if api_client is None:
        options = {"context": context, "build_images": False}  # the images are built below
    else:
        options = {"api_client": api_client}
    with KubeBackend(**options) as cluster:
        progress("applied: " + ", ".join(prepare_cluster(cluster)))
    if context in known:
        minikube.build_images(all_stages(), profile=context, progress=progress, nodes=known[context])
    else:
        progress(f"{context} is not a minikube profile: build the images into that cluster yourself "
                 "(each chapter has the command)")
    return context
