"""A cluster for the kube backend's tests: kmock (an in-memory API server)
made to answer as a real one does where our code depends on it (`ApiServer`,
here), and a small `FakeCluster` (fake_cluster.py) that plays the
controllers, the kubelet and the load Job through the API, as a real
cluster would.

Every behaviour modelled here, and where the real one is defined:

| behaviour | source |
|---|---|
| a Go slice without `omitempty` is sent as `null` when empty: EndpointSlice `endpoints` and `ports`, Role `rules` | staging/src/k8s.io/api/discovery/v1/types.go, staging/src/k8s.io/api/rbac/v1/types.go; kubernetes/kubernetes#135968, kubernetes-client/python#2214 and #2423 |
| empty optional lists and maps (`omitempty`) are left out: labels, annotations, finalizers, conditions, containerStatuses | staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go (ObjectMeta), staging/src/k8s.io/api/core/v1/types.go (PodStatus); Go's encoding/json `omitempty` |
| structs are sent even when empty (`"status": {}`, an endpoint's `"conditions": {}`) | Go's encoding/json: `omitempty` never omits a struct |
| a list's items carry no `kind`/`apiVersion`; a list's `items` is `[]`, never null | TypeMeta's `omitempty` in meta/v1/types.go; staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go ("never return a nil Items pointer") |
| watch events' objects do carry `kind` and `apiVersion` | https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes |
| `allowWatchBookmarks=true` gets BOOKMARK events: only `kind`, `apiVersion`, `metadata.resourceVersion` | https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks |
| every answer has a `Date` header from the API server's clock, the node's (`node_clock_s` ahead of ours) | Go's net/http server (server.go sets Date); on minikube the API server runs on the node |
| foreground deletion: the object stays, with deletionTimestamp and the `foregroundDeletion` finalizer, until its dependents are gone; creating it again meanwhile answers 409 | https://kubernetes.io/docs/concepts/architecture/garbage-collection/#foreground-deletion |
| background deletion of a Job deletes its pods after it | https://kubernetes.io/docs/concepts/architecture/garbage-collection/#background-deletion |
| a deleted pod keeps running for its grace period (deletionTimestamp set); `gracePeriodSeconds=0` ends it at once; its container's exit is in its last status (137: SIGKILLed, PID 1 without a handler) | https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination |
| the EndpointSlice controller keeps one slice: with no pod left it is the placeholder (no endpoints, no ports), terminating pods stay listed with `ready: false, terminating: true` | staging/src/k8s.io/endpointslice/reconciler.go (placeholder slice, finalize turns create+delete into an update), staging/src/k8s.io/endpointslice/utils.go (podToEndpoint) |
| a Job's pod is labelled `job-name` and `batch.kubernetes.io/job-name`; the downward API gives it its own name | https://kubernetes.io/docs/concepts/workloads/controllers/job/ , https://kubernetes.io/docs/concepts/workloads/pods/downward-api/ |
| a container killed at its memory limit restarts; its pod's `lastState.terminated.reason` is `OOMKilled` (exit code 137), `restartCount` counts it | https://kubernetes.io/docs/tasks/configure-pod-container/assign-memory-resource/#exceed-a-container-s-memory-limit |
| a Namespace is created `Active` with the `kubernetes` finalizer in `spec.finalizers`; creating one whose name exists (even Terminating) answers 409 AlreadyExists | pkg/registry/core/namespace/strategy.go (PrepareForCreate) |
| patching a Namespace changes its metadata; its `spec.finalizers` and `status` stay | pkg/registry/core/namespace/strategy.go (PrepareForUpdate) |
| deleting a Namespace answers 200 with it, now `Terminating` (deletionTimestamp set); it stays until the namespace controller has deleted everything in it (pods after their grace); a second DELETE meanwhile answers 409 Conflict | pkg/registry/core/namespace/storage/storage.go (REST.Delete), pkg/controller/namespace/deletion/namespaced_resources_deleter.go |
| creating anything in a Terminating namespace answers 403 Forbidden (cause `NamespaceTerminating`); updates and deletes go through; creating or updating in a namespace that is gone answers 404 | staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/admission.go (NamespaceLifecycle) |
| the controllers, the kubelet and the Job runner act in every namespace (each object in its own) | kube-controller-manager's controllers use cluster-wide informers (metav1.NamespaceAll) |
| the API server's service proxy passes `/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>` on to the Service; Prometheus answers its HTTP API there (`{"status": "success", "data": ...}`, a vector's values as strings) — tests/test_prometheus_proxy.py and test_notebooks_on_kube.py play it | https://kubernetes.io/docs/tasks/access-application-cluster/access-cluster-services/#manually-constructing-apiserver-proxy-urls , https://prometheus.io/docs/prometheus/latest/querying/api/ |
| the load generator in the Job: its log follows cluster_job's protocol, its clock is the node's, it stops when its pod is annotated, it handles SIGTERM | workshop/backends/cluster_job.py (ours) |

kmock cannot parse `/api/v1/namespaces` (it reads the path as a namespaced
one), so `ApiServer` serves Namespaces itself: the collection always, a
named one once it was created through the API (before that, a test's own
reaction or kmock's 404 answers, as test_doctor.py relies on). The shared
namespace NS is not created through the API (the tests do not replay
`kubectl apply -k k8s`): objects in a namespace the server never heard of
are taken, as kmock does.

Pod IPs are 10.244.0.x: addresses the host must never connect to.
"""

import datetime
import email.utils
import json
import re
import time

import aiohttp.web
import attrs
import kmock as km
from kubernetes import client


NS = "cloudnative-echo"
POD_NETWORK = "10.244.0."
KUBELET_FINALIZER = "test.workshop/kubelet"  # lets a deleted pod linger while it terminates

# -- how the Go API server writes JSON --

# Go slices without `omitempty`, by kind: sent as null when empty (or unset).
NULL_WHEN_EMPTY = {"EndpointSlice": ("endpoints", "ports"), "Role": ("rules",)}
# Go maps (with `omitempty`): left out when empty. Any other empty object is
# a struct, which Go always sends.
MAPS = {"labels", "annotations", "matchLabels", "data", "nodeSelector", "limits", "requests",
        "deprecatedTopology", "selector"}


def as_go_sends(obj, in_list=False):
    """A stored object as the API server sends it: empty optional lists and
    maps left out, `null` for an empty slice without omitempty, and no
    kind/apiVersion on a list's items."""
    sent = _without_empties(obj)
    for field in NULL_WHEN_EMPTY.get(obj.get("kind"), ()):
        sent[field] = obj.get(field) or None
    if in_list:
        sent.pop("kind", None)
        sent.pop("apiVersion", None)
    return sent


def _without_empties(value, key=None):
    if isinstance(value, dict):
        kept = {k: _without_empties(v, k) for k, v in value.items()}
        return {k: v for k, v in kept.items()
                if v is not None and v != [] and not (v == {} and k in MAPS)}
    if isinstance(value, list):
        return [_without_empties(item) for item in value]
    return value


NAMESPACES_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+))?")


@attrs.define(kw_only=True)
class ApiServer(km.KubernetesEmulator):
    """kmock, answering as a real API server does where our code depends on
    it (the table above): Go's JSON, the node's Date, bookmarks, foreground
    deletion, pods that end at once when deleted with gracePeriodSeconds=0,
    Namespaces and what their life allows in them."""

    node_clock_s: float = 0.0   # how far the node's clock (the API server's Date) is ahead of ours
    deleted_without_grace: set = attrs.field(factory=set)   # pod names
    namespaces: dict = attrs.field(factory=dict)        # name -> the Namespace, while it exists
    namespaces_gone: set = attrs.field(factory=set)     # created through the API, then gone
    namespace_requests: list = attrs.field(factory=list)  # (method, path, body) of each one served here

    async def __call__(self, raw_request):
        match = NAMESPACES_PATH.fullmatch(raw_request.path)
        name = match and match["name"]
        if match and (name is None or name in self.namespaces or name in self.namespaces_gone):
            return self._dated(await self._serve_namespaces(raw_request, name))
        return await super().__call__(raw_request)

    async def _handle(self, request):
        refused = self._namespace_lifecycle(request)
        if refused is not None:
            return self._dated(refused)
        if request.action == km.action.DELETE and request.name:
            await self._before_delete(request)
        return self._dated(await super()._handle(request))

    def _dated(self, response):
        if not response.prepared:  # a watch stream is already on its way, with its own Date
            response.headers["Date"] = email.utils.formatdate(time.time() + self.node_clock_s, usegmt=True)
        return response

    # -- Namespaces (kmock cannot parse their paths) --

    async def _serve_namespaces(self, raw_request, name):
        body = await raw_request.json() if raw_request.can_read_body else None
        self.namespace_requests.append((raw_request.method, raw_request.path, body))
        method = raw_request.method
        if name is None and method == "POST":
            return self._create_namespace(body)
        if name is None and method == "GET":
            return aiohttp.web.json_response({"kind": "NamespaceList", "apiVersion": "v1",
                                              "metadata": {"resourceVersion": "1"},
                                              "items": [as_go_sends(ns, in_list=True) for ns in self.namespaces.values()]})
        namespace = self.namespaces.get(name)
        if namespace is None:
            return failure(404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"})
        if method == "GET":
            return aiohttp.web.json_response(as_go_sends(namespace))
        if method == "PATCH":  # what `kubectl apply` does to one that exists: its labels, annotations
            for field in ("labels", "annotations"):
                namespace["metadata"][field] = {**namespace["metadata"].get(field, {}),
                                                **(body.get("metadata") or {}).get(field, {})}
            return aiohttp.web.json_response(as_go_sends(namespace))
        if method == "DELETE":
            if namespace["metadata"].get("deletionTimestamp"):
                return failure(409, "Conflict", f'Operation cannot be fulfilled on namespaces "{name}": The system '
                               "is ensuring all content is removed from this namespace.  Upon completion, this "
                               "namespace will automatically be purged by the system.", {"name": name, "kind": "namespaces"})
            namespace["metadata"]["deletionTimestamp"] = now_rfc3339()
            namespace["status"]["phase"] = "Terminating"
            return aiohttp.web.json_response(as_go_sends(namespace))
        return failure(405, "MethodNotAllowed", f"{method} is not modelled for namespaces")

    def _create_namespace(self, body):
        name = body["metadata"]["name"]
        if name in self.namespaces:
            return failure(409, "AlreadyExists", f'namespaces "{name}" already exists', {"name": name, "kind": "namespaces"})
        metadata = {**body["metadata"], "uid": f"uid-{name}", "creationTimestamp": now_rfc3339(), "resourceVersion": "1"}
        finalizers = list((body.get("spec") or {}).get("finalizers") or [])
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata,
                     "spec": {"finalizers": finalizers + ["kubernetes"] * ("kubernetes" not in finalizers)},
                     "status": {"phase": "Active"}}
        self.namespaces[name] = namespace
        self.namespaces_gone.discard(name)
        return aiohttp.web.json_response(as_go_sends(namespace), status=201)

    def finalize_namespace(self, name):
        """The namespace controller's last step (PUT .../finalize): its content is gone, so is it."""
        del self.namespaces[name]
        self.namespaces_gone.add(name)

    def _namespace_lifecycle(self, request):
        """NamespaceLifecycle admission, for what lives in a namespace."""
        if request.resource is None or not request.resource.plural or not request.namespace:
            return None
        namespace = self.namespaces.get(request.namespace)
        if request.namespace in self.namespaces_gone and request.action in (km.action.CREATE, km.action.UPDATE):
            return failure(404, "NotFound", f'namespaces "{request.namespace}" not found',
                           {"name": request.namespace, "kind": "namespaces"})
        if namespace is not None and namespace["status"]["phase"] == "Terminating" and request.action == km.action.CREATE:
            name = (request.data or {}).get("metadata", {}).get("name", "")
            return failure(403, "Forbidden", f'{request.resource.plural} "{name}" is forbidden: unable to create new '
                           f"content in namespace {request.namespace} because it is being terminated",
                           {"name": name, "kind": request.resource.plural, "causes": [
                               {"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                "message": f"namespace {request.namespace} is being terminated"}]})
        return None

    async def _before_delete(self, request):
        options = {**request.params, **(request.data or {})}
        try:
            obj = self.objects[request.resource, request.namespace, request.name]
        except KeyError:
            return
        if obj.deleted:
            return
        if "Foreground" == options.get("propagationPolicy"):
            obj.patch({"metadata": {"finalizers": ["foregroundDeletion"]}})
        if str(options.get("gracePeriodSeconds")) == "0" and request.resource.plural == "pods":
            obj.patch({"metadata": {"finalizers": None}})  # no grace: the kubelet lets go at once
            self.deleted_without_grace.add(request.name)

    async def _serve_list(self, request):
        listing = await super()._serve_list(request)
        return {**listing, "items": [as_go_sends(item, in_list=True) for item in listing["items"]]}

    async def _serve_watch(self, request):
        bookmarks = request.params.get("allowWatchBookmarks") == "true"
        first = True
        async for event in super()._serve_watch(request):
            if isinstance(event, dict):
                event = {**event, "object": as_go_sends(event["object"])}
            yield event
            if first and bookmarks:  # the server sends them when it likes: here, at the start
                first = False
                yield {"type": "BOOKMARK", "object": {"kind": "Bookmark", "apiVersion": "v1",
                                                      "metadata": {"resourceVersion": "bookmark-1"}}}

    async def _serve_fetch(self, request):
        return as_go_sends(await super()._serve_fetch(request))

    async def _serve_create(self, request):
        return as_go_sends(await super()._serve_create(request))

    async def _serve_update(self, request):
        return as_go_sends(await super()._serve_update(request))

    async def _serve_delete(self, request):
        return as_go_sends(await super()._serve_delete(request))


def failure(code, reason, message, details=None):
    """An API error as the server sends it: a Status."""
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": reason, "details": details or {}, "code": code},
                                     status=code)


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# What the API server answers on /version (kmock serves none of its own).
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
           "compiler": "gc", "platform": "linux/amd64"}


class JsonOnlyClient(client.ApiClient):
    """The kubernetes client, refusing to build its typed models from an
    answer: the workshop reads every object as the API's JSON (json_api),
    and a typed read would fail on a real server's nulls."""

    def response_deserialize(self, *arguments, **options):
        raise AssertionError("an API answer was read through the kubernetes client's typed models")


def api_client(kmock):
    configuration = client.Configuration()
    configuration.host = str(kmock.url).rstrip("/")
    return JsonOnlyClient(configuration)


def live(kmock, resource, namespace=NS):
    """The stored objects of a resource in `namespace` that are not deleted,
    by name, as plain copies (kmock's own may be deleted while we look at them)."""
    found = {}
    for key in list(kmock.objects.keys()):
        if key[0] == resource and key[1] == namespace:
            obj = kmock.objects[key]
            if not obj.deleted:
                found[key[2]] = json.loads(json.dumps(obj, default=dict))
    return found


def contents(kmock, namespace):
    """(resource, name) of every object in `namespace` not deleted yet."""
    return [(key[0], key[2]) for key in list(kmock.objects.keys())
            if key[1] == namespace and not kmock.objects[key].deleted]


def object_path(resource, namespace, name):
    """The API path of a stored object (its resource as kmock keys it)."""
    group = f"/apis/{resource.group}" if resource.group else "/api"
    return f"{group}/{resource.version}/namespaces/{namespace}/{resource.plural}/{name}"
