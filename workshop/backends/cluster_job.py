"""What the kube backend runs inside the cluster, as a Job, and how it reads
the answer back: the one place for both sides of that conversation.

On minikube the pod IPs cannot be reached from the host, only from inside the
cluster. So everything that talks to a pod runs here, in the load generator
image: the check that every endpoint answers, the load itself (the
endpoint-aware client, and the naive one through the Service), and the fault
sent to one replica. The Job prints JSON lines to its log; the host reads them
(`JobLoad`), polling at most twice a second.

    python -m workshop.backends.cluster_job load --service echo --rate 500 ...
    python -m workshop.backends.cluster_job echo --service echo
"""

import argparse
import json
import sys
import time
from dataclasses import asdict

from ..feed import Endpoint, EndpointFeed
from ..load_generator import FaultSent, LoadOutcome, LoadResult, LoadSpec, run_load, \
    wait_until_every_endpoint_answers
from .list_watch import has_labels

LOADGEN_IMAGE = "cloudnative-echo:loadgen"
POLL_S = 0.5        # how often the host looks at the Job: keeps the API load to a few requests/s
LOAD_JOB_START_S = 150  # a load Job's time beyond its load: scheduling, start-up, every endpoint answering
SAMPLES_PER_LINE = 500
# The Job's labels, and the label its pods add: the NetworkPolicy in
# k8s/network-policy.yaml lets pods with either into the echo port.
LOADGEN_LABELS = {"app.kubernetes.io/name": "loadgen", "app.kubernetes.io/part-of": "cloudnative-echo"}
CLIENT_LABEL = {"cloudnative-echo/client": "true"}

# -- the log protocol: one JSON object per line --

def started_record():
    """The load's clock starts now: its wall-clock time, so the host can place
    it on its own clock (minikube shares the host's clock) instead of when it
    happened to read the line."""
    return {"started": True, "at": time.time()}


def line(record):
    return json.dumps(record)


def result_lines(client, result):
    """A LoadResult as lines short enough for any container log: the samples
    in chunks, then the totals."""
    for start in range(0, len(result.samples), SAMPLES_PER_LINE):
        yield line({"client": client, "samples": result.samples[start:start + SAMPLES_PER_LINE]})
    yield line({"client": client, "result": {k: v for k, v in asdict(result).items() if k != "samples"}})


def outcome_lines(outcome):
    for client in ("aware", "naive"):
        if getattr(outcome, client) is not None:
            yield from result_lines(client, getattr(outcome, client))


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
    samples = {"aware": [], "naive": []}
    totals = {}
    for record in records(lines):
        if "samples" in record:
            samples[record["client"]].extend(tuple(s) for s in record["samples"])
        elif "result" in record:
            totals[record["client"]] = record["result"]
    if "aware" not in totals:
        return None
    results = {client: LoadResult(samples=samples[client], **totals[client]) for client in totals}
    return LoadOutcome(aware=results["aware"], naive=results.get("naive"), fault=read_fault(lines))


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
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "loadgen", "image": LOADGEN_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", __spec__.name, *arguments],
                    "resources": {"requests": {"cpu": "200m", "memory": "64Mi"},
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
    return arguments


class ClusterJob:
    """A Job of this module, created now, watched from the host by polling
    its status and its pod's log (at most every POLL_S)."""

    def __init__(self, api_client, namespace, name, arguments, deadline_s=120):
        from kubernetes import client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.namespace, self.name, self.deadline_s = namespace, name, deadline_s
        self.batch.create_namespaced_job(namespace, job_manifest(name, namespace, arguments, deadline_s))
        self.lines = []
        self.done = False
        self.succeeded = False
        self._pod = None
        self._next_look = 0.0

    def look(self):
        """Refresh status and log, unless we looked less than POLL_S ago."""
        if self.done or time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + POLL_S
        status = self.batch.read_namespaced_job_status(self.name, self.namespace).status
        ended = {c.type for c in (status and status.conditions) or [] if c.status == "True"} & {"Complete", "Failed"}
        self.done = bool(status and (status.succeeded or status.failed or ended))
        self.succeeded = bool(status and status.succeeded)
        self.lines = self._log_lines()

    def _log_lines(self):
        from kubernetes.client.rest import ApiException
        if self._pod is None:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={self.name}").items
            pods = [p for p in pods if has_labels(p.metadata.labels, {"job-name": self.name})]  # checked here too
            if not pods:
                return []
            self._pod = pods[0].metadata.name
        try:
            return read_log(self.core, self._pod, self.namespace).splitlines()
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

    def last_lines(self, count=20):
        return "\n".join(self.lines[-count:])


def read_log(core, pod, namespace, previous=False):
    """A pod's log as its text. (Read raw: the client would otherwise parse a
    log that happens to be one JSON line and hand back a Python repr of it.)"""
    response = core.read_namespaced_pod_log(pod, namespace, previous=previous, _preload_content=False)
    return response.data.decode(errors="replace")


class JobLoad:
    """The scenario's load as a Job: the handle every backend's load offers.

    Its clock starts at the time its first log line gives, placed on this
    process's clock; so the fault's time (the Job's clock) and the host's
    observations (this one) are comparable. It runs its full `max_s`: stop()
    cannot reach into the cluster early."""

    def __init__(self, api_client, namespace, service, spec, service_address, name):
        self.spec = spec
        self.job = ClusterJob(api_client, namespace, name, load_arguments(namespace, service, spec, service_address),
                              deadline_s=spec.max_s + LOAD_JOB_START_S)
        self.started_at = None
        self.fault = None

    def _look(self):
        self.job.look()
        started = next((r for r in records(self.job.lines) if r.get("started")), None)
        if self.started_at is None and started is not None:
            # on this process's monotonic clock; never later than now
            self.started_at = time.monotonic() - max(0.0, time.time() - started.get("at", time.time()))
        if self.fault is None:
            self.fault = read_fault(self.job.lines)

    def elapsed(self):
        self._look()
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def finished(self):
        self._look()
        return self.job.done

    def stop(self):
        """Nothing to do: the Job stops on its own after max_s."""

    def result(self, timeout_s=None):
        self.job.wait(timeout_s)
        self._look()
        outcome = read_outcome(self.job.lines)
        if outcome is None:
            raise RuntimeError(f"load generator Job {self.job.name} left no result (see `kubectl -n "
                               f"{self.job.namespace} describe job/{self.job.name}`):\n{self.job.last_lines()}")
        return outcome


# -- the side that runs in the cluster --

def follow_service(namespace, service):
    """The Service's ready endpoints, followed through EndpointSlices with the
    pod's own ServiceAccount (or the kubeconfig, when run by hand)."""
    from kubernetes import client, config

    from .endpointslices import EndpointSliceWatcher
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    watcher = EndpointSliceWatcher(client.ApiClient(), namespace, service).start()
    if not watcher.feed.wait_until(bool, timeout=60):
        raise SystemExit(f"no ready endpoints for service {service} in {namespace}")
    return watcher.feed


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
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.endpoint:
        feed = EndpointFeed()
        feed.publish(Endpoint(address, address) for address in args.endpoint)
    else:
        feed = follow_service(args.namespace, args.service)
    if args.command == "echo":
        wait_until_every_endpoint_answers(feed, timeout_s=30)
        print(line({"echo": {"endpoints": len(feed.snapshot()[1])}}), flush=True)
        return 0
    spec = LoadSpec(rate=args.rate, timeout_s=args.timeout, max_s=args.seconds, fault=args.fault,
                    attack=args.attack, fault_at_s=args.fault_at, naive_rate=args.naive_rate)
    outcome = run_load(feed, spec, args.service_address,
                       on_started=lambda: print(line(started_record()), flush=True),
                       on_fault=lambda fault: print(line({"fault": asdict(fault)}), flush=True))
    for text in outcome_lines(outcome):
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
