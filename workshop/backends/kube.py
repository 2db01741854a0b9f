"""The Kubernetes backend: a stage's Deployment on a real cluster.

It uses the `kubernetes` client with a kubeconfig context (minikube, for
workshop attendees): applies the stage's kustomization, waits for the
rollout, restarts it the way `kubectl rollout restart` does (a pod-template
annotation), scales, deletes pods, reads logs.

Every object is read as the API's JSON, never through the kubernetes
client's typed models (`json_api`): a real API server is Go and sends an
empty slice without omitempty as `null` — an EndpointSlice's `endpoints` and
`ports` whenever the Service has no pod, as between two deploys — which the
client's models rejected with a ValueError (kubernetes-client/python#2214,
#2423), and any field newer than the client's models would be lost.

What else a real cluster does that it respects:
- the host cannot reach pod IPs (minikube's docker and VM drivers): it talks
  only to the API server; the load, the readiness check and the faults run
  inside the cluster as a Job (`cluster_job`);
- a Deployment deleted in the foreground stays (deletionTimestamp and the
  `foregroundDeletion` finalizer) until its dependents are gone, and POSTing
  it again meanwhile answers 409: it waits for the old one to be gone;
- the scenario loop must not load the API server: pods and the Deployment are
  followed by watches (`ListWatcher`), and read from those caches;
- a deploy that fails stops its watches: no watch thread outlives it;
- teardown is not measured: the previous run's pods are deleted with
  gracePeriodSeconds=0 (01-03 ignore SIGTERM and would hold each for 30 s);
- the Jobs a backend started are deleted when it closes (in the background,
  so their pods go too): a Job left by Ctrl-C would load the next run's pods.

Where: the shared namespace, cloudnative-echo (the notebooks, the doctor,
`workshop run`: one run at a time), or with `own_namespace` a namespace of
its own (`run_namespace`: the demo's children, several at once), created
with the backend and deleted when it closes, interrupted or not. Closing
does not wait for it to go: the namespace controller deletes what is in it;
its pods are deleted without a grace period first, so that the CPU they
request (the scheduler counts a pod until it is gone, kubernetes/kubernetes
#96515) is free for the next run at once.

Images are not built here: the kube backend refuses a context that is not a
minikube profile unless told which context to use or not to build (images
are built once per demo, see `minikube.py`).
"""

import dataclasses
import datetime
import secrets
import sys
import time

from kubernetes.client.rest import ApiException

from ..manifests import load_stage, render
from ..stages import stage_dir
from .base import Backend, ContainerRun, PodHistory, PodStatus, PodTermination
from .cluster_job import JobLoad, pods_path, read_log
from .endpointslices import EndpointSliceWatcher
from .json_api import MERGE_PATCH, STRATEGIC_PATCH, KubeApi
from .list_watch import ListWatcher, has_labels, label_selector
from .minikube import choose_context, kubeconfig_file
from .run_namespace import NAMESPACES, SHARED, into_namespace, manifests, new_name

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets
POLL_S = 0.5  # when something must be polled (a deletion to finish), this often


def api_path(obj):
    """(the collection's path, the name) of an object, for our manifests'
    kinds: their plural is the kind in lower case plus "s", or "ies" for a
    final "y" (NetworkPolicy: networkpolicies)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    namespace = obj["metadata"].get("namespace")
    kind = obj["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
    path = (f"/apis/{group}/{version}" if group else f"/api/{version}") + (
        f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    return path, obj["metadata"]["name"]


class KubeBackend(Backend):
    name = "kube"

    def __init__(self, api_client=None, context=None, build_images=True, own_namespace=False):
        if api_client is None:
            from kubernetes import config
            self.context = choose_context(context, build_images)
            print(f"kube backend: kubeconfig context {self.context!r}", file=sys.stderr)
            api_client = config.new_client_from_config(config_file=kubeconfig_file(), context=self.context)
        self.api_client = api_client
        self.api = KubeApi(api_client)
        self.spec = None
        self.feed = None
        self._watchers = []
        self._terminations = {}   # pod name -> PodTermination
        self._histories = {}      # pod name -> PodHistory
        self._jobs = []           # the ClusterJobs this backend started
        self.namespace = SHARED
        self._owns_namespace = False  # close() deletes it
        if own_namespace:
            try:
                self._make_own_namespace()
            except BaseException:  # Ctrl-C or SIGTERM included: what was made goes
                self.close()
                raise

    def _make_own_namespace(self, attempts=3):
        """Create a namespace of our own and what a run needs in it."""
        for _ in range(attempts):
            namespace, pieces = manifests(new_name())
            # Ours from now on, even if the POST is cut short: close() deletes it (404 if it never was).
            self.namespace, self._owns_namespace = namespace["metadata"]["name"], True
            try:
                self.api.post(NAMESPACES, namespace)
                break
            except ApiException as error:
                self._owns_namespace = False
                if error.status != 409:
                    raise
        else:
            raise RuntimeError(f"{attempts} namespace names in a row were taken")  # 409: someone else's
        for obj in pieces:
            self.api.post(api_path(obj)[0], obj)

    # -- applying manifests --

    def apply(self, obj, timeout_s=120):
        """Create the object, or merge-patch it if it exists: `kubectl apply`
        for the simple, complete manifests of this workshop. An object that
        is being deleted is never patched: wait until it is gone, then create."""
        path, name = api_path(obj)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.api.post(path, obj)
            except ApiException as error:
                if error.status != 409:
                    raise
            existing = self.api.get_or_none(f"{path}/{name}")
            if existing is None:
                continue  # gone between our POST and GET: create it now
            if not existing["metadata"].get("deletionTimestamp"):
                return self.api.patch(f"{path}/{name}", obj, content_type=MERGE_PATCH)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{obj['kind']}/{name} was still being deleted after {timeout_s} s")
            time.sleep(POLL_S)  # the old one is still being deleted

    # -- the Backend interface --

    def deploy(self, stage, env=None, init_process=False, timeout=180):
        started = time.monotonic()
        # The stage's kustomization says cloudnative-echo: everything follows our namespace instead.
        self.spec = dataclasses.replace(load_stage(stage), namespace=self.namespace)
        self._stop_watching()
        self._changed_generation, self._changed_replicas = 0, self.spec.replicas
        self._delete_deployment(timeout)  # every run starts from a fresh Deployment
        for obj in (into_namespace(obj, self.namespace) for obj in render(stage_dir(stage) / "k8s")):
            if obj["kind"] == "Deployment":
                pod = obj["spec"]["template"]["spec"]
                if env:
                    container = pod["containers"][0]
                    container["env"] = container.get("env", []) + [{"name": k, "value": str(v)} for k, v in env.items()]
                if init_process:
                    # The pause container becomes PID 1; Python gets SIGTERM's default action.
                    pod["shareProcessNamespace"] = True
            self.apply(obj)
        try:
            self._watch()
            self.wait_rollout(timeout)
            self.wait_endpoints(self.spec.replicas, timeout)
        except BaseException:
            self._stop_watching()  # no watch thread outlives a failed deploy
            raise
        return time.monotonic() - started

    def rollout_restart(self, env=None):
        template = {"metadata": {"annotations": {
            RESTARTED_AT: datetime.datetime.now(datetime.timezone.utc).isoformat()}}}
        if env:
            # strategic merge: containers merge by name, env entries by name
            template["spec"] = {"containers": [{"name": self.spec.container, "env": [
                {"name": k, "value": str(v)} for k, v in env.items()]}]}
        changed = self.api.patch(self._deployment_path(), {"spec": {"template": template}},
                                 content_type=STRATEGIC_PATCH)
        self._changed_generation = changed["metadata"].get("generation", 0)

    def scale(self, replicas):
        self.api.patch(f"{self._deployment_path()}/scale", {"spec": {"replicas": replicas}},
                       content_type=MERGE_PATCH)
        self._changed_replicas = replicas

    def delete_pod(self, name):
        self.api.delete(f"{pods_path(self.spec.namespace)}/{name}")

    def rollout_complete(self):
        deployment = self._deployments.snapshot().get(self.spec.name)
        if deployment is None or not deployment.get("status"):  # the controller has not looked yet
            return False
        status, wanted = deployment["status"], deployment["spec"]["replicas"]
        if (deployment["metadata"].get("generation", 0) < self._changed_generation
                or wanted != self._changed_replicas):
            return False  # the watch has not shown our own last change yet: this is the old rollout
        return (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
                and status.get("updatedReplicas", 0) == wanted and status.get("availableReplicas", 0) == wanted
                and status.get("replicas", 0) == wanted)

    def pods(self):
        port = self.spec.echo_port
        return [PodStatus(
            name=pod["metadata"]["name"],
            address=f"tcp://{pod.get('status', {}).get('podIP')}:{port}",
            ready=any(c["type"] == "Ready" and c["status"] == "True"
                      for c in pod.get("status", {}).get("conditions") or []),
            terminating=pod["metadata"].get("deletionTimestamp") is not None,
            restarts=sum(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses") or []),
        ) for pod in self._pods.snapshot().values()]

    def terminations(self):
        return list(self._terminations.values())

    def pod_history(self):
        return list(self._histories.values())

    def logs(self, pod_name, previous=False):
        try:
            return read_log(self.api, pod_name, self.spec.namespace, previous=previous)
        except ApiException as error:
            if error.status in (400, 404):  # "previous terminated container ... not found"
                raise LookupError(f"{pod_name}: {error.reason}") from None
            raise

    def start_load(self, spec):
        service_address = f"tcp://{self.spec.service}:{self.spec.service_port}"
        load = JobLoad(self.api, self.spec.namespace, self.spec.service, spec, service_address,
                       name=f"echo-loadgen-{secrets.token_hex(3)}")
        self._jobs.append(load.job)
        return load

    def close(self):
        owned, self._owns_namespace = self._owns_namespace, False
        if owned:
            self._delete_own_namespace()  # first: the one thing that must be done, however closing ends
        self._stop_watching()
        jobs, self._jobs = self._jobs, []
        for job in [] if owned else jobs:  # in a namespace of our own they go with it
            try:
                job.delete()
            except Exception as error:  # closing goes on: the rest still get deleted
                print(f"kube backend: could not delete Job {job.name}: {error}", file=sys.stderr)

    def _delete_own_namespace(self):
        """Delete our namespace without waiting for it to go; then its pods at
        once. It is Terminating by then, so nothing can replace them."""
        try:
            self.api.delete(f"{NAMESPACES}/{self.namespace}", propagationPolicy="Background")
            for pod in self.api.get(pods_path(self.namespace))["items"]:
                self._delete_now(pod["metadata"]["name"])
        except ApiException as error:
            if error.status not in (404, 409):  # gone, or already being deleted
                print(f"kube backend: could not delete namespace {self.namespace}: {error.status} "
                      f"{error.reason}; `kubectl delete namespace {self.namespace}`", file=sys.stderr)
        except Exception as error:  # closing goes on
            print(f"kube backend: could not delete namespace {self.namespace}: {error}", file=sys.stderr)

    # -- watching: the caches pods() and rollout_complete() read --

    def _watch(self):
        namespace = self.spec.namespace
        # This deploy's own record: a late event of an earlier deploy's watch cannot reach it.
        terminations, histories = self._terminations, self._histories = {}, {}

        def pod_changed(kind, pod):
            self._note_termination(terminations, kind, pod)
            note_history(histories, pod, self.spec.echo_port)
        self._pods = self._started(ListWatcher(
            self.api, pods_path(namespace), labels=self.spec.labels, on_change=pod_changed))
        self._deployments = self._started(ListWatcher(
            self.api, self._deployment_path().rsplit("/", 1)[0], field_selector=f"metadata.name={self.spec.name}"))
        slices = self._started(EndpointSliceWatcher(self.api, namespace, self.spec.service))
        self.feed = slices.feed

    def _started(self, watcher):
        """Start a watcher, kept so that _stop_watching() reaches it even if a later one fails to start."""
        self._watchers.append(watcher)
        return watcher.start()

    def _stop_watching(self):
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.stop()

    def _note_termination(self, terminations, kind, pod):
        """When each pod was seen being deleted, when it was gone, and how its
        container ended (137: SIGKILLed at the end of the grace period). A pod
        whose deletion was not seen (gone between two watches) has no deletion time."""
        name = pod["metadata"]["name"]
        if kind != "DELETED" and not pod["metadata"].get("deletionTimestamp"):
            return
        now = time.monotonic()
        seen_deleting = pod["metadata"].get("deletionTimestamp") or name in terminations
        record = terminations.setdefault(name, PodTermination(name, deleted_at=now if seen_deleting else None))
        exit_code = container_exit_code(pod)
        if exit_code is not None:
            record.exit_code = exit_code
        if kind == "DELETED":
            record.gone_at = now

    def _deployment_path(self):
        return f"/apis/apps/v1/namespaces/{self.spec.namespace}/deployments/{self.spec.name}"

    def _delete_deployment(self, timeout):
        """Delete the previous run's Deployment in the foreground, its pods
        without a grace period (teardown is not measured), and wait until the
        Deployment itself is gone (404), its pods with it."""
        try:
            self.api.delete(self._deployment_path(), propagationPolicy="Foreground")
        except ApiException as error:
            if error.status != 404:
                raise
        deadline = time.monotonic() + timeout
        ended = set()
        while True:
            left = self._pods_left()
            for pod in set(left) - ended:
                self._delete_now(pod)
                ended.add(pod)
            if not left and self.api.get_or_none(self._deployment_path()) is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the previous Deployment {self.spec.name} was not gone after {timeout} s")
            time.sleep(POLL_S)

    def _delete_now(self, pod):
        try:
            self.api.delete(f"{pods_path(self.namespace)}/{pod}", gracePeriodSeconds=0)
        except ApiException as error:
            if error.status != 404:  # gone meanwhile
                raise

    def _pods_left(self):
        """The names of this stage's pods that still exist."""
        listing = self.api.get(pods_path(self.spec.namespace), labelSelector=label_selector(self.spec.labels))
        return [p["metadata"]["name"] for p in listing["items"]
                if has_labels(p["metadata"].get("labels"), self.spec.labels)]  # checked here too


def note_history(histories, pod, port):
    """A pod's life as the watch shows it, on this process's clock (when each
    change was seen: the API's own startedAt and finishedAt are whole seconds,
    too coarse beside a one-second request time-out): created, deleted, and
    each run of its container. The open run ends when the container is
    terminated, or waits to restart, or runs with a higher restartCount than
    it started with (a restart between two events); its reason is the API's
    (Completed, Error, OOMKilled)."""
    now, name = time.monotonic(), pod["metadata"]["name"]
    status = pod.get("status") or {}
    history = histories.setdefault(name, PodHistory(name, "", created_at=now))
    if status.get("podIP"):
        history.address = f"tcp://{status['podIP']}:{port}"
    if pod["metadata"].get("deletionTimestamp") and history.deleted_at is None:
        history.deleted_at = now
    container = next(iter(status.get("containerStatuses") or []), None)
    if container is None:
        return
    state, restarts = container.get("state") or {}, container.get("restartCount", 0)
    previous = (container.get("lastState") or {}).get("terminated")
    open_run = history.runs[-1] if history.runs and history.runs[-1].ended_at is None else None
    if open_run is not None:
        restarted = "running" in state and restarts > open_run.restart_count
        ended = state.get("terminated") or (previous if restarted or "waiting" in state else None)
        if ended is not None:
            open_run.ended_at, open_run.reason = now, ended.get("reason")
    if "running" in state and (not history.runs or history.runs[-1].ended_at is not None):
        history.runs.append(ContainerRun(started_at=now, restart_count=restarts))


def container_exit_code(pod):
    """The exit code of the pod's (first) container once it has terminated."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode")
    return None
