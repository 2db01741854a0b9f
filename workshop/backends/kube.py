"""The Kubernetes backend: a stage's Deployment on a real cluster.

It uses the `kubernetes` client with a kubeconfig context (minikube, for
workshop attendees): applies the stage's kustomization, waits for the
rollout, restarts it the way `kubectl rollout restart` does (a pod-template
annotation), scales, deletes pods, reads logs.

What a real cluster does that it respects:
- the host cannot reach pod IPs (minikube's docker and VM drivers): it talks
  only to the API server; the load, the readiness check and the faults run
  inside the cluster as a Job (`cluster_job`);
- a Deployment deleted in the foreground stays (deletionTimestamp and the
  `foregroundDeletion` finalizer) until its dependents are gone, and POSTing
  it again meanwhile answers 409: it waits for the old one to be gone;
- the scenario loop must not load the API server: pods and the Deployment are
  followed by watches (`ListWatcher`), and read from those caches.

Images are not built here: the kube backend refuses a context that is not a
minikube profile unless told which context to use or not to build (images
are built once per demo, see `minikube.py`).
"""

import datetime
import secrets
import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..manifests import load_stage, render
from ..stages import stage_dir
from .base import Backend, ContainerRun, PodHistory, PodStatus, PodTermination
from .cluster_job import JobLoad, read_log
from .endpointslices import EndpointSliceWatcher
from .list_watch import ListWatcher, has_labels, label_selector
from .minikube import choose_context, kubeconfig_file

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

    def __init__(self, api_client=None, context=None, build_images=True):
        if api_client is None:
            self.context = choose_context(context, build_images)
            print(f"kube backend: kubeconfig context {self.context!r}", file=sys.stderr)
            config.load_kube_config(config_file=kubeconfig_file(), context=self.context)
            api_client = client.ApiClient()
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.spec = None
        self.feed = None
        self._watchers = []
        self._terminations = {}   # pod name -> PodTermination
        self._histories = {}      # pod name -> PodHistory

    # -- applying manifests --

    def apply(self, obj, timeout_s=120):
        """Create the object, or merge-patch it if it exists: `kubectl apply`
        for the simple, complete manifests of this workshop. An object that
        is being deleted is never patched: wait until it is gone, then create."""
        path, name = api_path(obj)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._call("POST", path, obj)
            except ApiException as error:
                if error.status != 409:
                    raise
            existing = self._get(f"{path}/{name}")
            if existing is None:
                continue  # gone between our POST and GET: create it now
            if not existing["metadata"].get("deletionTimestamp"):
                return self._call("PATCH", f"{path}/{name}", obj, content_type="application/merge-patch+json")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{obj['kind']}/{name} was still being deleted after {timeout_s} s")
            time.sleep(POLL_S)  # the old one is still being deleted

    def _get(self, path):
        try:
            return self._call("GET", path, None)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _call(self, method, path, body, content_type="application/json"):
        return self.api_client.call_api(
            path, method, body=body, header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"], response_type="object", _return_http_data_only=True)

    # -- the Backend interface --

    def deploy(self, stage, env=None, init_process=False, timeout=180):
        started = time.monotonic()
        self.spec = load_stage(stage)
        self._stop_watching()
        self._changed_generation, self._changed_replicas = 0, self.spec.replicas
        self._delete_deployment(timeout)  # every run starts from a fresh Deployment
        for obj in render(stage_dir(stage) / "k8s"):
            if obj["kind"] == "Deployment":
                pod = obj["spec"]["template"]["spec"]
                if env:
                    container = pod["containers"][0]
                    container["env"] = container.get("env", []) + [{"name": k, "value": str(v)} for k, v in env.items()]
                if init_process:
                    # The pause container becomes PID 1; Python gets SIGTERM's default action.
                    pod["shareProcessNamespace"] = True
            self.apply(obj)
        self._watch()
        self.wait_rollout(timeout)
        self.wait_endpoints(self.spec.replicas, timeout)
        return time.monotonic() - started

    def rollout_restart(self, env=None):
        template = {"metadata": {"annotations": {
            RESTARTED_AT: datetime.datetime.now(datetime.timezone.utc).isoformat()}}}
        if env:
            # strategic merge: containers merge by name, env entries by name
            template["spec"] = {"containers": [{"name": self.spec.container, "env": [
                {"name": k, "value": str(v)} for k, v in env.items()]}]}
        changed = self.apps.patch_namespaced_deployment(self.spec.name, self.spec.namespace,
                                                        {"spec": {"template": template}})
        self._changed_generation = changed.metadata.generation or 0

    def scale(self, replicas):
        self.apps.patch_namespaced_deployment_scale(self.spec.name, self.spec.namespace,
                                                    {"spec": {"replicas": replicas}})
        self._changed_replicas = replicas

    def delete_pod(self, name):
        self.core.delete_namespaced_pod(name, self.spec.namespace)

    def rollout_complete(self):
        deployment = self._deployments.snapshot().get(self.spec.name)
        if deployment is None or "status" not in deployment:  # the controller has not looked yet
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
            return read_log(self.core, pod_name, self.spec.namespace, previous=previous)
        except ApiException as error:
            if error.status in (400, 404):  # "previous terminated container ... not found"
                raise LookupError(f"{pod_name}: {error.reason}") from None
            raise

    def start_load(self, spec):
        service_address = f"tcp://{self.spec.service}:{self.spec.service_port}"
        return JobLoad(self.api_client, self.spec.namespace, self.spec.service, spec, service_address,
                       name=f"echo-loadgen-{secrets.token_hex(3)}")

    def close(self):
        self._stop_watching()

    # -- watching: the caches pods() and rollout_complete() read --

    def _watch(self):
        namespace = self.spec.namespace
        # This deploy's own record: a late event of an earlier deploy's watch cannot reach it.
        terminations, histories = self._terminations, self._histories = {}, {}

        def pod_changed(kind, pod):
            self._note_termination(terminations, kind, pod)
            note_history(histories, pod, self.spec.echo_port)
        self._pods = ListWatcher(self.api_client, self.core.list_namespaced_pod, namespace,
                                 on_change=pod_changed, labels=self.spec.labels).start()
        self._deployments = ListWatcher(self.api_client, self.apps.list_namespaced_deployment, namespace,
                                        field_selector=f"metadata.name={self.spec.name}").start()
        slices = EndpointSliceWatcher(self.api_client, namespace, self.spec.service).start()
        self.feed = slices.feed
        self._watchers = [self._pods, self._deployments, slices]

    def _stop_watching(self):
        for watcher in self._watchers:
            watcher.stop()
        self._watchers = []

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

    def _delete_deployment(self, timeout):
        """Delete the previous run's Deployment in the foreground and wait until
        the Deployment itself is gone (404), its pods with it."""
        try:
            self.apps.delete_namespaced_deployment(self.spec.name, self.spec.namespace,
                                                   propagation_policy="Foreground")
        except ApiException as error:
            if error.status != 404:
                raise
        deadline = time.monotonic() + timeout
        while self._deployment_exists() or self._pods_left():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the previous Deployment {self.spec.name} was not gone after {timeout} s")
            time.sleep(POLL_S)

    def _deployment_exists(self):
        try:
            self.apps.read_namespaced_deployment(self.spec.name, self.spec.namespace)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def _pods_left(self):
        pods = self.core.list_namespaced_pod(self.spec.namespace, label_selector=label_selector(self.spec.labels))
        return [p for p in pods.items if has_labels(p.metadata.labels, self.spec.labels)]  # checked here too


def note_history(histories, pod, port):
    """A pod's life as the watch shows it, on this process's clock (when each
    change was seen): created, deleted, and each run of its container. The
    open run ends when the container is terminated, or waits to restart, or
    runs again with a higher restartCount (a restart between two events); its
    reason is the API's (Completed, Error, OOMKilled)."""
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
    state = container.get("state") or {}
    previous = (container.get("lastState") or {}).get("terminated")
    open_run = history.runs[-1] if history.runs and history.runs[-1].ended_at is None else None
    if open_run is not None:
        restarted = "running" in state and len(history.runs) <= container.get("restartCount", 0)
        ended = state.get("terminated") or (previous if restarted or "waiting" in state else None)
        if ended is not None:
            open_run.ended_at, open_run.reason = now, ended.get("reason")
    if "running" in state and (not history.runs or history.runs[-1].ended_at is not None):
        history.runs.append(ContainerRun(started_at=now))


def container_exit_code(pod):
    """The exit code of the pod's (first) container once it has terminated."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode")
    return None
