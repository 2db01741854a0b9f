"""The controllers, the kubelet and the load Job's pod of a small cluster,
acting on the test API server (kube_cluster.ApiServer) through its API, in
every namespace, as a real cluster's do. What each one models, and where the
real behaviour is defined, is in the table of kube_cluster.py.

Pod names are unique in the whole cluster (one counter), and so are pod IPs
(10.244.0.x: addresses the host must never connect to).
"""

import asyncio
import hashlib
import itertools
import json
import math
import time

import kmock as km

from kube_cluster import KUBELET_FINALIZER, NS, POD_NETWORK, contents, live, object_path
from workshop.backends.cluster_job import STOP_ANNOTATION, line, outcome_lines, started_record
from workshop.load_generator import FaultSent, LoadOutcome, LoadResult


class FakeCluster:
    """Acts every `tick_s`, in NS and in every namespace created through the API."""

    def __init__(self, kmock, grace_s=0.3, job_s=None, pid1_ignores_sigterm=True, start_s=0.2):
        self.kmock = kmock
        self.grace_s = grace_s            # deletion -> gone
        self.start_s = start_s            # creation -> Ready (container start, readiness probe)
        self.job_s = job_s                # the longest a load Job runs (default: its --seconds)
        self.exit_code = 137 if pid1_ignores_sigterm else 0
        self.pod_numbers = itertools.count(10)
        self.deleting = {}                # (namespace, pod) -> when its deletion was seen
        self.jobs = {}                    # (namespace, job) -> (pod name, started, arguments)
        self.loads_started = {}           # job name -> when its load's clock started (our monotonic clock)
        self.loads_ran_s = {}             # job name -> how long its load ran before it stopped
        self.logs = {}                    # (namespace, pod, previous) -> text
        self.starting = {}                # (namespace, pod) -> when it was created, until it is Ready
        self.slice_sent = {}              # namespace -> the endpoints its slice holds
        self.slices_sent = []             # every endpoint list published, in order
        self.faults = []
        kmock[km.subresource("log")] << (lambda request: self.logs.get(
            (request.namespace, request.name, request.params.get("previous", "").lower() == "true"), "").encode())

    async def run(self, tick_s=0.05):
        while True:
            await self.step()
            await asyncio.sleep(tick_s)

    def namespaces(self):
        """NS (the tests do not create it through the API) and every namespace that exists."""
        return [NS, *(name for name in list(self.kmock.namespaces) if name != NS)]

    async def step(self):
        for namespace in self.namespaces():
            await self.terminate(namespace, self.pods(namespace))
            await self.start_containers(namespace)
            deployment = live(self.kmock, "apps/v1/deployments", namespace).get("echo")
            if deployment is not None:
                await self.reconcile(namespace, deployment, self.pods(namespace))
            await self.publish_endpoints(namespace)
            await self.run_jobs(namespace)
        await self.finish_namespaces()

    # -- the namespace controller --

    async def finish_namespaces(self):
        """A namespace being deleted: everything in it is deleted (its pods
        end as the kubelet ends them, after their grace), then it goes."""
        for name, namespace in list(self.kmock.namespaces.items()):
            if not namespace["metadata"].get("deletionTimestamp"):
                continue
            left = contents(self.kmock, name)
            for resource, obj_name in left:
                obj = self.kmock.objects[resource, name, obj_name]
                if not obj.deleted and not obj.get("metadata", {}).get("deletionTimestamp"):  # gone meanwhile?
                    await self.kmock.delete(object_path(resource, name, obj_name))
            if not left:
                self.kmock.finalize_namespace(name)

    # -- the Deployment controller and the garbage collector --

    async def reconcile(self, namespace, deployment, pods):
        url = f"/apis/apps/v1/namespaces/{namespace}/deployments/echo"
        running = {n: p for n, p in pods.items() if not p["metadata"].get("deletionTimestamp")}
        if deployment["metadata"].get("deletionTimestamp"):
            for name in running:
                await self.kmock.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
            if not pods:  # the dependents are gone: the owner may go
                await self.kmock.patch(url, json={"metadata": {"finalizers": None}})
            return
        template = deployment["spec"]["template"]
        revision = hashlib.sha1(json.dumps(template, sort_keys=True, default=dict).encode()).hexdigest()[:8]
        current = {n: p for n, p in running.items() if p["metadata"]["labels"].get("pod-template-hash") == revision}
        surplus = [n for n in running if n not in current] + sorted(current)[deployment["spec"]["replicas"]:]
        for name in surplus:
            await self.kmock.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
        for _ in range(deployment["spec"]["replicas"] - len(current)):
            await self.create_pod(namespace, template, revision)
        wanted = deployment["spec"]["replicas"]
        available = min(sum(ready(pod) for pod in current.values()), wanted)
        status = {"observedGeneration": deployment["metadata"].get("generation", 0), "replicas": len(running),
                  "updatedReplicas": min(len(current), wanted), "availableReplicas": available}
        if deployment.get("status") != status:
            await self.kmock.patch(url, json={"status": status})

    async def create_pod(self, namespace, template, revision):
        number = next(self.pod_numbers)
        name, ip = f"echo-{revision}-{number}", f"{POD_NETWORK}{number}"
        labels = {**dict(template["metadata"]["labels"]), "pod-template-hash": revision}
        created = await self.kmock.post(f"/api/v1/namespaces/{namespace}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "finalizers": [KUBELET_FINALIZER]},
            "spec": json.loads(json.dumps(template["spec"], default=dict)),
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [container_status(0, False, {"running": {}})]}})
        if created.status >= 300:
            return  # refused (a namespace being deleted): the ReplicaSet controller would retry
        self.starting[namespace, name] = time.monotonic()
        self.logs[namespace, name, False] = "echo server listening on tcp://*:5555\n"

    async def start_containers(self, namespace):
        """A created pod is Ready once its container has started and its readiness passed."""
        now = time.monotonic()
        for (pod_namespace, name), created in list(self.starting.items()):
            if pod_namespace == namespace and now - created >= self.start_s:
                del self.starting[namespace, name]
                if name in self.pods(namespace):
                    await self.kmock.patch(f"/api/v1/namespaces/{namespace}/pods/{name}", json={"status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [container_status(0, True, {"running": {}})]}})

    # -- the kubelet: graceful termination, restarts --

    async def terminate(self, namespace, pods):
        now = time.monotonic()
        for name, pod in pods.items():
            if not pod["metadata"].get("deletionTimestamp"):
                continue
            seen = self.deleting.setdefault((namespace, name), now)
            if now - seen >= self.grace_s:
                url = f"/api/v1/namespaces/{namespace}/pods/{name}"
                await self.kmock.patch(url, json={"status": {
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [container_status(0, False, {"terminated": {"exitCode": self.exit_code}})]}})
                await self.kmock.patch(url, json={"metadata": {"finalizers": None}})

    async def apply_fault(self, namespace, fault, kind):
        """What the fault does to the victim's pod, as the kubelet reports it."""
        url = f"/api/v1/namespaces/{namespace}/pods/{fault.pod}"
        if kind == "crash":
            self.logs[namespace, fault.pod, True] = ("echo server listening on tcp://*:5555\n"
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

    def pods(self, namespace=NS):
        return {n: p for n, p in live(self.kmock, "v1/pods", namespace).items()
                if p["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "echo"}

    # -- the EndpointSlice controller --

    async def publish_endpoints(self, namespace):
        """One slice, as the controller keeps it: every pod with an IP, a
        terminating one as not ready; with no pod, the placeholder (no
        endpoints, no ports). Only a namespace with the Service has one."""
        if "echo" not in live(self.kmock, "v1/services", namespace) and namespace != NS:
            return
        endpoints = sorted(
            (p["status"]["podIP"], name, ready(p) and not terminating(p), terminating(p))
            for name, p in self.pods(namespace).items() if p.get("status", {}).get("podIP"))
        if endpoints == self.slice_sent.get(namespace):
            return
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "echo-abcde", "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": "echo"}},
                "addressType": "IPv4", "ports": [{"name": "zmq", "port": 5555}] if endpoints else [],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": is_ready, "terminating": is_terminating},
                               "targetRef": {"kind": "Pod", "name": name}}
                              for ip, name, is_ready, is_terminating in endpoints]}
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        if "echo-abcde" not in live(self.kmock, "discovery.k8s.io/v1/endpointslices", namespace):
            await self.kmock.post(path, json=body)
        else:
            await self.kmock.patch(f"{path}/echo-abcde", json={k: body[k] for k in ("endpoints", "ports")})
        self.slice_sent[namespace] = endpoints
        self.slices_sent.append(endpoints)

    # -- the Job controller, the garbage collector and the load generator's pod --

    async def run_jobs(self, namespace):
        now = time.monotonic()
        jobs = live(self.kmock, "batch/v1/jobs", namespace)
        mine = {name for job_namespace, name in self.jobs if job_namespace == namespace}
        for name in mine - jobs.keys():  # deleted (in the background): its pod goes after it
            pod = self.jobs[namespace, name][0]
            if pod in live(self.kmock, "v1/pods", namespace):
                await self.kmock.delete(f"/api/v1/namespaces/{namespace}/pods/{pod}")
        for name, job in jobs.items():
            if job.get("status", {}).get("succeeded"):
                continue
            if name not in mine:
                await self.start_job(namespace, name, job)
                continue
            pod, started, arguments = self.jobs[namespace, name]
            await self.write_job_log(namespace, name, pod, now - started, arguments)

    async def start_job(self, namespace, name, job):
        pod = f"{name}-x1y2z"
        template = job["spec"]["template"]
        await self.kmock.post(f"/api/v1/namespaces/{namespace}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": namespace, "labels": {
                **template["metadata"]["labels"], "job-name": name, "batch.kubernetes.io/job-name": name}},
            "spec": template["spec"]})
        # the load generator's clock starts now: its wall clock is the node's
        self.loads_started[name] = time.monotonic()
        self.jobs[namespace, name] = (pod, self.loads_started[name], template["spec"]["containers"][0]["command"][3:])
        self.logs[namespace, pod, False] = line(started_record(clock=lambda: time.time() + self.kmock.node_clock_s)) + "\n"

    async def write_job_log(self, namespace, name, pod, elapsed, arguments):
        option = dict(zip(arguments, arguments[1:]))
        log = (namespace, pod, False)
        strike = option.get("--fault") or option.get("--attack")
        if strike and elapsed >= 1.0 and '"fault"' not in self.logs[log]:
            victim_name, victim = sorted(self.pods(namespace).items())[0]
            fault = FaultSent(victim_name, f"tcp://{victim['status']['podIP']}:5555", 1.0)
            self.faults.append((name, fault))
            self.logs[log] += line({"fault": vars(fault)}) + "\n"
            await self.apply_fault(namespace, fault, strike)
        annotations = live(self.kmock, "v1/pods", namespace).get(pod, {}).get("metadata", {}).get("annotations") or {}
        stopped = annotations.get(STOP_ANNOTATION) == "true"
        if stopped or elapsed >= min(float(option["--seconds"]), self.job_s or math.inf):
            self.loads_ran_s[name] = elapsed
            outcome = self.load_outcome(namespace, elapsed, naive="--naive-rate" in option,
                                        resilient="--resilient-rate" in option)
            self.logs[log] += "\n".join(outcome_lines(outcome)) + "\n"
            await self.kmock.patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
                                   json={"status": {"succeeded": 1}})

    def load_outcome(self, namespace, elapsed, naive, resilient=False):
        """What the load generator's pod writes at the end: two requests to
        one address, one through the Service if it ran a naive client, and
        three with one retry if it ran a resilient one."""
        address = f"tcp://{POD_NETWORK}10:5555"
        aware = LoadResult(sent=2, answered=2, samples=[(0.1, 0.0004, address), (elapsed - 0.1, 0.0005, address)],
                           per_endpoint={address: 2})
        through = LoadResult(sent=1, answered=1, samples=[(0.2, 0.0004, "tcp://echo:5555")],
                             per_endpoint={"tcp://echo:5555": 1}) if naive else None
        kept = LoadResult(sent=3, answered=3, samples=[(0.3, 0.0004, address)] * 3, per_endpoint={address: 4},
                          retries=1, ejections=1) if resilient else None
        return LoadOutcome(aware, through, kept)


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
