"""The Kubernetes backend: a stage's Deployment on a real cluster.

It uses the `kubernetes` client with the current kubeconfig context
(minikube, for workshop attendees): applies the stage's kustomization (create,
or merge-patch what exists), waits for the rollout, restarts it the way
`kubectl rollout restart` does (a pod-template annotation), scales, deletes
pods, reads logs, and follows the Service's EndpointSlices into its feed.

Images are built into minikube with `minikube image build` when minikube is
installed; otherwise it prints the chapter's command for you to run.
"""

import datetime
import secrets
import shutil
import subprocess
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..manifests import load_stage, render
from ..stages import ROOT, stage_dir
from .base import Backend, PodStatus
from .cluster_job import LOADGEN_IMAGE, JobLoad
from .endpointslices import EndpointSliceWatcher

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets


def build_command(stage, image):
    """What the chapters tell users to run; the load generator builds from the repository root."""
    if stage is None:
        return ["minikube", "image", "build", "-t", image, "-f", "loadgen-image/Dockerfile", str(ROOT)]
    return ["minikube", "image", "build", "-t", image, str(stage_dir(stage))]


def build_image(stage, image, run=subprocess.run):
    """Build an image inside minikube (stage None: the load generator), or say how to."""
    command = build_command(stage, image)
    if shutil.which("minikube") is None:
        print(f"minikube not found: build {image} into your cluster yourself, e.g.\n  {' '.join(command)}")
        return False
    run(command, check=True)
    return True


class KubeBackend(Backend):
    name = "kube"

    def __init__(self, api_client=None, build_images=True):
        if api_client is None:
            config.load_kube_config()
            api_client = client.ApiClient()
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.build_images = build_images
        self._built = set()
        self.spec = None
        self.watcher = None
        self.feed = None

    # -- applying manifests --

    def apply(self, obj):
        """Create the object, or merge-patch it if it exists: `kubectl apply`
        for the simple, complete manifests of this workshop."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        namespace, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
        group, _, version = api_version.rpartition("/")
        plural = kind.lower() + "s"
        path = (f"/apis/{group}/{version}" if group else f"/api/{version}") + (
            f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
        try:
            return self._call("POST", path, obj)
        except ApiException as error:
            if error.status != 409:
                raise
        return self._call("PATCH", f"{path}/{name}", obj, content_type="application/merge-patch+json")

    def _call(self, method, path, body, content_type="application/json"):
        return self.api_client.call_api(
            path, method, body=body, header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"], response_type="object", _return_http_data_only=True)

    def deploy(self, stage, env=None, timeout=180):
        started = time.monotonic()
        self.spec = load_stage(stage)
        for image_stage, image in ((stage, self.spec.image), (None, LOADGEN_IMAGE)):
            if self.build_images and image not in self._built:
                build_image(image_stage, image)
                self._built.add(image)
        self._delete_deployment(timeout)  # every run starts from a fresh Deployment
        for obj in render(stage_dir(stage) / "k8s"):
            if obj["kind"] == "Deployment" and env:
                container = obj["spec"]["template"]["spec"]["containers"][0]
                container["env"] = container.get("env", []) + [{"name": k, "value": str(v)} for k, v in env.items()]
            self.apply(obj)
        if self.watcher is None:
            self.watcher = EndpointSliceWatcher(self.api_client, self.spec.namespace, self.spec.service).start()
            self.feed = self.watcher.feed
        self.wait_rollout(timeout)
        self.wait_endpoints(self.spec.replicas, timeout)
        return time.monotonic() - started

    def _delete_deployment(self, timeout):
        try:
            self.apps.delete_namespaced_deployment(self.spec.name, self.spec.namespace,
                                                   propagation_policy="Foreground")
        except ApiException as error:
            if error.status == 404:
                return
            raise
        deadline = time.monotonic() + timeout
        while self._pod_items():
            if time.monotonic() > deadline:
                raise TimeoutError("the previous run's pods did not go away")
            time.sleep(0.5)  # a bounded poll of the cluster

    # -- the Backend interface --

    def rollout_restart(self, env=None):
        template = {"metadata": {"annotations": {
            RESTARTED_AT: datetime.datetime.now(datetime.timezone.utc).isoformat()}}}
        if env:
            # strategic merge: containers merge by name, env entries by name
            template["spec"] = {"containers": [{"name": self._container_name(), "env": [
                {"name": k, "value": str(v)} for k, v in env.items()]}]}
        self.apps.patch_namespaced_deployment(self.spec.name, self.spec.namespace, {"spec": {"template": template}})

    def scale(self, replicas):
        self.apps.patch_namespaced_deployment_scale(self.spec.name, self.spec.namespace,
                                                    {"spec": {"replicas": replicas}})

    def start_load(self, spec):
        service_address = f"tcp://{self.spec.service}:{self.spec.service_port}"
        return JobLoad(self.api_client, self.spec.namespace, self.spec.service, spec, service_address,
                       name=f"echo-loadgen-{secrets.token_hex(3)}")

    def delete_pod(self, name):
        self.core.delete_namespaced_pod(name, self.spec.namespace)

    def rollout_complete(self):
        deployment = self.apps.read_namespaced_deployment(self.spec.name, self.spec.namespace)
        status, wanted = deployment.status, deployment.spec.replicas
        if status is None:  # just created: the controller has not looked yet
            return False
        return ((status.observed_generation or 0) >= (deployment.metadata.generation or 0)
                and (status.updated_replicas or 0) == wanted and (status.available_replicas or 0) == wanted
                and (status.replicas or 0) == wanted)

    def pods(self):
        port = self.spec.echo_port
        return [PodStatus(
            name=pod.metadata.name,
            address=f"tcp://{pod.status.pod_ip}:{port}",
            ready=any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []),
            terminating=pod.metadata.deletion_timestamp is not None,
            restarts=sum(c.restart_count for c in pod.status.container_statuses or []),
        ) for pod in self._pod_items()]

    def logs(self, pod_name, previous=False):
        try:
            return self.core.read_namespaced_pod_log(pod_name, self.spec.namespace, previous=previous)
        except ApiException as error:
            if error.status in (400, 404):  # "previous terminated container ... not found"
                raise LookupError(f"{pod_name}: {error.reason}") from None
            raise

    def close(self):
        if self.watcher is not None:
            self.watcher.stop()

    # -- helpers --

    def _selector(self):
        return ",".join(f"{k}={v}" for k, v in self.spec.labels.items())

    def _pod_items(self):
        return self.core.list_namespaced_pod(self.spec.namespace, label_selector=self._selector()).items

    def _container_name(self):
        deployment = self.apps.read_namespaced_deployment(self.spec.name, self.spec.namespace)
        return deployment.spec.template.spec.containers[0].name
