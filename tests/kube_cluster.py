"""A cluster for the kube backend's tests: kmock (an in-memory API server)
made to answer as a real one does where our code depends on it, and a small
`FakeCluster` that plays the controllers, the kubelet and the load Job
through the API, as a real cluster would.

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
| the load generator in the Job: its log follows cluster_job's protocol, its clock is the node's, it stops when its pod is annotated, it handles SIGTERM | workshop/backends/cluster_job.py (ours) |

Pod IPs are 10.244.0.x: addresses the host must never connect to.
"""

import asyncio
import email.utils
import hashlib
import itertools
import json
import math
import time

import attrs
import kmock as km
from kubernetes import client

from workshop.backends.cluster_job import STOP_ANNOTATION, line, outcome_lines, started_record
from workshop.load_generator import FaultSent, LoadOutcome, LoadResult

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


@attrs.define(kw_only=True)
class ApiServer(km.KubernetesEmulator):
    """kmock, answering as a real API server does where our code depends on
    it (the table above): Go's JSON, the node's Date, bookmarks, foreground
    deletion, pods that end at once when deleted with gracePeriodSeconds=0."""

    node_clock_s: float = 0.0   # how far the node's clock (the API server's Date) is ahead of ours
    deleted_without_grace: set = attrs.field(factory=set)   # pod names

    async def _handle(self, request):
        if request.action == km.action.DELETE and request.name:
            await self._before_delete(request)
        response = await super()._handle(request)
        if not response.prepared:  # a watch stream is already on its way, with its own Date
            response.headers["Date"] = email.utils.formatdate(time.time() + self.node_clock_s, usegmt=True)
        return response

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


def live(kmock, resource):
    """The stored objects of a resource in NS that are not deleted, by name,
    as plain copies (kmock's own may be deleted while we look at them)."""
    found = {}
    for key in list(kmock.objects.keys()):
        if key[0] == resource and key[1] == NS:
            obj = kmock.objects[key]
            if not obj.deleted:
                found[key[2]] = json.loads(json.dumps(obj, default=dict))
    return found


class FakeCluster:
    """The controllers, kubelet and Job runner of a small cluster, acting on
    kmock through its API every `tick_s`."""

    def __init__(self, kmock, grace_s=0.3, job_s=None, pid1_ignores_sigterm=True, start_s=0.2):
        self.kmock = kmock
        self.grace_s = grace_s            # deletion -> gone
        self.start_s = start_s            # creation -> Ready (container start, readiness probe)
        self.job_s = job_s                # the longest a load Job runs (default: its --seconds)
        self.exit_code = 137 if pid1_ignores_sigterm else 0
        self.pod_numbers = itertools.count(10)
        self.deleting = {}                # pod name -> when its deletion was seen
        self.jobs = {}                    # job name -> (pod name, started, arguments)
        self.loads_started = {}           # job name -> when its load's clock started (our monotonic clock)
        self.loads_ran_s = {}             # job name -> how long its load ran before it stopped
        self.logs = {}                    # (pod name, previous) -> text
        self.starting = {}                # pod name -> when it was created, until it is Ready
        self.slice_sent = None
        self.slices_sent = []             # every endpoint list published, in order
        self.faults = []
        kmock[km.subresource("log")] << (lambda request: self.logs.get(
            (request.name, request.params.get("previous", "").lower() == "true"), "").encode())

    async def run(self, tick_s=0.05):
        while True:
            await self.step()
            await asyncio.sleep(tick_s)

    async def step(self):
        await self.terminate(self.pods())
        await self.start_containers()
        deployment = live(self.kmock, "apps/v1/deployments").get("echo")
        if deployment is not None:
            await self.reconcile(deployment, self.pods())
        await self.publish_endpoints()
        await self.run_jobs()

    # -- the Deployment controller and the garbage collector --

    async def reconcile(self, deployment, pods):
        url = f"/apis/apps/v1/namespaces/{NS}/deployments/echo"
        running = {n: p for n, p in pods.items() if not p["metadata"].get("deletionTimestamp")}
        if deployment["metadata"].get("deletionTimestamp"):
            for name in running:
                await self.kmock.delete(f"/api/v1/namespaces/{NS}/pods/{name}")
            if not pods:  # the dependents are gone: the owner may go
                await self.kmock.patch(url, json={"metadata": {"finalizers": None}})
            return
        template = deployment["spec"]["template"]
        revision = hashlib.sha1(json.dumps(template, sort_keys=True, default=dict).encode()).hexdigest()[:8]
        current = {n: p for n, p in running.items() if p["metadata"]["labels"].get("pod-template-hash") == revision}
        surplus = [n for n in running if n not in current] + sorted(current)[deployment["spec"]["replicas"]:]
        for name in surplus:
            await self.kmock.delete(f"/api/v1/namespaces/{NS}/pods/{name}")
        for _ in range(deployment["spec"]["replicas"] - len(current)):
            await self.create_pod(template, revision)
        wanted = deployment["spec"]["replicas"]
        available = min(sum(ready(pod) for pod in current.values()), wanted)
        status = {"observedGeneration": deployment["metadata"].get("generation", 0), "replicas": len(running),
                  "updatedReplicas": min(len(current), wanted), "availableReplicas": available}
        if deployment.get("status") != status:
            await self.kmock.patch(url, json={"status": status})

    async def create_pod(self, template, revision):
        number = next(self.pod_numbers)
        name, ip = f"echo-{revision}-{number}", f"{POD_NETWORK}{number}"
        labels = {**dict(template["metadata"]["labels"]), "pod-template-hash": revision}
        await self.kmock.post(f"/api/v1/namespaces/{NS}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels, "finalizers": [KUBELET_FINALIZER]},
            "spec": json.loads(json.dumps(template["spec"], default=dict)),
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [container_status(0, False, {"running": {}})]}})
        self.starting[name] = time.monotonic()
        self.logs[name, False] = "echo server listening on tcp://*:5555\n"

    async def start_containers(self):
        """A created pod is Ready once its container has started and its readiness passed."""
        now = time.monotonic()
        for name, created in list(self.starting.items()):
            if now - created >= self.start_s:
                del self.starting[name]
                if name in self.pods():
                    await self.kmock.patch(f"/api/v1/namespaces/{NS}/pods/{name}", json={"status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [container_status(0, True, {"running": {}})]}})

    # -- the kubelet: graceful termination, restarts --

    async def terminate(self, pods):
        now = time.monotonic()
        for name, pod in pods.items():
            if not pod["metadata"].get("deletionTimestamp"):
                continue
            seen = self.deleting.setdefault(name, now)
            if now - seen >= self.grace_s:
                url = f"/api/v1/namespaces/{NS}/pods/{name}"
                await self.kmock.patch(url, json={"status": {
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [container_status(0, False, {"terminated": {"exitCode": self.exit_code}})]}})
                await self.kmock.patch(url, json={"metadata": {"finalizers": None}})

    async def apply_fault(self, fault, kind):
        """What the fault does to the victim's pod, as the kubelet reports it."""
        url = f"/api/v1/namespaces/{NS}/pods/{fault.pod}"
        if kind == "crash":
            self.logs[fault.pod, True] = ("echo server listening on tcp://*:5555\n"
                                          '{"level": "ERROR", "message": "echo server crashed"}\n')
            await self.kmock.patch(url, json={"status": {"containerStatuses": [
                container_status(1, True, {"running": {}})]}})
        elif kind == "megabyte-frames":  # a stage without limits: killed at its memory limit, restarted
            await self.kmock.patch(url, json={"status": {"containerStatuses": [
                container_status(1, True, {"running": {}},
                                 last_state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})]}})
        else:  # hang: the liveness kill takes the grace period, the pod stays Ready meanwhile
            asyncio.get_running_loop().call_later(self.grace_s, lambda: asyncio.ensure_future(self.restart(url)))

    async def restart(self, url):
        """The killed container is gone: unready until its replacement is."""
        await self.kmock.patch(url, json={"status": {"conditions": [{"type": "Ready", "status": "False"}],
                                                     "containerStatuses": [container_status(1, False, {"running": {}})]}})
        await asyncio.sleep(self.grace_s)
        await self.kmock.patch(url, json={"status": {"conditions": [{"type": "Ready", "status": "True"}],
                                                     "containerStatuses": [container_status(1, True, {"running": {}})]}})

    def pods(self):
        return {n: p for n, p in live(self.kmock, "v1/pods").items()
                if p["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "echo"}

    # -- the EndpointSlice controller --

    async def publish_endpoints(self):
        """One slice, as the controller keeps it: every pod with an IP, a
        terminating one as not ready; with no pod, the placeholder (no
        endpoints, no ports)."""
        endpoints = sorted(
            (p["status"]["podIP"], name, ready(p) and not terminating(p), terminating(p))
            for name, p in self.pods().items() if p.get("status", {}).get("podIP"))
        if endpoints == self.slice_sent:
            return
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "echo-abcde", "namespace": NS,
                             "labels": {"kubernetes.io/service-name": "echo"}},
                "addressType": "IPv4", "ports": [{"name": "zmq", "port": 5555}] if endpoints else [],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": is_ready, "terminating": is_terminating},
                               "targetRef": {"kind": "Pod", "name": name}}
                              for ip, name, is_ready, is_terminating in endpoints]}
        path = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
        if self.slice_sent is None:
            await self.kmock.post(path, json=body)
        else:
            await self.kmock.patch(f"{path}/echo-abcde", json={k: body[k] for k in ("endpoints", "ports")})
        self.slice_sent = endpoints
        self.slices_sent.append(endpoints)

    # -- the Job controller, the garbage collector and the load generator's pod --

    async def run_jobs(self):
        now = time.monotonic()
        jobs = live(self.kmock, "batch/v1/jobs")
        for name in self.jobs.keys() - jobs.keys():  # deleted (in the background): its pod goes after it
            pod = self.jobs[name][0]
            if pod in live(self.kmock, "v1/pods"):
                await self.kmock.delete(f"/api/v1/namespaces/{NS}/pods/{pod}")
        for name, job in jobs.items():
            if job.get("status", {}).get("succeeded"):
                continue
            if name not in self.jobs:
                await self.start_job(name, job)
                continue
            pod, started, arguments = self.jobs[name]
            await self.write_job_log(name, pod, now - started, arguments)

    async def start_job(self, name, job):
        pod = f"{name}-x1y2z"
        template = job["spec"]["template"]
        await self.kmock.post(f"/api/v1/namespaces/{NS}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": NS, "labels": {
                **template["metadata"]["labels"], "job-name": name, "batch.kubernetes.io/job-name": name}},
            "spec": template["spec"]})
        # the load generator's clock starts now: its wall clock is the node's
        self.loads_started[name] = time.monotonic()
        self.jobs[name] = (pod, self.loads_started[name], template["spec"]["containers"][0]["command"][3:])
        self.logs[pod, False] = line(started_record(clock=lambda: time.time() + self.kmock.node_clock_s)) + "\n"

    async def write_job_log(self, name, pod, elapsed, arguments):
        option = dict(zip(arguments, arguments[1:]))
        strike = option.get("--fault") or option.get("--attack")
        if strike and elapsed >= 1.0 and '"fault"' not in self.logs[pod, False]:
            victim_name, victim = sorted(self.pods().items())[0]
            fault = FaultSent(victim_name, f"tcp://{victim['status']['podIP']}:5555", 1.0)
            self.faults.append((name, fault))
            self.logs[pod, False] += line({"fault": vars(fault)}) + "\n"
            await self.apply_fault(fault, strike)
        annotations = live(self.kmock, "v1/pods").get(pod, {}).get("metadata", {}).get("annotations") or {}
        stopped = annotations.get(STOP_ANNOTATION) == "true"
        if stopped or elapsed >= min(float(option["--seconds"]), self.job_s or math.inf):
            self.loads_ran_s[name] = elapsed
            address = f"tcp://{POD_NETWORK}10:5555"
            aware = LoadResult(sent=2, answered=2, samples=[(0.1, 0.0004, address), (elapsed - 0.1, 0.0005, address)],
                               per_endpoint={address: 2})
            naive = LoadResult(sent=1, answered=1, samples=[(0.2, 0.0004, "tcp://echo:5555")],
                               per_endpoint={"tcp://echo:5555": 1}) if "--naive-rate" in option else None
            self.logs[pod, False] += "\n".join(outcome_lines(LoadOutcome(aware, naive))) + "\n"
            await self.kmock.patch(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}", json={"status": {"succeeded": 1}})


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def terminating(pod):
    return bool(pod["metadata"].get("deletionTimestamp"))


def container_status(restarts, ready, state, last_state=None):
    """A containerStatuses entry with the fields the API requires."""
    status = {"name": "echo", "image": "cloudnative-echo:01-plain", "imageID": "sha256:0", "restartCount": restarts,
              "ready": ready, "state": state}
    if last_state:
        status["lastState"] = last_state
    return status
