"""What the kube backend runs inside the cluster, as a Job, and how it reads
the answer back: the one place for both sides of that conversation.

On minikube the pod IPs cannot be reached from the host, only from inside the
cluster. So everything that talks to a pod runs here, in the load generator
image: the check that every endpoint answers, the load itself (the
endpoint-aware client, and the naive one through the Service), and the fault
sent to one replica. The Job prints JSON lines to its log; the host reads them
(`JobLoad`), polling at most twice a second, every object as the API's JSON
(`json_api`).

The load stops early when the host says so (`JobLoad.stop()`): the host
annotates the Job's pod, and the load generator, which watches its own pod
(its name from the downward API, its Role may read pods), stops sending. So
a scenario's load ends at the same point on both backends. It also stops on
SIGTERM — it is PID 1 in its container, where Python without a handler
would ignore SIGTERM until the SIGKILL at the end of the grace period: it
stops sending, prints what it has and exits, within the Job's short grace.

    python -m workshop.backends.cluster_job load --service echo --rate 500 ...
    python -m workshop.backends.cluster_job echo --service echo
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict

from ..feed import Endpoint, EndpointFeed
from ..load_generator import FaultSent, LoadOutcome, LoadResult, LoadSpec, run_load, \
    wait_until_every_endpoint_answers
from .json_api import MERGE_PATCH
from .list_watch import ListWatcher, has_labels

LOADGEN_IMAGE = "cloudnative-echo:loadgen"
POLL_S = 0.5        # how often the host reads the Job's log: keeps the API load to a few requests/s
STATUS_S = 2.0      # how often it also reads the Job's status (its failure is not in the log)
LOAD_JOB_START_S = 150  # a load Job's time beyond its load: scheduling, start-up, every endpoint answering
SAMPLES_PER_LINE = 500
CLIENTS = ("aware", "naive", "resilient")  # the load's clients, as their results are named in the log
# The Job's labels, and the label its pods add: the NetworkPolicy in
# k8s/network-policy.yaml lets pods with either into the echo port.
LOADGEN_LABELS = {"app.kubernetes.io/name": "loadgen", "app.kubernetes.io/part-of": "cloudnative-echo"}
CLIENT_LABEL = {"cloudnative-echo/client": "true"}
STOP_ANNOTATION = "cloudnative-echo/stop"  # set on the Job's pod by the host: stop sending now
POD_NAME_ENV = "POD_NAME"   # the pod's own name, from the downward API
GRACE_S = 5                 # the Job pod's grace: the load stops sending at SIGTERM and prints within 1-2 s
LOADGEN_CPU_REQUEST = "100m"

# -- the log protocol: one JSON object per line --

def started_record(clock=time.time):
    """The load's clock starts now: its wall-clock time, the node's. The host
    places it on its own clock through the offset it measured (`NodeClock`),
    instead of when it happened to read the line."""
    return {"started": True, "at": clock()}


def line(record):
    return json.dumps(record)


def result_lines(client, result):
    """A LoadResult as lines short enough for any container log: the samples
    in chunks, then the totals."""
    for start in range(0, len(result.samples), SAMPLES_PER_LINE):
        yield line({"client": client, "samples": result.samples[start:start + SAMPLES_PER_LINE]})
    yield line({"client": client, "result": {k: v for k, v in asdict(result).items() if k != "samples"}})


def outcome_lines(outcome):
    """Every client's result, then the record that says the log is complete."""
    for client in CLIENTS:
        if getattr(outcome, client) is not None:
            yield from result_lines(client, getattr(outcome, client))
    yield line({"done": True})


def has_record(key):
    """A `finished(lines)` for ClusterJob: the log holds a record with `key`."""
    return lambda lines: any(key in record for record in records(lines))


def records(lines):
    """The protocol's records in `lines`; anything else (a Python warning,
    a traceback) is skipped."""
    for text in lines:
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def read_fault(lines):
    for record in records(lines):
        if "fault" in record:
            return FaultSent(**record["fault"])
    return None


def read_outcome(lines):
    """The LoadOutcome written by `outcome_lines()`, or None if the aware
    client's totals are missing (the Job died)."""
    samples = {client: [] for client in CLIENTS}
    totals = {}
    for record in records(lines):
        if "samples" in record:
            samples[record["client"]].extend(tuple(s) for s in record["samples"])
        elif "result" in record:
            totals[record["client"]] = record["result"]
    if "aware" not in totals:
        return None
    results = {client: LoadResult(samples=samples[client], **totals[client]) for client in totals}
    return LoadOutcome(aware=results["aware"], naive=results.get("naive"), resilient=results.get("resilient"),
                       fault=read_fault(lines))


# -- the Job --

def job_manifest(name, namespace, arguments, deadline_s):
    """A Job running this module with `arguments`, as the loadgen
    ServiceAccount (k8s/loadgen-rbac.yaml), in a restricted-profile pod. It
    fails after `deadline_s` whatever happens (an image that cannot be pulled,
    a pod that stays Pending), so nobody waits for it for ever. Its pods
    carry the load generator's labels and the declared client label, each
    of which k8s/network-policy.yaml admits to the echo port."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LOADGEN_LABELS)},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": int(deadline_s),
                 "template": {
            "metadata": {"labels": {**LOADGEN_LABELS, **CLIENT_LABEL}},
            "spec": {
                "serviceAccountName": "loadgen", "restartPolicy": "Never",
                "terminationGracePeriodSeconds": GRACE_S,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "loadgen", "image": LOADGEN_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", __spec__.name, *arguments],
                    "env": [{"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    # The request is about what it uses: a whole run at 150 requests/s (its load,
                    # its replicas, their probes) takes a fifth of a core. The demo's runs at once
                    # must fit a default minikube's CPU (parallel_runs.KUBE_JOBS); it may burst.
                    "resources": {"requests": {"cpu": LOADGEN_CPU_REQUEST, "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            }}},
    }


def load_arguments(namespace, service, spec, service_address):
    arguments = ["load", "--namespace", namespace, "--service", service, "--rate", str(spec.rate),
                 "--timeout", str(spec.timeout_s), "--seconds", str(spec.max_s)]
    if spec.fault:
        arguments += ["--fault", spec.fault, "--fault-at", str(spec.fault_at_s)]
    if spec.attack:
        arguments += ["--attack", spec.attack, "--fault-at", str(spec.fault_at_s)]
    if spec.naive_rate:
        arguments += ["--naive-rate", str(spec.naive_rate), "--service-address", service_address]
    if spec.resilient_rate:
        arguments += ["--resilient-rate", str(spec.resilient_rate)]
    return arguments


def jobs_path(namespace):
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def pods_path(namespace):
    return f"/api/v1/namespaces/{namespace}/pods"


class ClusterJob:
    """A Job of this module, created now, watched from the host by reading
    its pod's log (at most every POLL_S). `api`: a KubeApi.

    The log says when the work is done (`finished(lines)`: the record the
    command prints last); the Job's status is read only every STATUS_S, for
    what the log cannot say (the Job failed, or its pod never started). So a
    look costs one request, and the host stays at a few per second."""

    def __init__(self, api, namespace, name, arguments, deadline_s=120, finished=lambda lines: False):
        self.api = api
        self.namespace, self.name, self.deadline_s = namespace, name, deadline_s
        self.finished = finished
        self.api.post(jobs_path(namespace), job_manifest(name, namespace, arguments, deadline_s))
        self.lines = []
        self.done = False
        self.succeeded = False
        self.pod = None
        self._next_look = 0.0
        self._next_status = time.monotonic() + STATUS_S

    def look(self):
        """Refresh the log (and now and then the status), unless we looked less than POLL_S ago."""
        if self.done or time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + POLL_S
        self.lines = self._log_lines()
        if self.finished(self.lines):
            self.done = self.succeeded = True
        elif self.pod is None or time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + STATUS_S
            self._read_status()

    def _read_status(self):
        status = self.api.get(f"{jobs_path(self.namespace)}/{self.name}/status").get("status") or {}
        ended = {c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"}
        self.done = bool(status.get("succeeded") or status.get("failed") or ended & {"Complete", "Failed"})
        self.succeeded = bool(status.get("succeeded"))
        if self.done:
            self.lines = self._log_lines()  # what it printed last, before it ended

    def find_pod(self):
        """The Job's pod's name, once it has one."""
        if self.pod is None:
            listing = self.api.get(pods_path(self.namespace), labelSelector=f"job-name={self.name}")
            pods = [p for p in listing["items"] if has_labels(p["metadata"].get("labels"), {"job-name": self.name})]
            if pods:  # checked here too: kmock ignores selectors
                self.pod = pods[0]["metadata"]["name"]
        return self.pod

    def _log_lines(self):
        from kubernetes.client.rest import ApiException
        if self.find_pod() is None:
            return []
        try:
            return read_log(self.api, self.pod, self.namespace).splitlines()
        except ApiException as error:
            if error.status in (400, 404):  # the container has not started yet
                return []
            raise

    def wait(self, timeout_s=None):
        deadline = time.monotonic() + (timeout_s or self.deadline_s + 30)
        while not self.done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Job {self.name} did not finish: kubectl -n {self.namespace} describe job/{self.name}")
            time.sleep(POLL_S)
            self.look()
        return self

    def delete(self):
        """Delete the Job and, after it, its pods (a foreground or orphaning
        delete would leave them, or make us wait)."""
        from kubernetes.client.rest import ApiException
        try:
            self.api.delete(f"{jobs_path(self.namespace)}/{self.name}", propagationPolicy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    def last_lines(self, count=20):
        return "\n".join(self.lines[-count:])


def read_log(api, pod, namespace, previous=False):
    """A pod's log as its text (never parsed: a log that happens to be one
    JSON line is still text)."""
    return api.text(f"{pods_path(namespace)}/{pod}/log", previous=previous)


class JobLoad:
    """The scenario's load as a Job: the handle every backend's load offers.

    Its clock starts at the time its first log line gives (the node's wall
    clock), placed on this process's clock through the node's measured offset
    (`api.clock`); so the fault's time (the Job's clock) and the host's
    observations (this one) are comparable. stop() annotates the Job's pod:
    the load generator stops sending within moments."""

    def __init__(self, api, namespace, service, spec, service_address, name):
        self.spec = spec
        self.api = api
        self.job = ClusterJob(api, namespace, name, load_arguments(namespace, service, spec, service_address),
                              deadline_s=spec.max_s + LOAD_JOB_START_S,
                              finished=has_record("done"))
        self.started_at_node = None   # the load's start, on the node's wall clock
        self.fault = None
        self.stop_sent = False

    def _look(self):
        self.job.look()
        if self.started_at_node is None:
            started = next((r for r in records(self.job.lines) if r.get("started")), None)
            self.started_at_node = started and started["at"]
        if self.fault is None:
            self.fault = read_fault(self.job.lines)

    @property
    def started_at(self):
        """When the load's clock started, on this process's monotonic clock;
        placed anew at each look, as the node's offset gets known better."""
        if self.started_at_node is None:
            return None
        return time.monotonic() - (time.time() - self.api.clock.to_ours(self.started_at_node))

    def elapsed(self):
        self._look()
        started_at = self.started_at
        return 0.0 if started_at is None else max(0.0, time.monotonic() - started_at)

    def finished(self):
        self._look()
        return self.job.done

    def stop(self):
        """Tell the load generator to stop sending (once): annotate its pod."""
        if self.stop_sent or self.job.done or self.job.find_pod() is None:
            return
        self.api.patch(f"{pods_path(self.job.namespace)}/{self.job.pod}",
                       {"metadata": {"annotations": {STOP_ANNOTATION: "true"}}}, content_type=MERGE_PATCH)
        self.stop_sent = True

    def result(self, timeout_s=None):
        self.job.wait(timeout_s)
        self._look()
        outcome = read_outcome(self.job.lines)
        if outcome is None:
            raise RuntimeError(f"load generator Job {self.job.name} left no result (see `kubectl -n "
                               f"{self.job.namespace} describe job/{self.job.name}`):\n{self.job.last_lines()}")
        return outcome


# -- the side that runs in the cluster --

def cluster_api():
    """A KubeApi with the pod's own ServiceAccount (or the kubeconfig, when run by hand)."""
    from kubernetes import client, config

    from .json_api import KubeApi
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return KubeApi(client.ApiClient())


def follow_service(api, namespace, service):
    """The Service's ready endpoints, followed through EndpointSlices."""
    from .endpointslices import EndpointSliceWatcher
    watcher = EndpointSliceWatcher(api, namespace, service).start()
    if not watcher.feed.wait_until(bool, timeout=60):
        raise SystemExit(f"no ready endpoints for service {service} in {namespace}")
    return watcher.feed


def watch_for_stop(api, namespace, pod, stop):
    """Set `stop` (an Event) once our own pod carries STOP_ANNOTATION."""
    def look(kind, obj):
        mine = obj["metadata"]["name"] == pod  # checked here too: kmock ignores field selectors
        if mine and (obj["metadata"].get("annotations") or {}).get(STOP_ANNOTATION) == "true":
            stop.set()
    return ListWatcher(api, pods_path(namespace), on_change=look, field_selector=f"metadata.name={pod}").start()


def stop_on_sigterm(stop, load_started):
    """SIGTERM (a deleted Job, activeDeadlineSeconds): stop sending and print
    what was measured; before the load started there is nothing to print."""
    def terminate(signum, frame):
        stop.set()
        if not load_started.is_set():
            raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("load", "echo"):
        command = commands.add_parser(name)
        command.add_argument("--namespace", default="cloudnative-echo")
        command.add_argument("--service", default="echo")
        command.add_argument("--endpoint", action="append", metavar="ADDRESS",
                             help="these endpoints instead of the Service's (no API server needed)")
    load = commands.choices["load"]
    load.add_argument("--rate", type=float, default=500)
    load.add_argument("--timeout", type=float, default=1.0, help="seconds before a request is lost")
    load.add_argument("--seconds", type=float, default=10)
    load.add_argument("--fault", help="crash, hang or slow:<ms>, sent to one replica")
    load.add_argument("--attack", help="a hostile client on one replica: megabyte-frames")
    load.add_argument("--fault-at", type=float, default=1.0, help="seconds after the load started")
    load.add_argument("--naive-rate", type=float, default=0, help="a naive client through the Service too")
    load.add_argument("--service-address", help="the Service as a ZeroMQ endpoint, e.g. tcp://echo:5555")
    load.add_argument("--resilient-rate", type=float, default=0,
                      help="a resilient client too: deadlines, retries, ejection (workshop/resilience.py)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    stop, load_started = threading.Event(), threading.Event()
    stop_on_sigterm(stop, load_started)
    api = None if args.endpoint and not os.environ.get(POD_NAME_ENV) else cluster_api()
    if args.endpoint:
        feed = EndpointFeed()
        feed.publish(Endpoint(address, address) for address in args.endpoint)
    else:
        feed = follow_service(api, args.namespace, args.service)
    if args.command == "echo":
        wait_until_every_endpoint_answers(feed, timeout_s=30)
        print(line({"echo": {"endpoints": len(feed.snapshot()[1])}}), flush=True)
        return 0
    if os.environ.get(POD_NAME_ENV):  # in the cluster: the host may ask us to stop
        watch_for_stop(api, args.namespace, os.environ[POD_NAME_ENV], stop)
    spec = LoadSpec(rate=args.rate, timeout_s=args.timeout, max_s=args.seconds, fault=args.fault,
                    attack=args.attack, fault_at_s=args.fault_at, naive_rate=args.naive_rate,
                    resilient_rate=args.resilient_rate)

    def started():
        load_started.set()
        print(line(started_record()), flush=True)
    outcome = run_load(feed, spec, args.service_address, on_started=started,
                       on_fault=lambda fault: print(line({"fault": asdict(fault)}), flush=True), stop=stop)
    for text in outcome_lines(outcome):
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
