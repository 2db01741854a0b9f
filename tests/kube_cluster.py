"""A cluster for the kube backend's tests: kmock (an in-memory API server)
made to behave like a real one where our code depends on it, and a small
`FakeCluster` that plays the controllers, the kubelet and the load Job
through the API, as a real cluster would.

What is modelled, because our code must respect it (and kmock alone does not):
- foreground deletion: a Deployment deleted with propagationPolicy=Foreground
  stays, with deletionTimestamp and the `foregroundDeletion` finalizer, until
  its pods are gone; creating it again meanwhile answers 409;
- pods end gracefully: deletion sets deletionTimestamp; the container's exit
  (137: SIGKILLed, as PID 1 without a handler) is in the pod's last status;
- the load generator Job: a pod whose log follows cluster_job's protocol.

Pod IPs are 10.244.0.x: addresses the host must never connect to.
"""

import asyncio
import hashlib
import itertools
import json
import time

import kmock as km
from kubernetes import client

from workshop.backends.cluster_job import line, outcome_lines, started_record
from workshop.load_generator import FaultSent, LoadOutcome, LoadResult

NS = "cloudnative-echo"
POD_NETWORK = "10.244.0."
KUBELET_FINALIZER = "test.workshop/kubelet"  # lets a deleted pod linger while it terminates


class ForegroundEmulator(km.KubernetesEmulator):
    """kmock, plus foreground deletion: the deleted object gets the
    `foregroundDeletion` finalizer, so it stays (deletionTimestamp set) until
    the garbage collector (FakeCluster) removes the finalizer."""

    async def _handle(self, request):
        if request.action == km.action.DELETE and request.name and "Foreground" in (
                request.params.get("propagationPolicy"), (request.data or {}).get("propagationPolicy")):
            try:
                obj = self.objects[request.resource, request.namespace, request.name]
            except KeyError:
                obj = None
            if obj is not None and not obj.deleted:
                obj.patch({"metadata": {"finalizers": ["foregroundDeletion"]}})
        return await super()._handle(request)


# What the API server answers on /version (kmock serves none of its own).
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z", "goVersion": "go1.22.2",
           "compiler": "gc", "platform": "linux/amd64"}


def api_client(kmock):
    configuration = client.Configuration()
    configuration.host = str(kmock.url).rstrip("/")
    return client.ApiClient(configuration)


def live(kmock, resource):
    """The stored objects of a resource in NS that are not deleted, by name."""
    found = {}
    for key in list(kmock.objects.keys()):
        if key[0] == resource and key[1] == NS:
            obj = kmock.objects[key]
            if not obj.deleted:
                found[key[2]] = obj
    return found


class FakeCluster:
    """The controllers, kubelet and Job runner of a small cluster, acting on
    kmock through its API every `tick_s`."""

    def __init__(self, kmock, grace_s=0.3, job_s=3.0, pid1_ignores_sigterm=True):
        self.kmock = kmock
        self.grace_s = grace_s            # deletion -> gone
        self.job_s = job_s                # how long a load Job "runs"
        self.exit_code = 137 if pid1_ignores_sigterm else 0
        self.pod_numbers = itertools.count(10)
        self.deleting = {}                # pod name -> when its deletion was seen
        self.jobs = {}                    # job name -> (pod name, started, arguments)
        self.logs = {}                    # (pod name, previous) -> text
        self.slice_sent = None
        self.faults = []
        kmock[km.subresource("log")] << (lambda request: self.logs.get(
            (request.name, request.params.get("previous", "").lower() == "true"), "").encode())

    async def run(self, tick_s=0.05):
        while True:
            await self.step()
            await asyncio.sleep(tick_s)

    async def step(self):
        await self.terminate(self.pods())
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
        ready = min(len(current), deployment["spec"]["replicas"])
        status = {"observedGeneration": deployment["metadata"].get("generation", 0), "replicas": len(running),
                  "updatedReplicas": ready, "availableReplicas": ready}
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
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [container_status(0, True, {"running": {}})]}})
        self.logs[name, False] = "echo server listening on tcp://*:5555\n"

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
        endpoints = sorted(
            ((p["status"]["podIP"], name) for name, p in self.pods().items()
             if not p["metadata"].get("deletionTimestamp")
             and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))))
        if endpoints == self.slice_sent:
            return
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "echo-abcde", "namespace": NS,
                             "labels": {"kubernetes.io/service-name": "echo"}},
                "addressType": "IPv4", "ports": [{"name": "zmq", "port": 5555}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                               "targetRef": {"kind": "Pod", "name": name}} for ip, name in endpoints]}
        path = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
        if self.slice_sent is None:
            await self.kmock.post(path, json=body)
        else:
            await self.kmock.patch(f"{path}/echo-abcde", json={"endpoints": body["endpoints"]})
        self.slice_sent = endpoints

    # -- the Job controller and the load generator's pod --

    async def run_jobs(self):
        now = time.monotonic()
        for name, job in live(self.kmock, "batch/v1/jobs").items():
            if job.get("status", {}).get("succeeded"):
                continue
            if name not in self.jobs:
                pod = f"{name}-x1y2z"
                await self.kmock.post(f"/api/v1/namespaces/{NS}/pods", json={
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": NS, "labels": {"job-name": name}},
                    "spec": json.loads(json.dumps(job["spec"]["template"]["spec"], default=dict))})
                arguments = job["spec"]["template"]["spec"]["containers"][0]["command"][3:]
                self.jobs[name] = (pod, now, arguments)
                self.logs[pod, False] = line(started_record()) + "\n"
                continue
            pod, started, arguments = self.jobs[name]
            await self.write_job_log(name, pod, now - started, arguments)

    async def write_job_log(self, name, pod, elapsed, arguments):
        option = dict(zip(arguments, arguments[1:]))
        if "--fault" in option and elapsed >= 1.0 and '"fault"' not in self.logs[pod, False]:
            victim_name, victim = sorted(self.pods().items())[0]
            fault = FaultSent(victim_name, f"tcp://{victim['status']['podIP']}:5555", 1.0)
            self.faults.append((name, fault))
            self.logs[pod, False] += line({"fault": vars(fault)}) + "\n"
            await self.apply_fault(fault, option["--fault"])
        if elapsed >= self.job_s:
            address = f"tcp://{POD_NETWORK}10:5555"
            aware = LoadResult(sent=2, answered=2, samples=[(0.1, 0.0004, address), (1.5, 0.0005, address)],
                               per_endpoint={address: 2})
            naive = LoadResult(sent=1, answered=1, samples=[(0.2, 0.0004, "tcp://echo:5555")],
                               per_endpoint={"tcp://echo:5555": 1}) if "--naive-rate" in option else None
            self.logs[pod, False] += "\n".join(outcome_lines(LoadOutcome(aware, naive))) + "\n"
            await self.kmock.patch(f"/apis/batch/v1/namespaces/{NS}/jobs/{name}", json={"status": {"succeeded": 1}})


def container_status(restarts, ready, state):
    """A containerStatuses entry with the fields the API requires."""
    return {"name": "echo", "image": "cloudnative-echo:01-plain", "imageID": "sha256:0", "restartCount": restarts,
            "ready": ready, "state": state}
