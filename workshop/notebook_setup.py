"""What notebook 00 needs: which tools are here, which backend to use, and
getting a cluster ready for the workshop."""

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
    from kubernetes import client, config
    try:
        if api_client is None:
            config.load_kube_config()
            api_client = client.ApiClient()
        client.VersionApi(api_client).get_code(_request_timeout=timeout_s)
        return True
    except Exception:  # no kubeconfig, no context, or nobody answering: all mean "no cluster"
        return False


def choose_backend(preference="auto", api_client=None):
    """"kube" when asked for, or when "auto" and a cluster answers; else "local"."""
    if preference not in ("auto", "local", "kube"):
        raise ValueError(f"BACKEND must be auto, local or kube, not {preference!r}")
    if preference == "auto":
        return "kube" if cluster_answers(api_client) else "local"
    return preference


def prepare_cluster(backend, objects=None):
    """Apply the shared pieces (`objects`, default: k8s/ — the namespace, the
    load generator's RBAC, Prometheus) and, with minikube, build every stage's
    image and the load generator's."""
    from .backends.kube import build_image
    from .backends.cluster_job import LOADGEN_IMAGE
    from .manifests import load_stage
    applied = []
    for obj in objects if objects is not None else render(ROOT / "k8s"):
        backend.apply(obj)
        applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    built = []
    if backend.build_images:
        for stage in all_stages():
            image = load_stage(stage).image
            if build_image(stage, image):
                built.append(image)
        if build_image(None, LOADGEN_IMAGE):
            built.append(LOADGEN_IMAGE)
    return applied, built
