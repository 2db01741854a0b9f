"""A namespace of its own for one kube run, so that runs at once on one
cluster never see each other's pods, EndpointSlices or Jobs: what the
demo's children use (`KubeBackend(own_namespace=True)`). The notebooks, the
doctor and `workshop run` keep the shared namespace, SHARED.

A run's namespace holds what a run needs from k8s/, rendered into it: the
Pod Security label of k8s/namespace.yaml (restricted), the load generator's
ServiceAccount, Role and RoleBinding (k8s/loadgen-rbac.yaml) and the
NetworkPolicies (k8s/network-policy.yaml, whose peers are pods of the same
namespace); not Prometheus. It is labelled RUN_LABEL, so that one left
behind (a run killed with SIGKILL) can be found and deleted:

    .venv/bin/kubectl delete namespace -l cloudnative-echo/run

What a real API server does with a namespace, and what this relies on:
- DELETE answers at once; the namespace stays, Terminating, until the
  namespace controller has deleted everything in it; a second DELETE
  meanwhile answers 409 (pkg/registry/core/namespace/storage/storage.go);
- while it is Terminating, nothing can be created in it: 403 Forbidden
  (NamespaceLifecycle admission, staging/src/k8s.io/apiserver/pkg/admission/
  plugin/namespace/lifecycle/admission.go). So a ReplicaSet cannot replace
  the pods a closing run deletes, and a run's leftovers cannot come back.
"""

import copy
import secrets

from ..manifests import CLUSTER_SCOPED_KINDS, render
from ..stages import ROOT

SHARED = "cloudnative-echo"
PREFIX = f"{SHARED}-run-"
RUN_LABEL = "cloudnative-echo/run"
NAMESPACES = "/api/v1/namespaces"


def new_name():
    return PREFIX + secrets.token_hex(4)


def manifests(namespace):
    """The Namespace, then what lives in it, from k8s/ as `kubectl apply -k k8s` would apply it."""
    shared = render(ROOT / "k8s")
    (template,) = [obj for obj in shared if obj["kind"] == "Namespace"]
    own = copy.deepcopy(template)
    own["metadata"]["name"] = namespace
    own["metadata"]["labels"][RUN_LABEL] = "true"
    pieces = [into_namespace(obj, namespace) for obj in shared
              if obj["kind"] == "NetworkPolicy"
              or (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "loadgen"]
    return own, pieces


def into_namespace(obj, namespace):
    """A copy of `obj` moved into `namespace`, as kustomize's `namespace:`
    does: its own namespace, and that of the ServiceAccounts a binding names
    in the namespace it leaves (the loadgen RoleBinding's subject)."""
    obj = copy.deepcopy(obj)
    if obj["kind"] in CLUSTER_SCOPED_KINDS:
        return obj
    old = obj["metadata"].get("namespace")
    obj["metadata"]["namespace"] = namespace
    subjects = (obj.get("subjects") or []) if obj["kind"].endswith("Binding") else []
    for subject in subjects:
        if subject.get("kind") == "ServiceAccount" and subject.get("namespace") in (None, old):
            subject["namespace"] = namespace
    return obj
